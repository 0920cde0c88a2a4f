"""Keys and tokens for tests/auth.rs, made with PyJWT and cryptography (an
implementation independent of the relay's jsonwebtoken).

    mint.py keys DIR                 writes rsa, ec256, ec384, ed25519 key pairs
                                     (NAME.key private, NAME.pub public, PEM) and
                                     jwks-1.json (rsa as kid k1) and jwks-2.json
                                     (k1 and ec256 as kid k2)
    mint.py sign ALG KEY CLAIMS [KID]
                                     a token; KEY is a private key file, or the
                                     secret itself for HS*; CLAIMS is JSON in
                                     which "exp"/"nbf" given as "+N" are now+N
    mint.py forge-hs PUBFILE CLAIMS  HS256 over the public key file's bytes
    mint.py none CLAIMS              an alg:none token
    mint.py splice GOOD OTHER_CLAIMS the signature of GOOD on other claims
"""
import base64, hashlib, hmac, json, os, sys, time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(text):
    c = json.loads(text)
    for k in ("exp", "nbf", "iat"):
        if isinstance(c.get(k), str) and c[k][:1] in "+-":
            c[k] = int(time.time()) + int(c[k])
    return c


def keys(d):
    made = {
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ec256": ec.generate_private_key(ec.SECP256R1()),
        "ec384": ec.generate_private_key(ec.SECP384R1()),
        "ed25519": ed25519.Ed25519PrivateKey.generate(),
    }
    for name, k in made.items():
        with open(os.path.join(d, name + ".key"), "wb") as f:
            f.write(k.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
        with open(os.path.join(d, name + ".pub"), "wb") as f:
            f.write(k.public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo))
    k1 = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(made["rsa"].public_key()))
    k1.update(kid="k1", use="sig")
    k2 = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(made["ec256"].public_key()))
    k2.update(kid="k2", use="sig", alg="ES256")
    with open(os.path.join(d, "jwks-1.json"), "w") as f:
        json.dump({"keys": [k1]}, f)
    with open(os.path.join(d, "jwks-2.json"), "w") as f:
        json.dump({"keys": [k1, k2]}, f)


def sign(alg, key, text, kid=None):
    if not alg.startswith("HS"):
        with open(key, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), None)
    headers = {"kid": kid} if kid else None
    return jwt.encode(claims(text), key, algorithm=alg, headers=headers)


def forge_hs(pubfile, text):
    with open(pubfile, "rb") as f:
        secret = f.read()
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims(text)).encode())
    sig = hmac.new(secret, (head + "." + body).encode(), hashlib.sha256).digest()
    return head + "." + body + "." + b64(sig)


def none(text):
    head = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return head + "." + b64(json.dumps(claims(text)).encode()) + "."


def splice(good, text):
    head, _, sig = good.split(".")
    return head + "." + b64(json.dumps(claims(text)).encode()) + "." + sig


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    out = {"keys": lambda: keys(*args), "sign": lambda: sign(*args),
           "forge-hs": lambda: forge_hs(*args), "none": lambda: none(*args),
           "splice": lambda: splice(*args)}[cmd]()
    if out is not None:
        print(out)
