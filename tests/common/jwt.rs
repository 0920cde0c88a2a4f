//! Keys and tokens made independently of the relay: PyJWT and
//! cryptography, through `tests/support/mint.py`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `mint.py` with `args`; its output.
pub fn mint(args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/mint.py");
    let out = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "mint {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A directory of key pairs and JWK sets (see `mint.py keys`).
pub fn keys() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().to_path_buf();
    mint(&["keys", p.to_str().unwrap()]);
    (dir, p)
}

/// A token signed with `alg` by the private key `file` of the keys
/// directory `dir`, naming `kid`.
pub fn signed(dir: &Path, file: &str, alg: &str, claims: &str, kid: &str) -> String {
    let key = dir.join(file);
    mint(&["sign", alg, key.to_str().unwrap(), claims, kid])
}
