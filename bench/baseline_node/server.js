// The node-ws baseline: what a minimal Node broadcaster on the `ws` library does.
//
// Same protocol subset as bench/baseline_aiohttp.py: a welcome frame, ?symbols= (or *)
// subscribed at connect, then one {"type":"ticks","ticks":[tick]} frame per tick, sent to
// each subscriber with ws.send(JSON). Its feed is bench/peer_feed.js (shared with the bun
// baseline). perMessageDeflate is off, as in ticker. No backpressure policy: ws buffers
// in user space without bound for a client that stops reading.
"use strict";

const http = require("http");
const { WebSocketServer } = require("ws");
const { options, nowUs, startFeed } = require("../peer_feed.js");

const subscribers = new Map(options.symbols.map((s) => [s, new Set()]));
const wildcard = new Set();

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

startFeed(options, (symbol, msg) => {
  for (const ws of subscribers.get(symbol)) ws.send(msg);
  for (const ws of wildcard) ws.send(msg);
});

server.listen(options.port, options.host);
const stop = () => process.exit(0);
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
