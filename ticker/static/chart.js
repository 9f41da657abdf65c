// Price history and its drawing: a bounded series of OHLCV bars (one-second bars built
// from ticks for the sparklines, the server's candles for the large chart), drawn as a
// sparkline or as the large chart (line or candles) on a canvas.

export const BAR_MS = 1000;
const MIN_SPAN_BARS = 10; // the time axis spans at least this many bars

/** The last `capacity` bars of `barMs` each of a symbol, in preallocated arrays: memory
 *  stays the same however long the page runs. */
export class Series {
  constructor(capacity, barMs = BAR_MS) {
    this.capacity = capacity;
    this.barMs = barMs;
    this.time = new Float64Array(capacity); // bar start, ms since the Unix epoch
    this.open = new Float64Array(capacity);
    this.high = new Float64Array(capacity);
    this.low = new Float64Array(capacity);
    this.close = new Float64Array(capacity);
    this.volume = new Float64Array(capacity);
    this.head = -1; // index of the newest bar
    this.length = 0;
  }

  clear() {
    this.head = -1;
    this.length = 0;
  }

  /** Add a trade at `tMs`: it updates the current bar or starts the next one. */
  add(tMs, price) {
    const start = tMs - (tMs % this.barMs);
    const h = this.head;
    if (h >= 0 && start === this.time[h]) {
      if (price > this.high[h]) this.high[h] = price;
      if (price < this.low[h]) this.low[h] = price;
      this.close[h] = price;
      return;
    }
    if (h >= 0 && start < this.time[h]) return; // older than the newest bar: too late to draw
    this.push(start, price, price, price, price);
  }

  /** A bar of the server's (`{ts: µs, o, h, l, c, v}`): it replaces the newest bar when it
   *  starts at the same time (an open bar that changed), else comes after it; an older one
   *  (history the series already has) is ignored. */
  put(bar) {
    const start = bar.ts / 1000;
    const h = this.head;
    if (h >= 0 && start < this.time[h]) return;
    if (h < 0 || start > this.time[h]) this.push(start, bar.o, bar.h, bar.l, bar.c, bar.v);
    else {
      this.high[h] = bar.h;
      this.low[h] = bar.l;
      this.close[h] = bar.c;
      this.volume[h] = bar.v;
    }
  }

  /** The bar that covers `tMs`, as {time, open, high, low, close, volume}, or null. */
  barAt(tMs) {
    for (let k = 0; k < this.length; k++) {
      const i = this.at(k);
      if (this.time[i] <= tMs) {
        if (tMs >= this.time[i] + this.barMs) return null;
        const { time, open, high, low, close, volume } = this;
        return { time: time[i], open: open[i], high: high[i], low: low[i], close: close[i], volume: volume[i] };
      }
    }
    return null;
  }

  /** Append a whole bar as the newest (the oldest drops off when full). */
  push(start, open, high, low, close, volume = 0) {
    const i = (this.head + 1) % this.capacity;
    this.head = i;
    this.time[i] = start;
    this.open[i] = open;
    this.high[i] = high;
    this.low[i] = low;
    this.close[i] = close;
    this.volume[i] = volume;
    if (this.length < this.capacity) this.length += 1;
  }

  /** Put the older trades of `ticks` ({t: µs, p}, oldest first: the server's history)
   *  before the bars already here, which stay as they are: live bars are never redrawn
   *  from history, and what does not fit the capacity drops off the old end. */
  backfill(ticks) {
    const firstLive = this.length > 0 ? this.time[this.at(this.length - 1)] : Infinity;
    const merged = new Series(this.capacity, this.barMs);
    for (const tick of ticks) {
      const tMs = tick.t / 1000;
      if (tMs - (tMs % this.barMs) < firstLive) merged.add(tMs, tick.p);
    }
    for (let k = this.length - 1; k >= 0; k--) {
      const i = this.at(k);
      merged.push(this.time[i], this.open[i], this.high[i], this.low[i], this.close[i]);
    }
    for (const name of ["time", "open", "high", "low", "close", "volume"]) this[name].set(merged[name]);
    this.head = merged.head;
    this.length = merged.length;
  }

  /** Ring index of the k-th newest bar (0 = the newest). */
  at(k) {
    return (this.head - k + this.capacity) % this.capacity;
  }
}

/** Colours from the page's CSS variables (read again when the color scheme changes). */
export function readColors(element) {
  const style = getComputedStyle(element);
  const v = (name) => style.getPropertyValue(name).trim();
  return { fg: v("--fg"), muted: v("--muted"), line: v("--line"), accent: v("--accent"), up: v("--up"), down: v("--down") };
}

/** Make the canvas's backing store match its CSS size (crisp on high-DPI screens). The
 *  size comes from a ResizeObserver: reading clientWidth here would force a layout. */
export function fitCanvas(canvas, cssWidth, cssHeight) {
  const ratio = globalThis.devicePixelRatio || 1;
  const width = Math.max(1, Math.round(cssWidth * ratio));
  const height = Math.max(1, Math.round(cssHeight * ratio));
  if (canvas.width !== width || canvas.height !== height) {
    canvas.width = width;
    canvas.height = height;
  }
  return ratio;
}

/** Low and high of the bars newer than `fromMs` (the k-th newest first), or null. */
function range(series, fromMs) {
  let lo = Infinity;
  let hi = -Infinity;
  let n = 0;
  for (let k = 0; k < series.length; k++) {
    const i = series.at(k);
    if (series.time[i] < fromMs) break;
    if (series.low[i] < lo) lo = series.low[i];
    if (series.high[i] > hi) hi = series.high[i];
    n += 1;
  }
  if (n === 0) return null;
  if (hi === lo) {
    hi += 0.005 * Math.abs(hi) || 1;
    lo -= 0.005 * Math.abs(lo) || 1;
  }
  return { lo, hi, n };
}

/** Where the time axis starts: `spanMs` ago, or later while the history is younger than
 *  that (a new symbol's line fills the width rather than a sliver at its right end). */
function visibleFrom(series, nowMs, spanMs) {
  const full = nowMs - spanMs;
  if (series.length === 0) return full;
  const oldest = series.time[series.at(series.length - 1)];
  return Math.max(full, Math.min(oldest, nowMs - MIN_SPAN_BARS * series.barMs));
}

/** A line through the closes of the `n` newest bars, oldest first, at mid-bar. */
function strokeCloses(ctx, series, n, x, y) {
  ctx.beginPath();
  for (let k = n - 1; k >= 0; k--) {
    const i = series.at(k);
    const px = x(series.time[i] + series.barMs / 2);
    const py = y(series.close[i]);
    if (k === n - 1) ctx.moveTo(px, py);
    else ctx.lineTo(px, py);
  }
  ctx.stroke();
}

/** A sparkline of the last `seconds` of closes, coloured by the direction over that time;
 *  returns how many bars it drew. */
export function drawSparkline(ctx, series, nowMs, seconds, colors) {
  const { width, height } = ctx.canvas;
  ctx.clearRect(0, 0, width, height);
  const from = visibleFrom(series, nowMs, seconds * 1000);
  const r = range(series, from);
  if (r === null) return 0;
  const x = (t) => ((t - from) / (nowMs - from)) * (width - 2) + 1;
  const y = (p) => height - 2 - ((p - r.lo) / (r.hi - r.lo)) * (height - 4);
  const newest = series.at(0);
  const oldest = series.at(r.n - 1);
  ctx.strokeStyle = series.close[newest] >= series.open[oldest] ? colors.up : colors.down;
  ctx.lineWidth = Math.max(1, width / 96);
  strokeCloses(ctx, series, r.n, x, y);
  return r.n;
}

/** At most `count` round price levels over [lo, hi]: a step of 1, 2 or 5 times a power of
 *  ten, and the decimals that step needs, so no two labels read the same. */
export function priceTicks(lo, hi, count) {
  const raw = (hi - lo) / Math.max(1, count);
  let exponent = Math.floor(Math.log10(raw));
  let mantissa = [1, 2, 5, 10].find((m) => m * 10 ** exponent >= raw);
  if (mantissa === 10) {
    mantissa = 1;
    exponent += 1;
  }
  const step = mantissa * 10 ** exponent;
  const digits = Math.max(0, -exponent);
  const values = [];
  for (let k = Math.ceil(lo / step); k * step <= hi; k++) values.push(k * step);
  return { values, digits };
}

const TIME_STEPS_S = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600];

/** Round times over [fromMs, toMs] at most `count` of them: whole multiples of a step of
 *  1 s to 10 min, the smallest one that fits. */
export function timeTicks(fromMs, toMs, count) {
  const spanS = (toMs - fromMs) / 1000;
  const stepS = TIME_STEPS_S.find((s) => spanS / s <= count) ?? TIME_STEPS_S.at(-1);
  const step = stepS * 1000;
  const times = [];
  for (let k = Math.ceil(fromMs / step); k * step <= toMs; k++) times.push(k * step);
  return times;
}

const two = (n) => String(n).padStart(2, "0");

/** HH:MM:SS of a time in ms, in the browser's time zone. */
export function hms(tMs) {
  const d = new Date(tMs);
  return `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
}

/** The large chart: price line or candles over the last `spanMs`, with a price scale on
 *  the right and a time axis below. Returns what it drew (span, bars, axis labels, and the
 *  plot's left and width in canvas pixels for a crosshair) so the page can title it and
 *  the tests can read it; null when there was nothing to draw. */
export function drawChart(ctx, series, nowMs, spanMs, candles, colors, ratio) {
  const { width, height } = ctx.canvas;
  ctx.clearRect(0, 0, width, height);
  const font = 12 * ratio;
  ctx.font = `${font}px system-ui, sans-serif`;
  const from = visibleFrom(series, nowMs, spanMs);
  const r = range(series, from);
  if (r === null) {
    ctx.fillStyle = colors.muted;
    ctx.fillText("waiting for ticks...", 12 * ratio, 24 * ratio);
    return null;
  }
  const pad = 8 * ratio;
  const scaleW = 70 * ratio;
  const axisH = font + 8 * ratio;
  const plotW = width - scaleW - pad;
  const plotH = height - 2 * pad - axisH;
  const span = r.hi - r.lo;
  const lo = r.lo - span * 0.05;
  const hi = r.hi + span * 0.05;
  const x = (t) => pad + ((t - from) / (nowMs - from)) * plotW;
  const y = (p) => pad + (1 - (p - lo) / (hi - lo)) * plotH;
  const last = series.close[series.at(0)];
  const { values, digits } = priceTicks(lo, hi, Math.max(2, Math.floor(plotH / (3 * font))));
  const lastText = last.toFixed(Math.max(2, digits));

  ctx.lineWidth = ratio;
  ctx.strokeStyle = colors.line;
  ctx.fillStyle = colors.muted;
  ctx.textBaseline = "middle";
  const yLabels = [];
  for (const p of values) {
    const gy = Math.round(y(p)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(pad, gy);
    ctx.lineTo(pad + plotW, gy);
    ctx.stroke();
    const text = p.toFixed(digits);
    // the last price has its own label: a grid label under it would be unreadable
    if (Math.abs(gy - y(last)) < 1.2 * font || text === lastText) continue;
    ctx.fillText(text, pad + plotW + 6 * ratio, gy);
    yLabels.push(text);
  }

  ctx.textBaseline = "top";
  ctx.textAlign = "center";
  const xLabels = [];
  const labelW = ctx.measureText("00:00:00").width;
  for (const t of timeTicks(from, nowMs, Math.max(1, Math.floor(plotW / (2 * labelW))))) {
    const gx = Math.round(x(t)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(gx, pad + plotH);
    ctx.lineTo(gx, pad + plotH + 4 * ratio);
    ctx.stroke();
    if (gx - labelW / 2 < 0 || gx + labelW / 2 > pad + plotW) continue; // clear of the price scale
    ctx.fillText(hms(t), gx, pad + plotH + 5 * ratio);
    xLabels.push({ t, text: hms(t) });
  }
  ctx.textAlign = "start";
  ctx.textBaseline = "middle";

  const barW = ((plotW * series.barMs) / (nowMs - from)) * 0.7;
  if (candles) {
    for (let k = r.n - 1; k >= 0; k--) {
      const i = series.at(k);
      const up = series.close[i] >= series.open[i];
      ctx.strokeStyle = ctx.fillStyle = up ? colors.up : colors.down;
      const cx = x(series.time[i] + series.barMs / 2);
      ctx.beginPath();
      ctx.moveTo(cx, y(series.high[i]));
      ctx.lineTo(cx, y(series.low[i]));
      ctx.stroke();
      const top = y(Math.max(series.open[i], series.close[i]));
      const bottom = y(Math.min(series.open[i], series.close[i]));
      ctx.fillRect(cx - barW / 2, top, barW, Math.max(ratio, bottom - top));
    }
  } else {
    ctx.strokeStyle = colors.accent;
    ctx.lineWidth = 2 * ratio;
    strokeCloses(ctx, series, r.n, x, y);
  }
  ctx.fillStyle = colors.fg;
  ctx.fillText(lastText, pad + plotW + 6 * ratio, y(last));
  yLabels.push(lastText);
  return { fromMs: from, toMs: nowMs, bars: r.n, xLabels, yLabels, left: pad, width: plotW, ratio };
}
