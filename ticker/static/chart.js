// Price history and its drawing: a bounded series of one-second OHLC bars per symbol,
// drawn as a sparkline or as the large chart (line or candles) on a canvas.

export const BAR_MS = 1000;
const MIN_SPAN_S = 10; // the time axis spans at least this much

/** The last `capacity` one-second bars of a symbol, in preallocated arrays: memory stays
 *  the same however long the page runs. */
export class Series {
  constructor(capacity) {
    this.capacity = capacity;
    this.time = new Float64Array(capacity); // bar start, ms since the Unix epoch
    this.open = new Float64Array(capacity);
    this.high = new Float64Array(capacity);
    this.low = new Float64Array(capacity);
    this.close = new Float64Array(capacity);
    this.head = -1; // index of the newest bar
    this.length = 0;
  }

  clear() {
    this.head = -1;
    this.length = 0;
  }

  /** Add a trade at `tMs`: it updates the current bar or starts the next one. */
  add(tMs, price) {
    const start = tMs - (tMs % BAR_MS);
    const h = this.head;
    if (h >= 0 && start === this.time[h]) {
      if (price > this.high[h]) this.high[h] = price;
      if (price < this.low[h]) this.low[h] = price;
      this.close[h] = price;
      return;
    }
    if (h >= 0 && start < this.time[h]) return; // older than the newest bar: too late to draw
    const i = (h + 1) % this.capacity;
    this.head = i;
    this.time[i] = start;
    this.open[i] = this.high[i] = this.low[i] = this.close[i] = price;
    if (this.length < this.capacity) this.length += 1;
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

/** Where the time axis starts: `seconds` ago, or later while the history is younger than
 *  that (a new symbol's line fills the width rather than a sliver at its right end). */
function visibleFrom(series, nowMs, seconds) {
  const full = nowMs - seconds * BAR_MS;
  if (series.length === 0) return full;
  const oldest = series.time[series.at(series.length - 1)];
  return Math.max(full, Math.min(oldest, nowMs - MIN_SPAN_S * BAR_MS));
}

/** A line through the closes of the `n` newest bars, oldest first, at mid-bar. */
function strokeCloses(ctx, series, n, x, y) {
  ctx.beginPath();
  for (let k = n - 1; k >= 0; k--) {
    const i = series.at(k);
    const px = x(series.time[i] + BAR_MS / 2);
    const py = y(series.close[i]);
    if (k === n - 1) ctx.moveTo(px, py);
    else ctx.lineTo(px, py);
  }
  ctx.stroke();
}

/** A sparkline of the last `seconds` of closes, coloured by the direction over that time. */
export function drawSparkline(ctx, series, nowMs, seconds, colors) {
  const { width, height } = ctx.canvas;
  ctx.clearRect(0, 0, width, height);
  const from = visibleFrom(series, nowMs, seconds);
  const r = range(series, from);
  if (r === null) return;
  const x = (t) => ((t - from) / (nowMs - from)) * (width - 2) + 1;
  const y = (p) => height - 2 - ((p - r.lo) / (r.hi - r.lo)) * (height - 4);
  const newest = series.at(0);
  const oldest = series.at(r.n - 1);
  ctx.strokeStyle = series.close[newest] >= series.open[oldest] ? colors.up : colors.down;
  ctx.lineWidth = Math.max(1, width / 96);
  strokeCloses(ctx, series, r.n, x, y);
}

/** The large chart: price line or candles over the last `seconds`, with a price scale. */
export function drawChart(ctx, series, nowMs, seconds, candles, colors, ratio) {
  const { width, height } = ctx.canvas;
  ctx.clearRect(0, 0, width, height);
  const font = 12 * ratio;
  ctx.font = `${font}px system-ui, sans-serif`;
  const from = visibleFrom(series, nowMs, seconds);
  const r = range(series, from);
  if (r === null) {
    ctx.fillStyle = colors.muted;
    ctx.fillText("waiting for ticks...", 12 * ratio, 24 * ratio);
    return;
  }
  const pad = 8 * ratio;
  const scaleW = 70 * ratio;
  const plotW = width - scaleW - pad;
  const plotH = height - 2 * pad;
  const span = r.hi - r.lo;
  const lo = r.lo - span * 0.05;
  const hi = r.hi + span * 0.05;
  const x = (t) => pad + ((t - from) / (nowMs - from)) * plotW;
  const y = (p) => pad + (1 - (p - lo) / (hi - lo)) * plotH;

  ctx.lineWidth = ratio;
  ctx.strokeStyle = colors.line;
  ctx.fillStyle = colors.muted;
  ctx.textBaseline = "middle";
  const digits = Math.min(6, Math.max(2, Math.ceil(-Math.log10((hi - lo) / 4))));
  for (let g = 0; g <= 4; g++) {
    const p = lo + ((hi - lo) * g) / 4;
    const gy = Math.round(y(p)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(pad, gy);
    ctx.lineTo(pad + plotW, gy);
    ctx.stroke();
    ctx.fillText(p.toFixed(digits), pad + plotW + 6 * ratio, gy);
  }

  const barW = ((plotW * BAR_MS) / (nowMs - from)) * 0.7;
  if (candles) {
    for (let k = r.n - 1; k >= 0; k--) {
      const i = series.at(k);
      const up = series.close[i] >= series.open[i];
      ctx.strokeStyle = ctx.fillStyle = up ? colors.up : colors.down;
      const cx = x(series.time[i] + BAR_MS / 2);
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
  const last = series.close[series.at(0)];
  ctx.fillStyle = colors.fg;
  ctx.fillText(last.toFixed(digits), pad + plotW + 6 * ratio, y(last));
}
