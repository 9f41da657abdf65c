// The bun baseline: Bun's built-in WebSocket pub/sub, uWebSockets underneath.
//
// The fastest thing a user could pick instead of ticker: each client is subscribed to
// its symbols at connect (ws.subscribe), and each tick is one server.publish(symbol, msg)
// that uWebSockets fans out in C++ to every subscriber. Same protocol subset and the
// same feed (bench/peer_feed.js) as the node-ws baseline: a welcome frame, ?symbols= (or
// *) at connect, one {"type":"ticks","ticks":[tick]} frame per tick. No compression.
// Bun's own backpressure policy applies to a client that stops reading.
"use strict";

const { options, nowUs, startFeed } = require("../peer_feed.js");

const known = new Set(options.symbols);

const server = Bun.serve({
  hostname: options.host,
  port: options.port,
  fetch(req, srv) {
    const url = new URL(req.url);
    if (url.pathname !== "/ws") return new Response(null, { status: 404 });
    const wanted = (url.searchParams.get("symbols") || "").split(",").filter((s) => s);
    const subs = wanted.includes("*") ? options.symbols : wanted.filter((s) => known.has(s));
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

startFeed(options, (symbol, msg) => server.publish(symbol, msg));

const stop = () => {
  server.stop(true);
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
