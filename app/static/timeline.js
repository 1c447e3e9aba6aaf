// Over time: each window's values as lines against seconds, with the windows that held no speech
// shaded. Two kinds: the eight emotion probabilities on 0..1, and arousal and valence on -1..+1
// (the probabilities on Russell's circumplex, see docs/api.md). Plain SVG, drawn here (no chart
// library to fetch). Either the raw windows or a smoothed view of them (see smoothedValues).
"use strict";

const TIMELINE_COLOURS = {
  neutral: "#7f7f7f",
  calm: "#56b4e9",
  happy: "#e69f00",
  sad: "#0072b2",
  angry: "#d55e00",
  fearful: "#cc79a7",
  disgust: "#009e73",
  surprised: "#b8a800",
};
// Orange and purple: told apart with any colour vision; valence is dashed as well.
const AFFECT_SERIES = [
  { key: "arousal", colour: "#e66100", name: "arousal (-1 sleepy, +1 aroused)" },
  { key: "valence", colour: "#5d3a9b", name: "valence (-1 unpleasant, +1 pleasant)", dash: "6 3" },
];
const SVG_NS = "http://www.w3.org/2000/svg";
const TIMELINE_MAX_POINTS = 2400; // 20 minutes of 0.5 s hops; older points are dropped

class Timeline {
  // container: an element to draw into; series: [{key, colour, name, dash?}], the lines;
  // scale: {min, max, ticks, height, title}, the vertical axis.
  constructor(container, series, scale) {
    this.container = container;
    this.series = series;
    this.scale = scale;
    this.points = []; // {t, spanS, values: number[]}, in series order, t the window's centre
    this.smoothed = false;
    this.silences = []; // [start_s, end_s]
    this.width = 640;
    this.height = scale.height;
    this.margin = { left: 36, right: 18, top: 10, bottom: 26 }; // right: room for the unit
    this.durationS = 0; // an upload's length: the axis spans all of it, not the windows alone
    this.legend();
    this.svg = document.createElementNS(SVG_NS, "svg");
    this.svg.setAttribute("viewBox", `0 0 ${this.width} ${this.height}`);
    this.svg.setAttribute("role", "img");
    this.svg.setAttribute("aria-label", scale.title);
    this.container.append(this.svg);
    this.render();
  }

  // The eight probabilities of each window, 0..1, one line per label.
  static emotions(container, labels) {
    const series = labels.map((label) => ({ key: label, colour: TIMELINE_COLOURS[label], name: label }));
    const scale = { min: 0, max: 1, ticks: [0, 0.25, 0.5, 0.75, 1], height: 220, title: "Probability of each emotion over time" };
    return new Timeline(container, series, scale);
  }

  // Arousal and valence of each window, -1..+1, under the emotions' timeline.
  static affect(container) {
    const scale = { min: -1, max: 1, ticks: [-1, -0.5, 0, 0.5, 1], height: 140, title: "Arousal and valence over time" };
    return new Timeline(container, AFFECT_SERIES, scale);
  }

  legend() {
    const legend = document.createElement("div");
    legend.className = "timeline-legend";
    for (const { colour, name, dash } of this.series) {
      const item = document.createElement("span");
      item.className = "timeline-key";
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      // Set through the style object, not a style attribute: the page's content security
      // policy allows no inline styles.
      swatch.style.background = dash
        ? `linear-gradient(90deg, ${colour} 60%, transparent 60%) 0 0 / 0.45rem 100%`
        : colour;
      item.append(swatch, name);
      legend.append(item);
    }
    this.container.append(legend);
  }

  clear(durationS = 0) {
    this.points = [];
    this.silences = [];
    this.durationS = durationS;
    this.render();
  }

  // One window: its span in seconds and its values ({key: value} or null for silence).
  add(startS, endS, byKey) {
    if (byKey) {
      const values = this.series.map(({ key }) => Number(byKey[key] ?? 0));
      this.points.push({ t: (startS + endS) / 2, spanS: endS - startS, endS, values });
      if (this.points.length > TIMELINE_MAX_POINTS) this.points.shift();
    } else {
      this.silences.push([startS, endS]);
    }
    this.render();
  }

  // Draw the smoothed view (true) or the raw windows (false).
  setSmoothed(on) {
    this.smoothed = on;
    this.render();
  }

  // Why this smoothing: neighbouring windows overlap (an upload's by half, 1.75 of 3.5 s, at
  // the default SER_SEGMENT_HOP_S), so much of the zig-zag between them is the model's jitter,
  // not a change in the voice. Each point becomes the mean of every window whose centre lies
  // within half a window of its own, that is of every window that heard the point's centre
  // instant (at the default hop: the window and its two neighbours; at a 0.5 s hop, seven): a
  // centred moving average one window wide. The windows themselves set its span, so there is no
  // constant to tune; it is on the scale of the live bars' smoothing (an exponential average
  // with a 1.5 s time constant) but centred, so it does not lag. A mean of probabilities still
  // sums to 1, and arousal and valence are linear in the probabilities, so the smoothed affect
  // lines are the affect of the smoothed emotions. (A stacked-area view was the alternative: it
  // hides how the smaller emotions move under the large ones, and reads unlike the live lines.)
  smoothedValues() {
    // Within half a window, boundary included (10 ms, a feature hop, absorbs the rounding of
    // the served start_s/end_s): at a hop of half a window the neighbours are exactly there.
    const halfS = Math.max(0, ...this.points.map((p) => p.spanS)) / 2 + 0.01;
    let first = 0;
    let last = 0; // the points within halfS of point i are first..last-1 (sorted by t)
    return this.points.map(({ t }) => {
      while (this.points[first].t < t - halfS) first++;
      while (last < this.points.length && this.points[last].t <= t + halfS) last++;
      const sums = this.series.map(() => 0);
      for (let j = first; j < last; j++) {
        this.points[j].values.forEach((v, k) => (sums[k] += v));
      }
      return sums.map((sum) => sum / (last - first));
    });
  }

  render() {
    const { left, right, top, bottom } = this.margin;
    const plotW = this.width - left - right;
    const plotH = this.height - top - bottom;
    // To the end of the last window (not its centre) or of the upload, whichever is later.
    const lastT = Math.max(
      1,
      this.durationS,
      ...this.points.map((p) => p.endS),
      ...this.silences.map((s) => s[1]),
    );
    const firstT = 0;
    const x = (t) => left + ((t - firstT) / (lastT - firstT)) * plotW;
    const { min, max, ticks } = this.scale;
    const y = (v) => top + ((max - v) / (max - min)) * plotH;
    const parts = [];
    for (const [start, end] of this.silences) {
      const x0 = Math.max(left, x(start));
      parts.push(
        `<rect class="silence" x="${x0}" y="${top}" width="${Math.max(1, x(end) - x0)}" height="${plotH}"></rect>`,
      );
    }
    for (const v of ticks) {
      const grid = v === 0 && min < 0 ? "grid zero" : "grid"; // the neutral line of -1..+1
      parts.push(`<line class="${grid}" x1="${left}" x2="${left + plotW}" y1="${y(v)}" y2="${y(v)}"></line>`);
      parts.push(`<text class="tick" x="${left - 4}" y="${y(v) + 4}" text-anchor="end">${v}</text>`);
    }
    const step = niceStep(lastT - firstT);
    for (let t = Math.ceil(firstT / step) * step; t <= lastT + 1e-9; t += step) {
      parts.push(`<text class="tick" x="${x(t)}" y="${this.height - 8}" text-anchor="middle">${+t.toFixed(1)}</text>`);
    }
    // The unit right of the axis, beside the last tick rather than over it.
    parts.push(`<text class="axis" x="${this.width - 2}" y="${this.height - 8}" text-anchor="end">s</text>`);
    const drawn = this.smoothed ? this.smoothedValues() : this.points.map((p) => p.values);
    this.series.forEach(({ key, colour, dash }, i) => {
      const coords = this.points.map((p, n) => `${x(p.t).toFixed(1)},${y(drawn[n][i]).toFixed(1)}`);
      parts.push(
        `<polyline class="series" data-label="${key}" fill="none" stroke="${colour}"` +
          (dash ? ` stroke-dasharray="${dash}"` : "") +
          ` stroke-width="2" points="${coords.join(" ")}"></polyline>`,
      );
    });
    this.svg.innerHTML = parts.join("");
    this.svg.setAttribute("aria-label", this.scale.title + (this.smoothed ? ", smoothed over one window" : ""));
    this.container.dataset.points = String(this.points.length);
    this.container.dataset.view = this.smoothed ? "smoothed" : "raw";
    this.container.dataset.silences = String(this.silences.length);
  }
}

// A tick spacing of 1, 2 or 5 x 10^k giving at most about 8 ticks over `span` seconds.
function niceStep(span) {
  const raw = span / 8;
  const power = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (raw <= m * power) return m * power;
  return 10 * power;
}
