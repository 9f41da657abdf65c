// What the node-ws and bun baselines share: their command line and their feed.
//
// The feed is a random walk over the given symbol names: every --interval-ms it emits the
// ticks due since start (rate x elapsed, paced against the clock so timer drift does not
// lower the rate; at most 0.25 s worth at once, like SimulatedFeed), each as one
// {"type":"ticks","ticks":[tick]} frame handed to publish(symbol, frame), with t in µs
// and a per-symbol q. Each baseline decides how a frame reaches its subscribers.
"use strict";

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const options = {
  host: arg("host", "127.0.0.1"),
  port: Number(arg("port", "8080")),
  rate: Number(arg("rate", "1000")),
  intervalMs: Number(arg("interval-ms", "10")),
  symbols: arg("symbols", "AAPL,MSFT").split(","),
};

const nowUs = () => Math.round((performance.timeOrigin + performance.now()) * 1000);
const round2 = (x) => Math.round(x * 100) / 100;

function startFeed({ rate, intervalMs, symbols }, publish) {
  const seq = new Map(symbols.map((s) => [s, 0]));
  const price = symbols.map((_, i) => 20 + ((i * 37) % 480));
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
      publish(s, JSON.stringify({ type: "ticks", ticks: [tick] }));
    }
  }, intervalMs);
}

module.exports = { options, nowUs, startFeed };
