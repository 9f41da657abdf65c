// Ticks per second and end-to-end latency (now - t) over the last few seconds, in fixed
// memory: per-second counts and maxima, and a ring of the most recent latency samples.

const SAMPLES = 2048;

export class RollingStats {
  constructor(windowS = 5) {
    this.windowS = windowS;
    const slots = windowS + 1; // the seconds of the window plus the current one
    this.second = new Float64Array(slots).fill(-1);
    this.count = new Float64Array(slots);
    this.max = new Float64Array(slots);
    this.latency = new Float64Array(SAMPLES);
    this.at = new Float64Array(SAMPLES); // arrival time of each sample, ms
    this.next = 0;
    this.firstSecond = -1;
    this.scratch = new Float64Array(SAMPLES);
  }

  #slot(second) {
    const i = second % this.second.length;
    if (this.second[i] !== second) {
      this.second[i] = second;
      this.count[i] = 0;
      this.max[i] = -Infinity;
    }
    return i;
  }

  /** Ticks with event times `tMicros` (microseconds) that arrived at `nowMs`. */
  record(ticks, nowMs) {
    const second = Math.floor(nowMs / 1000);
    if (this.firstSecond < 0) this.firstSecond = second;
    const i = this.#slot(second);
    this.count[i] += ticks.length;
    let max = this.max[i];
    for (let k = 0; k < ticks.length; k++) {
      const latency = nowMs - ticks[k].t / 1000;
      if (latency > max) max = latency;
      const j = this.next;
      this.latency[j] = latency;
      this.at[j] = nowMs;
      this.next = (j + 1) % SAMPLES;
    }
    this.max[i] = max;
  }

  /** {rate, p50, max} over the last `windowS` complete seconds (latencies in ms); each is
   *  null until there is something to tell: a rate of 0 before the first whole second
   *  would read as a dead feed. */
  summary(nowMs) {
    const current = Math.floor(nowMs / 1000);
    const from = Math.max(current - this.windowS, this.firstSecond);
    let ticks = 0;
    let max = -Infinity;
    for (let i = 0; i < this.second.length; i++) {
      const s = this.second[i];
      if (s >= from && s <= current) {
        max = Math.max(max, this.max[i]);
        if (s < current) ticks += this.count[i];
      }
    }
    const seconds = this.firstSecond < 0 ? 0 : current - from;
    const rate = seconds > 0 ? ticks / seconds : null;
    const since = nowMs - this.windowS * 1000;
    let n = 0;
    for (let j = 0; j < SAMPLES; j++) {
      if (this.at[j] >= since && this.at[j] > 0) this.scratch[n++] = this.latency[j];
    }
    if (n === 0) return { rate, p50: null, max: null };
    const sorted = this.scratch.subarray(0, n).sort();
    return { rate, p50: sorted[n >> 1], max };
  }
}
