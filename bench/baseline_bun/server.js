// The bun baseline: Bun's built-in WebSocket pub/sub, uWebSockets underneath.
//
// The fastest thing a user could pick instead of ticker: each client is subscribed to
// its symbols at connect (ws.subscribe), and each tick is one server.publish(symbol, msg)
// that uWebSockets fans out in C++ to every subscriber. Same protocol subset and the
// same random-walk feed as bench/baseline_node/server.js: a welcome frame, ?symbols= (or
// *) at connect, one {"type":"ticks","ticks":[tick]} frame per tick, the ticks due since
// start emitted every --interval-ms (at most 0.25 s worth at once). No compression.
// Bun's own backpressure policy applies to a client that stops reading.
"use strict";

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const host = arg("host", "127.0.0.1");
const port = Number(arg("port", "8080"));
const rate = Number(arg("rate", "1000"));
const intervalMs = Number(arg("interval-ms", "2"));
const symbols = arg("symbols", "AAPL,MSFT").split(",");
const known = new Set(symbols);

const nowUs = () => Math.round((performance.timeOrigin + performance.now()) * 1000);

const seq = new Map(symbols.map((s) => [s, 0]));
const price = symbols.map((_, i) => 20 + ((i * 37) % 480));

const server = Bun.serve({
  hostname: host,
  port,
  fetch(req, srv) {
    const url = new URL(req.url);
    if (url.pathname !== "/ws") return new Response(null, { status: 404 });
    const wanted = (url.searchParams.get("symbols") || "").split(",").filter((s) => s);
    const subs = wanted.includes("*") ? symbols : wanted.filter((s) => known.has(s));
    if (srv.upgrade(req, { data: { subs } })) return undefined;
    return new Response("upgrade failed", { status: 400 });
  },
  websocket: {
    perMessageDeflate: false,
    open(ws) {
      ws.send(JSON.stringify({ type: "welcome", protocol: 1, mode: "all", server_time: nowUs() }));
      for (const s of ws.data.subs) ws.subscribe(s);
      ws.send(JSON.stringify({ type: "subscribed", symbols: ws.data.subs }));
    },
    message() {},
  },
});

const round2 = (x) => Math.round(x * 100) / 100;
const start = performance.now();
const maxBatch = Math.max(1, Math.round(rate * 0.25));
let accounted = 0;

setInterval(() => {
  const due0 = Math.round((rate * (performance.now() - start)) / 1000) - accounted;
  accounted += due0;
  const due = Math.min(due0, maxBatch);
  const t = nowUs();
  for (let k = 0; k < due; k++) {
    const i = Math.floor(Math.random() * symbols.length);
    const s = symbols[i];
    const p = (price[i] = Math.max(1, price[i] * (1 + (Math.random() - 0.5) * 0.002)));
    const q = seq.get(s) + 1;
    seq.set(s, q);
    const tick = {
      s,
      p: round2(p),
      b: round2(p - 0.01),
      a: round2(p + 0.01),
      v: 100 * (1 + Math.floor(Math.random() * 9)),
      t,
      q,
    };
    server.publish(s, JSON.stringify({ type: "ticks", ticks: [tick] }));
  }
}, intervalMs);

const stop = () => {
  server.stop(true);
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
