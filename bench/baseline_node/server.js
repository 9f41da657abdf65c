// The node-ws baseline: what a minimal Node broadcaster on the `ws` library does.
//
// Same protocol subset as bench/baseline_aiohttp.py: a welcome frame, ?symbols= (or *)
// subscribed at connect, then one {"type":"ticks","ticks":[tick]} frame per tick, sent to
// each subscriber with ws.send(JSON). Its own random-walk feed over the same symbol names:
// every --interval-ms (default 10) it emits the ticks due since start (rate/100 on average, paced against the
// clock so timer drift does not lower the rate; at most 0.25 s worth at once, like
// SimulatedFeed). perMessageDeflate is off, as in ticker. No backpressure policy: ws
// buffers in user space without bound for a client that stops reading.
"use strict";

const http = require("http");
const { performance } = require("perf_hooks");
const { WebSocketServer } = require("ws");

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const host = arg("host", "127.0.0.1");
const port = Number(arg("port", "8080"));
const rate = Number(arg("rate", "1000"));
const intervalMs = Number(arg("interval-ms", "10"));
const symbols = arg("symbols", "AAPL,MSFT").split(",");

const nowUs = () => Math.round((performance.timeOrigin + performance.now()) * 1000);

const subscribers = new Map(symbols.map((s) => [s, new Set()]));
const wildcard = new Set();
const seq = new Map(symbols.map((s) => [s, 0]));
const price = symbols.map((_, i) => 20 + ((i * 37) % 480));

const server = http.createServer((req, res) => {
  res.writeHead(404);
  res.end();
});
const wss = new WebSocketServer({ server, path: "/ws", perMessageDeflate: false });

wss.on("connection", (ws, req) => {
  const url = new URL(req.url, "http://localhost");
  let wanted = (url.searchParams.get("symbols") || "").split(",").filter((s) => s);
  ws.send(JSON.stringify({ type: "welcome", protocol: 1, mode: "all", server_time: nowUs() }));
  if (wanted.includes("*")) {
    wildcard.add(ws);
  } else {
    wanted = wanted.filter((s) => subscribers.has(s));
    for (const s of wanted) subscribers.get(s).add(ws);
  }
  ws.send(JSON.stringify({ type: "subscribed", symbols: wanted }));
  const drop = () => {
    wildcard.delete(ws);
    for (const set of subscribers.values()) set.delete(ws);
  };
  ws.on("close", drop);
  ws.on("error", drop);
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
    const msg = JSON.stringify({ type: "ticks", ticks: [tick] });
    for (const ws of subscribers.get(s)) ws.send(msg);
    for (const ws of wildcard) ws.send(msg);
  }
}, intervalMs);

server.listen(port, host);
const stop = () => process.exit(0);
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
