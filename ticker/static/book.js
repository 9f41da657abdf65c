// book.js: a client's copy of one book topic ("AAPL@book10", "@book50", "@book") of
// protocol v1, and the checksum that proves it equals the server's (docs/protocol.md).
// No dependencies: ticker-client.js keeps one LocalBook per book topic it follows.
//
// The server numbers every change set of a book (`u`), chains each frame to the last one
// this client got (`pu`) and sends the CRC32 (`cs`) of its top 10 levels a side. A
// snapshot replaces the book; a delta must chain, keep the book within its depth and
// leave it with the same `cs`: anything else throws a BookError (which must never happen).

const CHECKSUM_DEPTH = 10;
const BOOK_TOPIC = /@book(10|50)?$/;

/** Whether `topic` is a book topic ("AAPL@book10", "AAPL@book50", "AAPL@book"). */
export function isBookTopic(topic) {
  return BOOK_TOPIC.test(topic);
}

/** The topic a book frame belongs to: `depth` absent is "@book" (every level). */
export function bookTopic(frame) {
  return `${frame.s}@book${frame.depth ?? ""}`;
}

/** A book frame that does not fit the book: a broken chain, a wrong `cs`, past its depth. */
export class BookError extends Error {
  constructor(topic, message) {
    super(`${topic}: ${message}`);
    this.name = "BookError";
    this.topic = topic;
  }
}

/** A number as the checksum writes it: JavaScript's String(x) (the shortest decimal that
 *  reads back as the same double, like Python's repr) with its exponent written out:
 *  1.305e-05 -> "0.00001305", 1e21 -> "1000000000000000000000"; 100.0 -> "100". */
export function canonical(x) {
  if (Object.is(x, -0)) return "-0"; // String(-0) is "0"; the server writes -0.0
  const text = String(x);
  const e = text.indexOf("e");
  if (e < 0) return text;
  let mantissa = text.slice(0, e);
  const exponent = Number(text.slice(e + 1));
  const sign = mantissa[0] === "-" ? "-" : "";
  if (sign) mantissa = mantissa.slice(1);
  const dot = mantissa.indexOf(".");
  const digits = mantissa.replace(".", ""); // no trailing zeros: String never writes them
  const point = (dot < 0 ? mantissa.length : dot) + exponent; // digits before the point
  if (point <= 0) return `${sign}0.${"0".repeat(-point)}${digits}`;
  if (point >= digits.length) return sign + digits + "0".repeat(point - digits.length);
  return `${sign}${digits.slice(0, point)}.${digits.slice(point)}`;
}

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC32 (zlib's, unsigned) of an ASCII text, such as the checksum's. */
export function crc32(text) {
  let c = 0xffffffff;
  for (let i = 0; i < text.length; i++) c = CRC_TABLE[(c ^ text.charCodeAt(i)) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** One side of a book: price -> size, and its prices sorted best first. */
export class BookSide {
  constructor(bids) {
    this.bids = bids; // best is the highest price (bids) or the lowest (asks)
    this.prices = []; // best first
    this.sizes = new Map();
  }

  get length() {
    return this.prices.length;
  }

  /** Where `price` is, or would go, in `prices` (binary search, best first). */
  #index(price) {
    const prices = this.prices;
    let lo = 0;
    let hi = prices.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.bids ? prices[mid] > price : prices[mid] < price) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** One absolute level: size 0 removes it. */
  set(price, size) {
    const known = this.sizes.has(price);
    if (size === 0) {
      if (!known) return; // removing a level one does not hold: nothing to do
      this.sizes.delete(price);
      this.prices.splice(this.#index(price), 1);
      return;
    }
    if (!known) this.prices.splice(this.#index(price), 0, price);
    this.sizes.set(price, size);
  }

  /** The best `n` levels (all when omitted) as [[price, size], ...], best first. */
  top(n = this.prices.length) {
    return this.prices.slice(0, n).map((p) => [p, this.sizes.get(p)]);
  }

  /** This side's part of the checksum text: its best 10 levels, `price:size` by ",". */
  checksumText() {
    const n = Math.min(CHECKSUM_DEPTH, this.prices.length);
    let text = "";
    for (let i = 0; i < n; i++) {
      const p = this.prices[i];
      text += `${i ? "," : ""}${canonical(p)}:${canonical(this.sizes.get(p))}`;
    }
    return text;
  }
}

/** The checksum of two sides: CRC32 of "bids|asks", each side's best 10 levels. */
export function bookChecksum(bids, asks) {
  return crc32(`${bids.checksumText()}|${asks.checksumText()}`);
}

/**
 * One book topic as the server sent it, checked on every frame.
 *
 *   const book = new LocalBook(snapshotFrame); // throws BookError if its cs is wrong
 *   book.apply(deltaFrame); // throws BookError on a broken pu chain, past the depth, a wrong cs
 *   book.bids.prices[0], book.bids.sizes.get(price); book.top(10)
 */
export class LocalBook {
  constructor(snapshot) {
    this.topic = bookTopic(snapshot);
    if (snapshot.snapshot !== true) throw new BookError(this.topic, "a delta before its snapshot");
    this.symbol = snapshot.s;
    this.depth = snapshot.depth ?? null; // null: every level
    this.bids = new BookSide(true);
    this.asks = new BookSide(false);
    this.u = snapshot.u;
    this.cs = snapshot.cs;
    this.frames = 0;
    this.#take(snapshot);
  }

  /** A delta frame: it must chain to the last frame (`pu` is our `u`). */
  apply(delta) {
    if (delta.snapshot === true) throw new BookError(this.topic, "a snapshot where a delta belongs");
    if (delta.pu !== this.u) {
      throw new BookError(this.topic, `pu ${delta.pu} does not chain to u ${this.u}`);
    }
    if (!(delta.u > this.u)) throw new BookError(this.topic, `u ${delta.u} is not after ${this.u}`);
    this.u = delta.u;
    this.cs = delta.cs;
    this.#take(delta);
  }

  /** Both sides' best `n` levels (all when omitted): {bids, asks} of [[price, size], ...]. */
  top(n) {
    return { bids: this.bids.top(n), asks: this.asks.top(n) };
  }

  #take(frame) {
    for (const [p, s] of frame.bids) this.bids.set(p, s);
    for (const [p, s] of frame.asks) this.asks.set(p, s);
    this.frames += 1;
    const depth = this.depth;
    if (depth !== null && (this.bids.length > depth || this.asks.length > depth)) {
      const sizes = `${this.bids.length} bids, ${this.asks.length} asks`;
      throw new BookError(this.topic, `${sizes} after u ${this.u}: more than its depth ${depth}`);
    }
    const mine = bookChecksum(this.bids, this.asks);
    if (mine !== frame.cs) {
      throw new BookError(this.topic, `cs ${frame.cs} at u ${this.u}, but the book's is ${mine}`);
    }
  }
}
