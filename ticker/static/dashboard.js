// The live market dashboard served at "/": a watchlist fed by TickerClient.
//
// Messages only update state (plain objects and typed arrays); the DOM and the canvases
// are drawn once per animation frame, and only what changed. Everything kept is bounded:
// a fixed number of one-second bars per symbol, a fixed number of latency samples, and
// the large chart's bars: the server's candles of the selected symbol (`SYMBOL@1m`), its
// history asked for on subscribe, so the chart is full at once. The selected symbol's
// book (`SYMBOL@book50`, kept and checked by the client) is drawn as a ladder and a depth
// chart in the same pass as the chart, when a frame changed it.

import { drawChart, drawSparkline, fitCanvas, hms, readColors, Series } from "./chart.js";
import { drawDepth, Ladder } from "./depth.js";
import { fetchHistory } from "./history.js";
import { RollingStats } from "./stats.js";
import { TickerClient } from "./ticker-client.js";

const ROW_BARS = 300; // each row keeps five minutes of one-second bars (from its ticks)
const CHART_BARS = 300; // the large chart: its last 300 bars (five minutes of 1 s bars)
const BOOK_SUFFIX = "book50"; // the ladder shows its best 10 a side, the depth chart all 50
const INTERVALS = { "1s": 1000, "1m": 60000, "5m": 300000, "1h": 3600000 }; // the picker's
const SPARK_S = 60; // the sparklines: the last minute
const TABLE_EVERY_MS = 200; // numbers and chart: 5 times a second, readable and cheap
const SPARK_EVERY_MS = 500; // sparklines of one-second bars move slowly
const STATUS_EVERY_MS = 250;
const FLASH_MS = 300;
const MAX_ROWS = 200;
const MAX_SUGGESTIONS = 50;
const WATCHLIST_KEY = "ticker.watchlist";
const OPENS_KEY = "ticker.opens";
const DEFAULT_SYMBOLS = ["AAPL", "MSFT", "GOOGL", "AMZN", "NVDA"];

const $ = (id) => document.getElementById(id);
const ui = {
  rows: $("rows"),
  template: $("row-template"),
  empty: $("empty"),
  state: $("status-state"),
  rate: $("status-rate"),
  p50: $("status-p50"),
  max: $("status-max"),
  epoch: $("status-epoch"),
  addForm: $("add-form"),
  addInput: $("add-symbol"),
  suggestions: $("known-symbols"),
  tokenForm: $("token-form"),
  tokenInput: $("token"),
  message: $("message"),
  chart: $("chart"),
  chartTitle: $("chart-title"),
  viewLine: $("view-line"),
  viewCandles: $("view-candles"),
  interval: $("interval"),
  crosshair: $("crosshair"),
  depth: $("depth"),
  bookEmpty: $("book-empty"),
};
const ladder = new Ladder($("ladder-asks"), $("ladder-bids"), $("ladder-spread"));

const rows = new Map(); // symbol -> row state, in watchlist order
const stats = new RollingStats(5);
let known = []; // every symbol the server knows (from `list`), sorted
let selected = null;
let candles = false;
let colors = readColors(document.documentElement);
let opens = { epoch: null, prices: {} }; // the first price seen per symbol in this epoch
let frameRequested = false;
let chartDirty = true;
let lastTablePass = -Infinity;
let lastSparkPass = -Infinity;
let chartSize = { width: 0, height: 0 }; // CSS pixels, from the ResizeObserver
let lastStatus = 0;
let statusText = "";
let drawn = null; // what the chart last drew (drawChart's answer), for its title and the tests
let interval = "1s"; // of the large chart's bars
let chartTopic = null; // the candle topic the chart follows ("AAPL@1s"), or null
let chartSeries = new Series(CHART_BARS, INTERVALS[interval]);
let bookTopic = null; // the book topic the ladder follows ("AAPL@book50"), or null
let bookDirty = true;
let bookShown = null; // what the ladder and the depth chart last drew, for the tests
let depthSize = { width: 0, height: 0 };

// ---- the watchlist: URL and localStorage ----------------------------------------------

function initialSymbols(params) {
  const fromUrl = params.get("symbols");
  if (fromUrl !== null) return splitSymbols(fromUrl);
  try {
    const stored = JSON.parse(localStorage.getItem(WATCHLIST_KEY));
    if (Array.isArray(stored)) return stored.filter((s) => typeof s === "string");
  } catch {
    // unreadable storage: fall back to the defaults
  }
  return DEFAULT_SYMBOLS;
}

function splitSymbols(text) {
  return text
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s.length > 0 && s.length <= 32 && !/\s/.test(s));
}

function saveWatchlist() {
  const symbols = [...rows.keys()];
  try {
    localStorage.setItem(WATCHLIST_KEY, JSON.stringify(symbols));
  } catch {
    // storage full or disabled: the URL still has it
  }
  const url = new URL(location.href);
  url.searchParams.set("symbols", symbols.join(","));
  history.replaceState(null, "", url);
}

function loadOpens(epoch) {
  try {
    const stored = JSON.parse(localStorage.getItem(OPENS_KEY));
    if (stored?.epoch === epoch && stored.prices) return stored;
  } catch {
    // start afresh
  }
  return { epoch, prices: {} };
}

function saveOpens() {
  try {
    localStorage.setItem(OPENS_KEY, JSON.stringify(opens));
  } catch {
    // not worth more than the session it describes
  }
}

// ---- rows -----------------------------------------------------------------------------

/** A row whose source is not live is greyed (stale) or marked (halted, closed), with why. */
function showStatus(symbol) {
  const row = rows.get(symbol);
  if (row === undefined) return;
  const { status, reason } = client.symbolStatus(symbol);
  if (status === "live") delete row.tr.dataset.status;
  else row.tr.dataset.status = status;
  row.symbolButton.title = status === "live" ? "" : `${status}: ${reason}`;
}

function addRow(symbol) {
  const tr = ui.template.content.firstElementChild.cloneNode(true);
  const cell = (cls) => tr.querySelector(`.${cls}`);
  const row = {
    symbol,
    tr,
    cells: { last: cell("last"), chg: cell("chg"), pct: cell("pct") },
    values: {}, // name -> the span that holds the cell's text
    shown: {}, // name -> text currently in it
    symbolButton: cell("symbol"),
    removeButton: cell("remove"),
    spark: cell("spark").getContext("2d"),
    series: new Series(ROW_BARS),
    backfilled: 0, // ticks of history put into the series
    sparkBars: 0, // bars the sparkline last drew
    last: null,
    bid: null,
    ask: null,
    size: null,
    t: 0,
    ticks: 0,
    direction: 0, // +1 / -1 on the last price change, 0 when drawn
    flash: "", // "", "up" or "down": the class on the last price cell
    flashUntil: 0,
    dirty: false,
    sparkDirty: false,
  };
  row.symbolButton.textContent = symbol;
  row.symbolButton.setAttribute("aria-label", `Show ${symbol} in the chart`);
  row.symbolButton.addEventListener("click", () => select(symbol));
  row.removeButton.setAttribute("aria-label", `Remove ${symbol}`);
  row.removeButton.addEventListener("click", () => removeSymbol(symbol, true));
  for (const name of ["last", "chg", "pct", "bid", "ask", "size", "time"]) {
    row.values[name] = tr.querySelector(`.${name} .v`);
  }
  rows.set(symbol, row);
  ui.rows.append(tr);
  ui.empty.hidden = true;
  showStatus(symbol);
  return row;
}

function addSymbol(text) {
  const wanted = text.trim();
  if (wanted === "") return;
  const symbol = known.find((s) => s.toUpperCase() === wanted.toUpperCase()) ?? wanted;
  if (rows.has(symbol)) {
    select(symbol);
    return say(`${symbol} is already in the watchlist.`);
  }
  if (known.length > 0 && !known.includes(symbol)) return say(`Unknown symbol: ${symbol}`);
  if (rows.size >= MAX_ROWS) return say(`The watchlist holds at most ${MAX_ROWS} symbols.`);
  try {
    client.subscribe([symbol]);
  } catch (err) {
    return say(err.message);
  }
  addRow(symbol);
  backfill([symbol]);
  if (selected === null) select(symbol);
  saveWatchlist();
  say("");
  ui.addInput.value = "";
}

function removeSymbol(symbol, byUser) {
  const row = rows.get(symbol);
  if (row === undefined) return;
  const next = row.tr.nextElementSibling ?? row.tr.previousElementSibling;
  rows.delete(symbol);
  row.tr.remove();
  client.unsubscribe([symbol]);
  ui.empty.hidden = rows.size > 0;
  if (selected === symbol) select(rows.keys().next().value ?? null);
  saveWatchlist();
  if (byUser) (next?.querySelector(".remove") ?? ui.addInput).focus(); // keep keyboard users in place
}

function select(symbol) {
  selected = symbol;
  for (const row of rows.values()) {
    const on = row.symbol === symbol;
    row.tr.classList.toggle("selected", on);
    row.symbolButton.setAttribute("aria-pressed", String(on));
  }
  drawn = null;
  followChart();
  followBook();
  setChartTitle();
  ui.chart.setAttribute("aria-label", symbol === null ? "Price chart" : `Price chart of ${symbol}`);
  chartDirty = true;
  schedule();
}

/** The chart follows the selected symbol's candle topic at the picked interval: a new
 *  topic starts an empty series that its history (asked on subscribe) fills at once. */
function followChart() {
  const topic = selected === null ? null : `${selected}@${interval}`;
  if (topic === chartTopic) return;
  if (chartTopic !== null) client.unsubscribe([chartTopic]);
  chartTopic = topic;
  chartSeries = new Series(CHART_BARS, INTERVALS[interval]);
  ui.crosshair.hidden = true;
  if (topic !== null) client.subscribe([topic]);
}

/** The ladder follows the selected symbol's book topic (the old one is unsubscribed). */
function followBook() {
  const topic = selected === null ? null : `${selected}@${BOOK_SUFFIX}`;
  if (topic === bookTopic) return;
  if (bookTopic !== null) client.unsubscribe([bookTopic]);
  bookTopic = topic;
  bookDirty = true;
  if (topic !== null) client.subscribe([topic]);
}

function onBook({ topic }) {
  if (topic !== bookTopic) return;
  bookDirty = true;
  schedule();
}

function drawBook() {
  bookDirty = false;
  const book = bookTopic === null ? null : client.book(bookTopic);
  const levels = ladder.draw(book);
  const ratio = fitCanvas(ui.depth, depthSize.width, depthSize.height);
  const depth = drawDepth(ui.depth.getContext("2d"), book, colors, ratio);
  const empty = levels.bids === 0 && levels.asks === 0;
  if (ui.bookEmpty.hidden === empty) ui.bookEmpty.hidden = !empty;
  bookShown = { topic: bookTopic, u: book?.u ?? null, ...levels, depth };
}

function onCandles(bars) {
  for (const bar of bars) {
    if (`${bar.s}@${bar.i}` === chartTopic) {
      chartSeries.put(bar);
      chartDirty = true;
    }
  }
  schedule();
}

/** The crosshair's readout: time, open, high, low, close and volume of the bar under the
 *  pointer (nothing off the bars). */
function showCrosshair(event) {
  if (drawn === null) return;
  const rect = ui.chart.getBoundingClientRect();
  const px = (event.clientX - rect.left) * drawn.ratio;
  const t = drawn.fromMs + ((px - drawn.left) / drawn.width) * (drawn.toMs - drawn.fromMs);
  const bar = chartSeries.barAt(t);
  ui.crosshair.hidden = bar === null;
  if (bar === null) return;
  const digits = bar.close >= 1 ? 2 : 4;
  const f = (p) => p.toFixed(digits);
  ui.crosshair.textContent =
    `${hms(bar.time)} o ${f(bar.open)} h ${f(bar.high)} l ${f(bar.low)} c ${f(bar.close)} v ${bar.volume.toLocaleString("en-US")}`;
}

/** The title says how much the chart shows: its 300 bars once it has them, less before. */
function setChartTitle() {
  let text = "Chart";
  if (selected !== null) {
    const full = CHART_BARS * chartSeries.barMs;
    const shown = drawn === null ? full : drawn.toMs - drawn.fromMs;
    text = `${selected}: last ${spanText(Math.round(Math.min(full, shown) / 1000))}`;
  }
  if (ui.chartTitle.textContent !== text) ui.chartTitle.textContent = text;
}

function spanText(seconds) {
  if (seconds < 60) return `${seconds} s`;
  if (seconds < 3600) return seconds % 60 ? `${Math.floor(seconds / 60)} min ${seconds % 60} s` : `${seconds / 60} minutes`;
  if (seconds < 86400) return `${Math.round(seconds / 360) / 10} hours`;
  return `${Math.round(seconds / 8640) / 10} days`;
}

/** Fill the bars of these rows from the server's history (see history.js): the chart and
 *  the sparklines start full instead of growing from the first live tick. */
function backfill(symbols) {
  fetchHistory("/ws", symbols, client.token).then(({ epoch, ticks }) => {
    if (epoch !== client.epoch) return; // counted in another stream than the rows have now
    for (const [symbol, list] of ticks) {
      const row = rows.get(symbol);
      if (row === undefined) continue;
      row.series.backfill(list);
      row.backfilled = list.length;
      row.sparkDirty = true;
      if (list[0].q === 1 && opens.prices[symbol] !== list[0].p) {
        opens.prices[symbol] = list[0].p; // the stream's very first tick: the real open
        row.dirty = true;
        saveOpens();
      }
      if (symbol === selected) chartDirty = true;
    }
    schedule();
  });
}

function say(text) {
  ui.message.textContent = text;
}

// ---- state updated per message --------------------------------------------------------

function apply(ticks, live) {
  for (let k = 0; k < ticks.length; k++) {
    const tick = ticks[k];
    const row = rows.get(tick.s);
    if (row === undefined) continue; // in flight after a removal
    if (row.last !== null && tick.p !== row.last) row.direction = tick.p > row.last ? 1 : -1;
    row.last = tick.p;
    if (tick.b !== undefined) row.bid = tick.b;
    if (tick.a !== undefined) row.ask = tick.a;
    if (tick.v !== undefined) row.size = tick.v;
    row.t = tick.t;
    row.ticks += 1;
    row.series.add(tick.t / 1000, tick.p);
    row.dirty = row.sparkDirty = true;
    if (tick.s === selected) chartDirty = true;
    if (!(tick.s in opens.prices)) {
      opens.prices[tick.s] = tick.p;
      saveOpens();
    }
  }
  if (live) stats.record(ticks, Date.now());
  schedule();
}

function onEpoch({ epoch, previous }) {
  opens = loadOpens(epoch);
  if (previous !== null) {
    // A new stream (the server restarted): its session open and history start again.
    opens = { epoch, prices: {} };
    for (const row of rows.values()) {
      row.series.clear();
      row.direction = 0;
    }
    chartSeries.clear(); // the new stream's bars come with its history
    say("The server restarted: change and charts start again from its new session.");
  }
  saveOpens();
  ui.epoch.textContent = epoch;
  backfill([...rows.keys()]); // a first load, or a restarted stream's first seconds
}

function onError(msg) {
  if (msg.code === "book") return say(`Book: ${msg.message} (fetching it again)`); // must never happen
  if (bookTopic !== null && msg.code === "bad_request" && !client.symbols.includes(bookTopic)) {
    // its own op was refused: a server with no book topics (--book-interval-ms 0)
    ui.bookEmpty.textContent = "This server serves no books.";
    return;
  }
  if (msg.code === "unknown_symbol") {
    for (const s of msg.symbols ?? []) removeSymbol(s, false);
  } else if (msg.code === "too_many_symbols") {
    for (const s of [...rows.keys()]) if (!client.symbols.includes(s)) removeSymbol(s, false);
  }
  say(`Server: ${msg.message}`);
}

// ---- drawing, once per animation frame ------------------------------------------------

function schedule() {
  if (!frameRequested) {
    frameRequested = true;
    requestAnimationFrame(draw);
  }
}

const price = (p) => (p === null ? "" : p.toFixed(2));

function clock(tMicros) {
  const d = new Date(tMicros / 1000);
  const two = (n) => String(n).padStart(2, "0");
  return `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}.${String(d.getMilliseconds()).padStart(3, "0")}`;
}

function setText(row, name, text) {
  if (row.shown[name] !== text) {
    row.shown[name] = text;
    row.values[name].textContent = text;
  }
}

function drawRow(row, frameTime) {
  row.dirty = false;
  const open = opens.prices[row.symbol];
  setText(row, "last", price(row.last));
  if (open !== undefined && row.last !== null) {
    const change = row.last - open;
    const sign = change > 0 ? "+" : "";
    setText(row, "chg", sign + change.toFixed(2));
    setText(row, "pct", `${sign}${((100 * change) / open).toFixed(2)}%`);
    const cls = change > 0 ? "up" : change < 0 ? "down" : "";
    if (row.shown.cls !== cls) {
      row.shown.cls = cls;
      row.cells.chg.className = `num chg ${cls}`;
      row.cells.pct.className = `num pct ${cls}`;
    }
  }
  setText(row, "bid", price(row.bid));
  setText(row, "ask", price(row.ask));
  setText(row, "size", row.size === null ? "" : String(row.size));
  setText(row, "time", row.t ? clock(row.t) : "");
  if (row.direction !== 0) {
    setFlash(row, row.direction > 0 ? "up" : "down");
    row.flashUntil = frameTime + FLASH_MS;
    row.direction = 0;
  } else if (row.flash !== "" && frameTime >= row.flashUntil) {
    setFlash(row, "");
  }
}

/** A plain class, no CSS animation: nothing to restyle or repaint between passes. */
function setFlash(row, flash) {
  if (row.flash !== flash) {
    row.flash = flash;
    row.cells.last.className = flash === "" ? "num last" : `num last flash-${flash}`;
  }
}

function drawStatus(now) {
  const status = client.status;
  let text = status;
  if (status === "reconnecting") text = `reconnecting in ${Math.ceil(client.retryInMs / 1000)} s`;
  else if (status === "closed" && client.lastClose.code !== null) {
    text = `closed (${client.lastClose.code}${client.lastClose.reason ? `: ${client.lastClose.reason}` : ""})`;
  }
  if (text !== statusText) {
    statusText = text;
    ui.state.textContent = text;
    ui.state.dataset.state = status;
  }
  const { rate, p50, max } = stats.summary(now);
  ui.rate.textContent = rate === null ? "-" : Math.round(rate).toLocaleString("en-US");
  ui.p50.textContent = p50 === null ? "-" : `${p50.toFixed(1)} ms`;
  ui.max.textContent = max === null ? "-" : `${max.toFixed(1)} ms`;
}

function draw(frameTime) {
  frameRequested = false;
  const now = Date.now();
  let pending = false; // changed, but waiting for its next pass
  if (frameTime - lastTablePass >= TABLE_EVERY_MS) {
    // Rows and chart change together, five times a second: the frames in between have
    // nothing to lay out or paint.
    lastTablePass = frameTime;
    for (const row of rows.values()) {
      if (row.dirty || row.flash !== "") drawRow(row, frameTime);
      pending ||= row.flash !== "";
    }
    if (chartDirty) {
      chartDirty = false;
      const ctx = ui.chart.getContext("2d");
      const ratio = fitCanvas(ui.chart, chartSize.width, chartSize.height);
      if (selected === null) ctx.clearRect(0, 0, ui.chart.width, ui.chart.height);
      else drawn = drawChart(ctx, chartSeries, now, CHART_BARS * chartSeries.barMs, candles, colors, ratio);
      setChartTitle();
    }
    if (bookDirty) drawBook();
  } else {
    pending = chartDirty || bookDirty;
    for (const row of rows.values()) pending ||= row.dirty || row.flash !== "";
  }
  if (frameTime - lastSparkPass >= SPARK_EVERY_MS) {
    lastSparkPass = frameTime;
    for (const row of rows.values()) {
      if (row.sparkDirty) {
        row.sparkDirty = false;
        row.sparkBars = drawSparkline(row.spark, row.series, now, SPARK_S, colors);
      }
    }
  } else {
    for (const row of rows.values()) pending ||= row.sparkDirty;
  }
  if (frameTime - lastStatus >= STATUS_EVERY_MS) {
    lastStatus = frameTime;
    drawStatus(now);
  }
  if (pending) schedule();
}

// ---- wiring ---------------------------------------------------------------------------

function suggest() {
  const prefix = ui.addInput.value.trim().toUpperCase();
  const options = [];
  for (const s of known) {
    if (options.length >= MAX_SUGGESTIONS) break;
    if (s.toUpperCase().startsWith(prefix) && !rows.has(s)) {
      const option = document.createElement("option");
      option.value = s;
      options.push(option);
    }
  }
  ui.suggestions.replaceChildren(...options);
}

function setView(toCandles) {
  candles = toCandles;
  ui.viewLine.setAttribute("aria-pressed", String(!candles));
  ui.viewCandles.setAttribute("aria-pressed", String(candles));
  chartDirty = true;
  schedule();
}

const params = new URLSearchParams(location.search);
const client = createClient();
if (client !== null) start();

/** The page's client, from the address's parameters; null (and why, shown) when they are bad. */
function createClient() {
  try {
    return new TickerClient("/ws", {
      mode: params.get("mode"),
      maxHz: params.get("max_hz"),
      token: params.get("token"),
      history: CHART_BARS,
    });
  } catch (err) {
    ui.state.textContent = "not connected";
    ui.state.dataset.state = "closed";
    say(`Check the page address: ${err.message}`);
    return null;
  }
}

function start() {
  for (const symbol of initialSymbols(params).slice(0, MAX_ROWS)) {
    if (!rows.has(symbol)) addRow(symbol);
  }
  ui.empty.hidden = rows.size > 0;
  select(rows.keys().next().value ?? null);
  client.subscribe([...rows.keys()]);
  saveWatchlist();

  client.on("ticks", (ticks) => apply(ticks, true));
  client.on("snapshot", (ticks) => apply(ticks, false));
  client.on("epoch", onEpoch);
  client.on("candles", onCandles);
  client.on("book", onBook);
  client.on("error", onError);
  client.on("symbolstatus", (symbols) => {
    for (const symbol of Object.keys(symbols)) showStatus(symbol);
  });
  client.on("status", ({ status, code }) => {
    ui.tokenForm.hidden = !(status === "closed" && code === 1008);
    if (!ui.tokenForm.hidden) say("The server refused the connection: enter a token.");
    lastStatus = -Infinity; // show the change on the next frame
    schedule();
  });
  client.on("welcome", () => {
    client.list().then(
      (symbols) => {
        known = symbols;
        suggest();
      },
      () => {}, // the connection dropped: the next welcome asks again
    );
  });

  ui.addForm.addEventListener("submit", (event) => {
    event.preventDefault();
    addSymbol(ui.addInput.value);
  });
  ui.addInput.addEventListener("input", suggest);
  ui.tokenForm.addEventListener("submit", (event) => {
    event.preventDefault();
    client.token = ui.tokenInput.value;
    ui.tokenInput.value = "";
    ui.tokenForm.hidden = true;
    say("");
    client.reconnect();
  });
  ui.viewLine.addEventListener("click", () => setView(false));
  ui.viewCandles.addEventListener("click", () => setView(true));
  ui.interval.addEventListener("change", () => {
    interval = ui.interval.value;
    followChart();
    drawn = null;
    setChartTitle();
    chartDirty = true;
    schedule();
  });
  ui.chart.addEventListener("pointermove", showCrosshair);
  ui.chart.addEventListener("pointerleave", () => {
    ui.crosshair.hidden = true;
  });
  matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => {
    colors = readColors(document.documentElement);
    for (const row of rows.values()) row.sparkDirty = true;
    chartDirty = bookDirty = true;
    schedule();
  });
  new ResizeObserver(([entry]) => {
    depthSize = { width: entry.contentRect.width, height: entry.contentRect.height };
    bookDirty = true;
    schedule();
  }).observe(ui.depth);
  new ResizeObserver(([entry]) => {
    chartSize = { width: entry.contentRect.width, height: entry.contentRect.height };
    chartDirty = true;
    schedule();
  }).observe(ui.chart);
  setInterval(() => {
    // the status bar moves on its own: the countdown, the rates going stale; the charts scroll
    lastStatus = -Infinity;
    chartDirty = true;
    for (const row of rows.values()) row.sparkDirty = true;
    schedule();
  }, 1000);

  /** For debugging from the console, and for the tests (`chart`: what the chart last drew). */
  window.tickerDashboard = {
    client,
    rows,
    get chart() {
      return drawn;
    },
    get chartSeries() {
      return chartSeries;
    },
    get book() {
      return bookShown;
    },
  };
  client.connect();
}
