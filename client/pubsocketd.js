// pubsocketd.js: a browser client for pubsocketd's `pubsocketd.v1` subprotocol.
// Dependency-free ES module, no build step: `import { PubSocket } from "./pubsocketd.js"`.
//
// What it adds over a bare WebSocket: reconnects with backoff, and on each
// reconnect asks the relay to replay what was missed (`since`), drops what it
// already delivered, and keeps a token fresh. See README.md, "client/index.html".

const V1 = "pubsocketd.v1";
const TOKEN_OFFER = "pubsocketd.token.";
/** Per channel, how many delivered ids are remembered to drop duplicates. */
const REMEMBERED_IDS = 1000;
/** setTimeout's longest delay; a longer one would fire at once. */
const MAX_TIMEOUT = 2 ** 31 - 1;

/**
 * One logical subscription that outlives its WebSocket connections.
 *
 * Channels come from two places, and each resumes its own way:
 * - the URL's `?channel=` (selected by the relay at the upgrade): on reconnect
 *   the URL gets `since=<channel>:<id>` parameters (older `since` ones replaced);
 * - `channels` / `subscribe()` (sent as `{"subscribe":[…]}` once open): on
 *   reconnect they are sent again with `"since":{"<channel>":"<id>"}`.
 * Channels read through the URL without being named there (no `?channel=`
 * at all, or a pattern) resume through the URL too; channels read through a
 * pattern subscribed by message resume in that subscribe's `since` (see
 * #resumeBy).
 *
 * Options (all optional):
 *   channels: ["news"]            subscribed by message after each open
 *   since: {news: "<id>"|"last"}  starting points for the first connect
 *                                  ("last": the relay sends the latest message first)
 *   token: "<JWT>"                offered as `pubsocketd.token.<JWT>`
 *   getToken: async () => "<JWT>" called on each reconnect, after a 4401 close,
 *                                  and before the token's `exp` to refresh it in place
 *   baseDelay: 500, maxDelay: 30000  backoff in ms
 *   onMessage(channel, data, id, raw)  data: the payload (JSON value, string, or
 *                                      Uint8Array for `data_base64`); id: string or undefined
 *   onRecovered(channel, recovered, raw)  after a replay: true = nothing was missed;
 *                                         false = the relay no longer had it: refetch state
 *   onAnswer(answer, raw)   {"subscribed"}, {"unsubscribed"}, {"error"}, {"refreshed"}
 *   onState(state, info)    "connecting" | "open" | "error" | "closed" {code, reason}
 *                           | "reconnecting" {delay} | "stopped" {code, reason}
 *   onError(error)          a local failure (getToken threw, a frame was not JSON)
 */
export class PubSocket {
  /** Duplicates dropped (an id already delivered on its channel); 0 when the relay is exact. */
  duplicates = 0;

  #url;
  #urlChannels;
  #bareSince; // `?since=<id>` naming no channel: kept until a connection opened
  #options;
  #subscribed = new Set(); // names subscribed by message (channels or patterns)
  #dropped = new Set(); // URL channels unsubscribed by message
  #from = new Map(); // channel -> id to resume after (last delivered, or a starting point)
  #seen = new Map(); // channel -> Set of recent ids delivered
  #token;
  #socket = null;
  #opened = false;
  #stopped = false;
  #attempt = 0;
  #holdUntil = 0;
  #retryTimer;
  #refreshTimer;

  constructor(url, options = {}) {
    this.#options = { baseDelay: 500, maxDelay: 30000, ...options };
    this.#url = new URL(url, globalThis.location?.href);
    this.#urlChannels = this.#url.searchParams.getAll("channel");
    this.#bareSince = [];
    for (const value of this.#url.searchParams.getAll("since")) {
      // As the relay reads it: split at the last ':'.
      const at = value.lastIndexOf(":");
      if (at > 0) this.#from.set(value.slice(0, at), value.slice(at + 1));
      else if (this.#urlChannels.length === 1) this.#from.set(this.#urlChannels[0], value);
      else this.#bareSince.push(value);
    }
    for (const [channel, id] of Object.entries(options.since || {})) this.#from.set(channel, id);
    for (const channel of options.channels || []) this.#subscribed.add(channel);
    this.#token = options.token;
    this.#connect();
  }

  /** Reads more channels; `since` optionally maps some of them to an id or "last". */
  subscribe(channels, since = {}) {
    for (const channel of channels) {
      this.#subscribed.add(channel);
      this.#dropped.delete(channel);
    }
    for (const [channel, id] of Object.entries(since)) this.#from.set(channel, id);
    const request = { subscribe: channels };
    const covered = (c) => channels.includes(c) || channels.some((p) => isPattern(p) && globMatch(p, c));
    const points = [...this.#from.keys()].filter(covered);
    if (points.length) request.since = Object.fromEntries(points.map((c) => [c, this.#from.get(c)]));
    this.#send(request);
  }

  /** Stops reading channels, also ones the URL named (they are unsubscribed again after a reconnect). */
  unsubscribe(channels) {
    for (const channel of channels) {
      this.#subscribed.delete(channel);
      if (this.#urlChannels.includes(channel)) this.#dropped.add(channel);
      for (const known of [...this.#from.keys()]) {
        if (known === channel || (isPattern(channel) && globMatch(channel, known))) {
          this.#from.delete(known);
          this.#seen.delete(known);
        }
      }
    }
    this.#send({ unsubscribe: channels });
  }

  /**
   * Drops the connection as a network failure would: no close handshake is
   * awaited and the usual backoff and resume follow, no sooner than `holdMs`
   * (so that a test or the demo can publish while it is down). The relay sees
   * the client close.
   */
  drop(holdMs = 0) {
    const socket = this.#socket;
    if (!socket) return;
    this.#holdUntil = Date.now() + holdMs;
    this.#forget(socket);
    socket.close();
    this.#closed(1006, "dropped by the client");
  }

  /** Closes for good: no reconnect, no refresh. */
  close() {
    this.#stopped = true;
    clearTimeout(this.#retryTimer);
    clearTimeout(this.#refreshTimer);
    const socket = this.#socket;
    this.#socket = null;
    if (socket) {
      this.#forget(socket);
      socket.close(1000);
    }
    this.#emit("onState", "stopped", { code: 1000, reason: "closed by the client" });
  }

  async #connect() {
    if (this.#stopped) return;
    this.#emit("onState", "connecting", {});
    // A reconnect may come long after the token was minted: ask for a fresh one.
    if (this.#options.getToken && (this.#opened || !this.#token)) {
      try {
        this.#token = await this.#options.getToken();
      } catch (error) {
        this.#emit("onError", error);
        this.#retry({});
        return;
      }
      if (this.#stopped) return;
    }
    const offers = this.#token ? [V1, TOKEN_OFFER + this.#token] : [V1];
    let socket;
    try {
      socket = new WebSocket(this.#connectUrl(), offers);
    } catch (error) { // a malformed URL: retrying cannot help
      this.#stopped = true;
      this.#emit("onError", error);
      this.#emit("onState", "stopped", { code: 0, reason: error.message });
      return;
    }
    this.#socket = socket;
    socket.onopen = () => {
      this.#attempt = 0;
      this.#opened = true;
      this.#emit("onState", "open", {});
      this.#resubscribe();
      this.#scheduleRefresh();
    };
    socket.onmessage = (event) => this.#receive(event.data);
    socket.onerror = () => this.#emit("onState", "error", {}); // a close event follows
    socket.onclose = (event) => {
      this.#forget(socket);
      this.#closed(event.code, event.reason);
    };
  }

  /** The URL with `since` parameters for the channels the URL selects. */
  #connectUrl() {
    const url = new URL(this.#url);
    url.searchParams.delete("since");
    if (!this.#opened) for (const id of this.#bareSince) url.searchParams.append("since", id);
    for (const [channel, id] of this.#from) {
      if (this.#resumeBy(channel) === "url") url.searchParams.append("since", `${channel}:${id}`);
    }
    return url.href;
  }

  /** After each open: undo unsubscribed URL channels, then subscribe again from where each channel stopped. */
  #resubscribe() {
    if (this.#dropped.size) this.#send({ unsubscribe: [...this.#dropped] });
    if (!this.#subscribed.size) return;
    const request = { subscribe: [...this.#subscribed] };
    const since = [...this.#from].filter(([channel]) => this.#resumeBy(channel) === "subscribe");
    if (since.length) request.since = Object.fromEntries(since);
    this.#send(request);
  }

  /**
   * Where a channel's `since` goes: "url" for a channel the URL names, or
   * reads through a pattern or by naming none (the relay takes the URL's
   * `since` only for a channel the URL reads, else 400); "subscribe" for a
   * channel subscribed by name or through a pattern subscribed by message
   * (the relay takes a `since` for a channel the same `subscribe` covers).
   */
  #resumeBy(channel) {
    if (this.#urlChannels.includes(channel) && !this.#dropped.has(channel)) return "url";
    if (this.#subscribed.has(channel)) return "subscribe";
    for (const name of this.#subscribed) if (isPattern(name) && globMatch(name, channel)) return "subscribe";
    return "url";
  }

  #receive(raw) {
    if (typeof raw !== "string") return; // v1 sends text frames only
    let m;
    try {
      m = JSON.parse(raw);
    } catch (error) {
      this.#emit("onError", error);
      return;
    }
    if (!m || typeof m !== "object") return;
    if (typeof m.channel === "string") {
      if ("recovered" in m) return this.#emit("onRecovered", m.channel, m.recovered === true, raw);
      if (this.#dropped.has(m.channel)) return; // before the relay's unsubscribed answer
      if (typeof m.id === "string") {
        if (this.#remember(m.channel, m.id)) {
          this.duplicates += 1;
          return;
        }
        this.#from.set(m.channel, m.id);
      }
      const data = "data_base64" in m ? base64Bytes(m.data_base64) : m.data;
      return this.#emit("onMessage", m.channel, data, m.id, raw);
    }
    // A refused subscribe changed nothing: do not ask again on each reconnect.
    if ("error" in m && Array.isArray(m.channels)) for (const c of m.channels) this.#subscribed.delete(c);
    if ("refreshed" in m) this.#scheduleRefresh();
    this.#emit("onAnswer", m, raw);
  }

  /** Notes an id as delivered; true if it already was (ids are opaque: no order is assumed). */
  #remember(channel, id) {
    let ids = this.#seen.get(channel);
    if (!ids) this.#seen.set(channel, (ids = new Set()));
    if (ids.has(id)) return true;
    ids.add(id);
    if (ids.size > REMEMBERED_IDS) ids.delete(ids.values().next().value);
    return false;
  }

  #closed(code, reason) {
    this.#socket = null;
    clearTimeout(this.#refreshTimer);
    if (this.#stopped) return;
    this.#emit("onState", "closed", { code, reason });
    // Retrying cannot help: the token no longer covers a channel (4403), an
    // expired token with no way to get another (4401), or every channel read
    // was removed from the relay's configuration (1008 with that reason; other
    // 1008s are a slow client, which may well do better next time).
    const expired = code === 4401;
    if (expired && this.#options.getToken) this.#token = undefined;
    if (code === 4403 || (expired && !this.#options.getToken) || (code === 1008 && /removed/.test(reason))) {
      this.#stopped = true;
      this.#emit("onState", "stopped", { code, reason });
      return;
    }
    this.#retry({ code, reason });
  }

  /** Exponential backoff with full jitter: a random delay up to base * 2^attempt, capped. */
  #retry(info) {
    const { baseDelay, maxDelay } = this.#options;
    const ceiling = Math.min(maxDelay, baseDelay * 2 ** Math.min(this.#attempt, 30));
    this.#attempt += 1;
    const delay = Math.max(Math.random() * ceiling, this.#holdUntil - Date.now());
    this.#emit("onState", "reconnecting", { ...info, delay });
    this.#retryTimer = setTimeout(() => this.#connect(), delay);
  }

  /**
   * Refreshes the token in place before its `exp`: a minute early, or halfway
   * for a short one (and so again halfway after a failure, at most once a second).
   */
  #scheduleRefresh() {
    clearTimeout(this.#refreshTimer);
    const exp = this.#options.getToken && this.#token && jwtExp(this.#token);
    if (!exp) return;
    const left = exp * 1000 - Date.now();
    if (left <= 1000) return; // a 4401 close will follow, then a reconnect with a new token
    const delay = Math.min(MAX_TIMEOUT, Math.max(1000, left - Math.min(60000, left / 2)));
    this.#refreshTimer = setTimeout(() => this.#refresh(), delay);
  }

  async #refresh() {
    const socket = this.#socket;
    let token;
    try {
      token = await this.#options.getToken();
    } catch (error) {
      this.#emit("onError", error);
      if (socket === this.#socket) this.#scheduleRefresh(); // again, halfway to exp
      return;
    }
    if (socket !== this.#socket || socket.readyState !== WebSocket.OPEN) return;
    this.#token = token;
    this.#send({ token }); // answered {"refreshed":exp}, which schedules the next one
  }

  #send(request) {
    if (this.#socket && this.#socket.readyState === WebSocket.OPEN) {
      this.#socket.send(JSON.stringify(request));
    }
  }

  #forget(socket) {
    socket.onopen = socket.onmessage = socket.onerror = socket.onclose = null;
  }

  #emit(name, ...args) {
    const callback = this.#options[name];
    if (callback) callback(...args);
  }
}

/** The `exp` claim of a JWT (seconds), or undefined; the signature is the relay's business. */
export function jwtExp(token) {
  try {
    const claims = JSON.parse(new TextDecoder().decode(base64Bytes(token.split(".")[1])));
    return typeof claims.exp === "number" ? claims.exp : undefined;
  } catch {
    return undefined;
  }
}

/** Bytes of base64 or base64url text, padded or not. */
function base64Bytes(text) {
  const b64 = text.replace(/-/g, "+").replace(/_/g, "/");
  return Uint8Array.from(atob(b64 + "===".slice((b64.length + 3) % 4)), (c) => c.charCodeAt(0));
}

function isPattern(name) {
  return /[*?[]/.test(name);
}

/** Redis' glob (`*`, `?`, `[…]`), enough to tell which channels a subscribed pattern reads. */
function globMatch(pattern, name) {
  const source = pattern.replace(/[.+^${}()|\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".");
  try {
    return new RegExp(`^${source}$`, "s").test(name);
  } catch {
    return false;
  }
}
