// The selected symbol's order book on the dashboard: a depth ladder (asks above bids, each
// size with a bar, the spread between) and a depth chart (cumulative size per side), both
// drawn from a LocalBook (book.js) that TickerClient keeps.
//
// The ladder's rows are made once; a pass sets only the texts and bars that changed (a
// bar is a scaled box: no layout), so a busy book costs a few text nodes per pass.

import { canonical } from "./book.js";

export const LADDER_LEVELS = 10; // rows per side

/** A price or size for reading: 10 significant digits, no exponent, no float noise
 *  (0.1 + 0.2 shows as 0.3; 1.305e-05 as 0.00001305). */
export function readable(x) {
  return canonical(Number(x.toPrecision(10)));
}

/** The ladder's rows in a table: `asks` and `bids` are its two tbody elements, `spread`
 *  the cell between them. */
export class Ladder {
  constructor(asks, bids, spread) {
    this.spread = spread;
    this.shownSpread = null;
    // asks: the best at the bottom, next to the spread; bids: the best at the top
    this.asks = makeRows(asks, "ask").reverse();
    this.bids = makeRows(bids, "bid");
  }

  /** Show `book` (a LocalBook, or null: no book yet); returns how many levels a side. */
  draw(book) {
    const bids = book?.bids ?? null;
    const asks = book?.asks ?? null;
    let largest = 0;
    for (const side of [bids, asks]) {
      const n = Math.min(LADDER_LEVELS, side?.length ?? 0);
      for (let i = 0; i < n; i++) largest = Math.max(largest, side.sizes.get(side.prices[i]));
    }
    const decimals = Math.max(decimalsOf(bids), decimalsOf(asks));
    showSide(this.bids, bids, largest, decimals);
    showSide(this.asks, asks, largest, decimals);
    let text = "";
    if (bids?.length && asks?.length) text = `spread ${readable(asks.prices[0] - bids.prices[0])}`;
    if (text !== this.shownSpread) this.spread.textContent = this.shownSpread = text;
    return { bids: Math.min(LADDER_LEVELS, bids?.length ?? 0), asks: Math.min(LADDER_LEVELS, asks?.length ?? 0) };
  }
}

function makeRows(tbody, cls) {
  const rows = [];
  for (let i = 0; i < LADDER_LEVELS; i++) {
    const tr = document.createElement("tr");
    tr.className = cls;
    tr.innerHTML = '<td class="num price"></td><td class="num size"></td><td class="depth-bar"><span></span></td>';
    tbody.append(tr);
    const [price, size, bar] = tr.children;
    rows.push({ price, size, bar: bar.firstElementChild, shown: ["", "", 0] });
  }
  return rows;
}

/** The most decimals among a side's shown prices, so the ladder's prices line up. */
function decimalsOf(side) {
  let most = 0;
  const n = Math.min(LADDER_LEVELS, side?.length ?? 0);
  for (let i = 0; i < n; i++) {
    const text = readable(side.prices[i]);
    const dot = text.indexOf(".");
    if (dot >= 0) most = Math.max(most, text.length - dot - 1);
  }
  return most;
}

/** `text` (a readable price) with `decimals` digits after the point. */
function padded(text, decimals) {
  if (decimals === 0) return text;
  const [whole, fraction = ""] = text.split(".");
  return `${whole}.${fraction.padEnd(decimals, "0")}`;
}

function showSide(rows, side, largest, decimals) {
  for (let i = 0; i < rows.length; i++) {
    const row = rows[i];
    const p = side !== null && i < side.length ? side.prices[i] : null;
    const s = p === null ? 0 : side.sizes.get(p);
    const price = p === null ? "" : padded(readable(p), decimals);
    const size = p === null ? "" : readable(s);
    const scale = largest > 0 ? Math.round((1000 * s) / largest) / 1000 : 0;
    const shown = row.shown;
    if (shown[0] !== price) row.price.textContent = shown[0] = price;
    if (shown[1] !== size) row.size.textContent = shown[1] = size;
    if (shown[2] !== scale) {
      shown[2] = scale;
      row.bar.style.transform = `scaleX(${scale})`;
    }
  }
}

/** The depth chart: price across, cumulative size up, bids (left of the spread) and asks
 *  (right) as filled steps, the prices of both ends and the total labelled. Returns what
 *  it drew ({levels, maxCumulative, labels}) or null. */
export function drawDepth(ctx, book, colors, ratio) {
  const { width, height } = ctx.canvas;
  ctx.clearRect(0, 0, width, height);
  if (book === null || (book.bids.length === 0 && book.asks.length === 0)) return null;
  const pad = 8 * ratio;
  const labelHeight = 16 * ratio; // the price labels along the bottom
  const bids = book.bids;
  const asks = book.asks;
  const lo = bids.length ? bids.prices[bids.length - 1] : asks.prices[0];
  const hi = asks.length ? asks.prices[asks.length - 1] : bids.prices[0];
  const span = hi - lo || 1;
  const total = (side) => {
    let sum = 0;
    for (const p of side.prices) sum += side.sizes.get(p);
    return sum;
  };
  const top = Math.max(total(bids), total(asks)) || 1;
  const x = (p) => pad + ((p - lo) / span) * (width - 2 * pad);
  const y = (v) => height - labelHeight - (v / top) * (height - labelHeight - 2 * pad);
  fillSide(ctx, bids, x, y, colors.up);
  fillSide(ctx, asks, x, y, colors.down);
  const labels = [readable(lo), readable(hi), readable(top)];
  ctx.fillStyle = colors.muted;
  ctx.font = `${11 * ratio}px system-ui, sans-serif`;
  ctx.textBaseline = "bottom";
  ctx.textAlign = "left";
  ctx.fillText(labels[0], pad, height - 2 * ratio);
  ctx.textAlign = "right";
  ctx.fillText(labels[1], width - pad, height - 2 * ratio);
  ctx.textBaseline = "top";
  ctx.textAlign = "left";
  ctx.fillText(`total ${labels[2]}`, pad, pad);
  return { levels: bids.length + asks.length, maxCumulative: top, labels };
}

/** One side as a step area from its best price outwards, at the cumulative size. */
function fillSide(ctx, side, x, y, color) {
  if (side.length === 0) return;
  ctx.beginPath();
  ctx.moveTo(x(side.prices[0]), y(0));
  let sum = 0;
  for (const p of side.prices) {
    ctx.lineTo(x(p), y(sum));
    sum += side.sizes.get(p);
    ctx.lineTo(x(p), y(sum));
  }
  ctx.lineTo(x(side.prices[side.length - 1]), y(0));
  ctx.closePath();
  ctx.globalAlpha = 0.25;
  ctx.fillStyle = color;
  ctx.fill();
  ctx.globalAlpha = 1;
  ctx.strokeStyle = color;
  ctx.lineWidth = Math.max(1, ctx.canvas.width / 600);
  ctx.stroke();
}
