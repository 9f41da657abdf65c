// ticker-client.js: a browser client of the ticker WebSocket protocol v1 (docs/protocol.md).
// An ES module with no dependencies (but book.js beside it); the API is documented in
// docs/javascript-client.md.
//
// It reconnects by the close code table of the protocol (jittered exponential backoff,
// longer after 4029, never after 1000/1008/1009), resubscribes on every connection, drops
// ticks it has already seen (by q) and reports gaps across a reconnection, and tells a new
// epoch (a server restart) apart from a reconnection to the same stream. It keeps a local
// book per book topic ("AAPL@book10"), checked on every frame (book.js).

import { BookError, bookTopic, isBookTopic, LocalBook } from "./book.js";

/** Close codes after which the client does not reconnect (the "no" rows of the table). */
export const NO_RECONNECT = Object.freeze([1000, 1008, 1009]);
/** Close code after which the backoff starts long: the client sent too many operations. */
export const RATE_LIMITED = 4029;
/** Modes of the protocol; the first is the server's default. */
export const MODES = Object.freeze(["conflate", "all"]);

const BACKOFF = Object.freeze({ initialMs: 500, rateLimitedMs: 5000, maxMs: 30000, jitter: 0.2 });
const MAX_HZ_LIMIT = 1000;
const SYMBOL_RE = /^\S{1,32}$/;
const LONG_URL = 4000; // above this many characters of symbols, subscribe after the welcome

/** Why the server refused a handshake at `url` (401 or 403), or null (another cause). */
async function refusal(url) {
  const http = new URL(url);
  http.protocol = http.protocol === "wss:" ? "https:" : "http:";
  try {
    const resp = await fetch(http, { cache: "no-store" });
    if (resp.status !== 401 && resp.status !== 403) return null;
    const body = await resp.json();
    return String(body.message ?? "refused");
  } catch {
    return null; // unreachable, or another origin without CORS: the usual backoff
  }
}

/**
 * Delay before reconnection attempt `attempt` (0 = the first) after close code `code`:
 * doubling from 0.5 s (5 s after 4029), capped at 30 s, randomised by +/- 20 %.
 * Returns null when the code says not to reconnect.
 */
export function backoffDelay(code, attempt, random = Math.random, backoff = BACKOFF) {
  if (NO_RECONNECT.includes(code)) return null;
  const base = code === RATE_LIMITED ? backoff.rateLimitedMs : backoff.initialMs;
  const delay = Math.min(backoff.maxMs, base * 2 ** attempt);
  return delay * (1 - backoff.jitter + 2 * backoff.jitter * random());
}

/** A symbol list checked as the server would: strings of 1 to 32 non-space characters. */
function checkSymbols(symbols) {
  const list = typeof symbols === "string" ? [symbols] : [...symbols];
  for (const s of list) {
    if (typeof s !== "string" || !SYMBOL_RE.test(s)) {
      throw new TypeError(`invalid symbol ${JSON.stringify(s)}: 1 to 32 characters, no spaces`);
    }
  }
  return list;
}

/** The ws(s):// URL of `url`, resolved against the page (so "/ws" works). */
function socketUrl(url) {
  const base = globalThis.location?.href ?? "http://localhost/";
  const resolved = new URL(url, base);
  if (resolved.protocol === "http:") resolved.protocol = "ws:";
  if (resolved.protocol === "https:") resolved.protocol = "wss:";
  return resolved;
}

/**
 * A connection to a ticker server that stays connected.
 *
 *   const client = new TickerClient("/ws", { symbols: ["AAPL"] });
 *   client.on("ticks", (ticks) => ...);
 *   client.connect();
 *
 * Status: "idle" (before connect), "connecting", "live" (welcome received),
 * "reconnecting" (waiting `retryInMs` before the next attempt), "closed" (no more attempts).
 */
export class TickerClient {
  #url;
  #mode;
  #maxHz;
  #history;
  #random;
  #backoff;
  #WebSocket;
  #wanted = new Set(); // what the user asked for: sent on every connection
  #lastQ = new Map(); // symbol -> last q delivered, within #epoch
  #handlers = new Map(); // event type -> Set of functions
  #pending = new Map(); // request id -> {resolve, reject, symbols}
  #nextId = 1;
  #ws = null;
  #status = "idle";
  #attempt = 0;
  #timer = null;
  #watchdog = null;
  #lastHeard = 0;
  #silenceMs = 60000;
  #retryAt = 0;
  #closeCode = null;
  #closeReason = "";
  #welcome = null;
  #epoch = null;
  #subscribed = [];
  #notLive = new Map(); // symbol -> {status, reason, since}, from the status frames
  #books = new Map(); // book topic -> LocalBook, or null until its (next) snapshot

  /**
   * @param {string} url  the server's WebSocket endpoint, e.g. "ws://127.0.0.1:8080/ws" or "/ws"
   * @param {object} [options]
   * @param {string[]} [options.symbols]  symbols to subscribe to on every connection
   * @param {"conflate"|"all"} [options.mode]  flow-control mode (server default: conflate)
   * @param {number} [options.maxHz]  at most this many tick frames per second (0 < maxHz <= 1000)
   * @param {string} [options.token]  sent as ?token= (for servers with authentication)
   * @param {number} [options.history]  closed bars each candle topic ("AAPL@1m") starts
   *   with, on every subscribe of one: its "candles" event brings them, then the changes
   *   (book topics, "AAPL@book10", are subscribed apart: they keep no history)
   * @param {object} [options.backoff]  {initialMs, rateLimitedMs, maxMs, jitter}
   * @param {() => number} [options.random]  for the jitter (tests)
   * @param {typeof WebSocket} [options.WebSocket]  the WebSocket class to use
   */
  constructor(url, options = {}) {
    this.#url = socketUrl(url);
    const { mode = null, maxHz = null } = options;
    if (mode !== null && !MODES.includes(mode)) {
      throw new TypeError(`mode must be one of: ${MODES.join(", ")} (got ${JSON.stringify(mode)})`);
    }
    if (maxHz !== null && !(Number(maxHz) > 0 && Number(maxHz) <= MAX_HZ_LIMIT)) {
      throw new TypeError(`maxHz must be above 0 and at most ${MAX_HZ_LIMIT} (got ${maxHz})`);
    }
    this.#mode = mode;
    this.#maxHz = maxHz === null ? null : Number(maxHz);
    this.#history = Number(options.history ?? 0);
    this.token = options.token ?? null;
    this.#random = options.random ?? Math.random;
    this.#backoff = { ...BACKOFF, ...options.backoff };
    this.#WebSocket = options.WebSocket ?? globalThis.WebSocket;
    for (const s of checkSymbols(options.symbols ?? [])) this.#wanted.add(s);
  }

  /** "idle", "connecting", "live", "reconnecting" or "closed". */
  get status() {
    return this.#status;
  }
  /** The epoch of the stream (from the last welcome), or null before the first one. */
  get epoch() {
    return this.#epoch;
  }
  /** The last welcome frame: session, mode, heartbeat_s, limits... */
  get welcome() {
    return this.#welcome;
  }
  /** Symbols the client subscribes to on each connection, sorted. */
  get symbols() {
    return [...this.#wanted].sort();
  }
  /** Symbols the server confirmed (its last subscribed/unsubscribed reply), sorted. */
  get subscribed() {
    return this.#subscribed;
  }
  /** The local book of a book topic ("AAPL@book10"), or null before its snapshot. */
  book(topic) {
    return this.#books.get(topic) ?? null;
  }
  /**
   * A symbol's status as the server last said (docs/protocol.md, Symbol status):
   * {status: "live"} or {status: "stale" | "halted" | "closed", reason, since}.
   */
  symbolStatus(symbol) {
    return this.#notLive.get(symbol) ?? { status: "live" };
  }
  /** Milliseconds until the next connection attempt while reconnecting, else 0. */
  get retryInMs() {
    return this.#status === "reconnecting" ? Math.max(0, this.#retryAt - Date.now()) : 0;
  }
  /** Code and reason of the last close, e.g. {code: 1001, reason: "server shutting down"}. */
  get lastClose() {
    return { code: this.#closeCode, reason: this.#closeReason };
  }

  /**
   * Call `handler` on each event of `type`; returns a function that removes it.
   * Events: "status" ({status, code, reason, retryInMs}), "welcome" (frame),
   * "epoch" ({epoch, previous}), "snapshot" (ticks), "ticks" (ticks),
   * "subscribed" (symbols), "unsubscribed" (symbols), "gap" ({symbol, missed}),
   * "symbolstatus" ({symbol: {status, reason, since}}: the symbols whose status changed),
   * "book" ({topic, book, snapshot}: a book topic's LocalBook after each frame),
   * "error" (the server's error frame, or {code: "client", message} for a client-side
   * one, or {code: "book", topic, message} for a book frame that did not fit).
   */
  on(type, handler) {
    let set = this.#handlers.get(type);
    if (set === undefined) this.#handlers.set(type, (set = new Set()));
    set.add(handler);
    return () => set.delete(handler);
  }

  /** Open the connection (again, after close()); does nothing while one is open. */
  connect() {
    if (this.#ws !== null) return;
    clearTimeout(this.#timer);
    this.#timer = null;
    this.#open();
  }

  /** Close the connection now and open a new one (e.g. after changing `token`). */
  reconnect() {
    this.#drop(4000, "client reconnecting");
    this.connect();
  }

  /** Close for good: no reconnection until connect() is called again. */
  close(code = 1000, reason = "client closed") {
    clearTimeout(this.#timer);
    this.#timer = null;
    this.#drop(code, reason);
    this.#setStatus("closed", code, reason);
  }

  /** Subscribe to more symbols (now if connected, else on the next connection). */
  subscribe(symbols) {
    const list = checkSymbols(symbols).filter((s) => !this.#wanted.has(s));
    if (list.length === 0) return;
    for (const s of list) this.#wanted.add(s);
    if (this.#status === "live") this.#subscribeNow(list);
  }

  /** Subscribe ops for `symbols`: book topics in one of their own (a server without
   *  book topics refuses a whole op that names one, and the others must still be taken),
   *  history asked when a candle topic is in. */
  #subscribeNow(symbols) {
    const books = symbols.filter(isBookTopic);
    const rest = symbols.filter((s) => !isBookTopic(s));
    if (rest.length > 0) {
      const op = { op: "subscribe", symbols: rest };
      if (this.#history > 0 && rest.some((s) => s.includes("@"))) op.history = this.#history;
      this.#request(op, rest);
    }
    if (books.length > 0) this.#request({ op: "subscribe", symbols: books }, books);
  }

  /** Stop receiving these symbols. */
  unsubscribe(symbols) {
    const list = checkSymbols(symbols).filter((s) => this.#wanted.has(s));
    if (list.length === 0) return;
    for (const s of list) {
      this.#wanted.delete(s);
      this.#lastQ.delete(s);
      this.#books.delete(s);
    }
    if (this.#status === "live") this.#request({ op: "unsubscribe", symbols: list }, list);
  }

  /** Every symbol the server knows, sorted (a Promise; rejected when not connected). */
  list() {
    if (this.#status !== "live") return Promise.reject(new Error("not connected"));
    return new Promise((resolve, reject) => {
      const id = this.#request({ op: "list" }, []);
      if (id !== null) this.#pending.set(id, { resolve, reject, symbols: [] });
    });
  }

  #emit(type, detail) {
    const set = this.#handlers.get(type);
    if (set === undefined) return;
    for (const handler of set) {
      try {
        handler(detail);
      } catch (err) {
        console.error(`ticker-client: a "${type}" handler failed`, err);
      }
    }
  }

  #setStatus(status, code = this.#closeCode, reason = this.#closeReason) {
    this.#status = status;
    this.#emit("status", { status, code, reason, retryInMs: this.retryInMs });
  }

  /** Send an operation; a subscribe/unsubscribe is remembered until its reply. */
  #request(op, symbols) {
    const id = this.#nextId++;
    op.id = id;
    const text = JSON.stringify(op);
    const limit = this.#welcome?.limits?.max_message_bytes;
    if (limit !== undefined && new TextEncoder().encode(text).length > limit) {
      // The server would close the connection (1009): refuse here, with a clear error.
      if (op.op === "subscribe") for (const s of symbols) this.#wanted.delete(s);
      const message = `${op.op} of ${symbols.length} symbols is over the server's ${limit}-byte message limit`;
      this.#emit("error", { type: "error", code: "client", message, symbols });
      return null;
    }
    if (op.op !== "list") this.#pending.set(id, { resolve: null, reject: null, symbols });
    this.#ws.send(text);
    return id;
  }

  #open() {
    const url = new URL(this.#url);
    // candle topics wait for the welcome: only a subscribe op can ask for their history
    const symbols = this.symbols.filter((s) => !s.includes("@")).join(",");
    const inUrl = symbols.length > 0 && symbols.length <= LONG_URL;
    if (inUrl) url.searchParams.set("symbols", symbols);
    if (this.#mode !== null) url.searchParams.set("mode", this.#mode);
    if (this.#maxHz !== null) url.searchParams.set("max_hz", String(this.#maxHz));
    if (this.token) url.searchParams.set("token", this.token);
    this.#setStatus("connecting");
    const ws = new this.#WebSocket(url.href);
    this.#ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
    };
    ws.onmessage = (event) => {
      if (this.#ws !== ws) return; // a dropped socket's last frames
      this.#lastHeard = Date.now();
      this.#onFrame(JSON.parse(event.data), inUrl);
    };
    ws.onclose = (event) => {
      if (this.#ws !== ws) return;
      if (opened || event.code !== 1006) {
        this.#onClose(event.code, event.reason);
        return;
      }
      // A refused handshake shows as 1006: ask the same address over HTTP why. 401 (no,
      // bad or expired token) and 403 (origin) count as 1008: retrying would not help.
      refusal(url).then((reason) => {
        if (this.#ws === ws) this.#onClose(reason === null ? 1006 : 1008, reason ?? "");
      });
    };
    // From now on: a handshake that hangs counts as silence too.
    this.#lastHeard = Date.now();
    clearInterval(this.#watchdog);
    this.#watchdog = setInterval(() => this.#checkSilence(), 1000);
  }

  /** A connection that has heard nothing for twice heartbeat_s is dead: drop it, retry. */
  #checkSilence() {
    if (Date.now() - this.#lastHeard > this.#silenceMs) {
      this.#drop(4000, "no data from the server");
      this.#onClose(1006, "no data from the server");
    }
  }

  /** Forget the current socket (its events are ignored from now on) and close it. */
  #drop(code, reason) {
    clearInterval(this.#watchdog);
    const ws = this.#ws;
    this.#ws = null;
    if (ws !== null && ws.readyState <= 1) ws.close(code, reason);
    for (const { reject } of this.#pending.values()) reject?.(new Error(reason));
    this.#pending.clear();
  }

  #onClose(code, reason) {
    this.#drop(code, reason);
    this.#closeCode = code;
    this.#closeReason = reason;
    const delay = backoffDelay(code, this.#attempt, this.#random, this.#backoff);
    if (delay === null) {
      this.#setStatus("closed", code, reason);
      return;
    }
    this.#attempt += 1;
    this.#retryAt = Date.now() + delay;
    this.#timer = setTimeout(() => this.#open(), delay);
    this.#setStatus("reconnecting", code, reason);
  }

  #onFrame(msg, subscribedInUrl) {
    switch (msg.type) {
      case "ticks":
        this.#deliver("ticks", msg.ticks, this.#mode === "all");
        break;
      case "snapshot":
        this.#deliver("snapshot", msg.ticks, true);
        break;
      case "welcome":
        this.#onWelcome(msg, subscribedInUrl);
        break;
      case "subscribed":
      case "unsubscribed":
        this.#pending.delete(msg.id);
        this.#subscribed = msg.symbols;
        this.#emit(msg.type, msg.symbols);
        break;
      case "symbols":
        this.#pending.get(msg.id)?.resolve(msg.symbols);
        this.#pending.delete(msg.id);
        break;
      case "error":
        this.#onError(msg);
        break;
      case "candles": // bars keyed by (s, i, ts): a repeat (history again) replaces
        this.#emit("candles", msg.candles);
        break;
      case "book":
        this.#onBook(msg);
        break;
      case "status":
        for (const [symbol, status] of Object.entries(msg.symbols)) {
          if (status.status === "live") this.#notLive.delete(symbol);
          else this.#notLive.set(symbol, status);
        }
        this.#emit("symbolstatus", msg.symbols);
        break;
      // pong, heartbeat and types added later: nothing to do (hearing them is enough)
    }
  }

  #onWelcome(msg, subscribedInUrl) {
    this.#attempt = 0;
    if (this.#notLive.size > 0) {
      // a new session says afresh which symbols are not live, right after the snapshot
      const live = { status: "live" };
      const cleared = Object.fromEntries([...this.#notLive.keys()].map((s) => [s, live]));
      this.#notLive.clear();
      this.#emit("symbolstatus", cleared);
    }
    this.#welcome = msg;
    this.#books.clear(); // each topic starts again from its snapshot on this connection
    this.#silenceMs = 2000 * msg.heartbeat_s;
    const previous = this.#epoch;
    if (msg.epoch !== previous) {
      this.#epoch = msg.epoch;
      this.#lastQ.clear(); // q restarts with the stream
      this.#emit("epoch", { epoch: msg.epoch, previous });
    }
    this.#closeCode = null;
    this.#closeReason = "";
    this.#setStatus("live");
    this.#emit("welcome", msg);
    const symbols = subscribedInUrl ? this.symbols.filter((s) => s.includes("@")) : this.symbols;
    if (symbols.length > 0) this.#subscribeNow(symbols);
  }

  /** A book frame: a snapshot replaces the topic's book, a delta is checked and applied.
   *  One that does not fit is an error event, and the topic is subscribed again for a
   *  fresh snapshot (its frames in flight until then are ignored). */
  #onBook(msg) {
    if (msg.r) return; // an on-demand replay's book ("r": 1), not the live topic's
    const topic = bookTopic(msg);
    if (!this.#wanted.has(topic)) return; // in flight after its unsubscribe
    const book = this.#books.get(topic);
    try {
      if (msg.snapshot === true) this.#books.set(topic, new LocalBook(msg));
      else if (book === null) return; // before the snapshot of a resync
      else if (book === undefined) throw new BookError(topic, "a delta before its snapshot");
      else book.apply(msg);
    } catch (err) {
      if (!(err instanceof BookError)) throw err;
      this.#books.set(topic, null);
      this.#emit("error", { type: "error", code: "book", topic, message: err.message });
      this.#request({ op: "unsubscribe", symbols: [topic] }, [topic]);
      this.#request({ op: "subscribe", symbols: [topic] }, [topic]);
      return;
    }
    this.#emit("book", { topic, book: this.#books.get(topic), snapshot: msg.snapshot === true });
  }

  #onError(msg) {
    // Symbols the server refused are dropped from the wish list, or every reconnection
    // would ask for them again.
    const request = this.#pending.get(msg.id);
    this.#pending.delete(msg.id);
    let refused = [];
    if (msg.code === "unknown_symbol") refused = msg.symbols ?? [];
    else if (msg.code === "too_many_symbols" && request !== undefined) refused = request.symbols;
    // a refused op (e.g. a topic kind this server does not serve) would be refused again
    else if (msg.code === "bad_request" && request !== undefined) refused = request.symbols;
    for (const s of refused) this.#wanted.delete(s);
    request?.reject?.(new Error(`${msg.code}: ${msg.message}`));
    this.#emit("error", msg);
  }

  /** Hand on the ticks not seen yet; report q jumps where they mean missed ticks. */
  #deliver(type, ticks, reportGaps) {
    const lastQ = this.#lastQ;
    let fresh = ticks;
    for (let i = 0; i < ticks.length; i++) {
      const tick = ticks[i];
      const prev = lastQ.get(tick.s);
      if (prev !== undefined && tick.q <= prev) {
        if (fresh === ticks) fresh = ticks.slice(0, i); // copy only when something is dropped
        continue;
      }
      if (reportGaps && prev !== undefined && tick.q > prev + 1) {
        this.#emit("gap", { symbol: tick.s, missed: tick.q - prev - 1 });
      }
      lastQ.set(tick.s, tick.q);
      if (fresh !== ticks) fresh.push(tick);
    }
    if (fresh.length > 0) this.#emit(type, fresh);
  }
}
