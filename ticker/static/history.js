// The server's recent ticks of some symbols, fetched once when the page opens so that the
// chart and the sparklines start full rather than empty.
//
// No endpoint of its own: a short-lived WebSocket uses the protocol's resume
// (docs/protocol.md, "Resuming without a gap"). It subscribes to learn each symbol's latest
// q, then subscribes again with `since` a few hundred q back, and the server replays the
// ticks after it from its history. The page's own TickerClient is not involved: it would
// drop those ticks as already seen.

const DEFAULT_DEPTH = 1000; // the server's default --history; asking further back gets nothing
const DEPTH_MARGIN = 0.9; // ticks published between the two subscribes must not push us out
const TICK_BYTES = 128; // a generous size of one encoded tick, for the replay budget
const TIMEOUT_MS = 5000;

/** The socket's address: `url` resolved against the page, ws(s):, with the token if any. */
function historyUrl(url, token) {
  const resolved = new URL(url, location.href);
  resolved.protocol = resolved.protocol === "https:" ? "wss:" : "ws:";
  if (token) resolved.searchParams.set("token", token);
  return resolved;
}

/**
 * Resolves to {epoch, ticks}: `ticks` maps each symbol the server could replay to its
 * recent ticks, oldest first (at most what its history holds and half the connection's
 * queue allows across all symbols). Never rejects: a failure resolves with what it has,
 * possibly nothing, and the page goes on live without history.
 */
export function fetchHistory(url, symbols, token = null) {
  return new Promise((resolve) => {
    const ticks = new Map();
    const heads = new Map(); // symbol -> its latest q when asked
    let epoch = null;
    let queueBytes = 0;
    let waiting = null; // symbols whose replay has not reached their head yet; null before it starts
    const ws = new WebSocket(historyUrl(url, token));
    const send = (op) => ws.send(JSON.stringify(op));
    const finish = () => {
      clearTimeout(timer);
      ws.onmessage = ws.onclose = ws.onerror = null;
      if (ws.readyState <= 1) ws.close(1000, "history fetched");
      resolve({ epoch, ticks });
    };
    const timer = setTimeout(finish, TIMEOUT_MS);
    ws.onclose = ws.onerror = finish;
    ws.onmessage = (event) => {
      const msg = JSON.parse(event.data);
      if (msg.type === "welcome") {
        epoch = msg.epoch;
        queueBytes = msg.limits?.queue_bytes ?? 0;
        send({ op: "subscribe", symbols, id: 1 });
        send({ op: "ping", id: 2 }); // its pong comes after every snapshot frame
      } else if (msg.type === "snapshot" && waiting === null) {
        for (const tick of msg.ticks) heads.set(tick.s, tick.q);
      } else if (msg.type === "pong" && msg.id === 2) {
        if (heads.size === 0) return finish();
        const back = Math.floor(Math.min(DEFAULT_DEPTH * DEPTH_MARGIN, queueBytes / 2 / heads.size / TICK_BYTES));
        const since = {};
        for (const [symbol, q] of heads) since[symbol] = Math.max(0, q - back);
        send({ op: "unsubscribe", symbols: [...heads.keys()], id: 3 });
        send({ op: "subscribe", symbols: [...heads.keys()], since, epoch, id: 4 });
      } else if (msg.type === "subscribed" && msg.id === 4) {
        waiting = new Set(Object.keys(msg.recovered ?? {}).filter((s) => msg.recovered[s]));
        if (waiting.size === 0) finish();
      } else if (msg.type === "ticks" && waiting !== null) {
        for (const tick of msg.ticks) {
          if (!waiting.has(tick.s)) continue;
          let list = ticks.get(tick.s);
          if (list === undefined) ticks.set(tick.s, (list = []));
          list.push(tick);
          if (tick.q >= heads.get(tick.s)) waiting.delete(tick.s);
        }
        if (waiting.size === 0) finish();
      } else if (msg.type === "error" && (msg.id === 1 || msg.id === 4) && msg.code !== "unknown_symbol") {
        finish(); // e.g. too_many_symbols: no history, the page's own connection says why
      }
    };
  });
}
