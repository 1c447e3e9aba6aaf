// Emotion over time: the eight probabilities of each window as lines against seconds, with the
// windows that held no speech shaded. Plain SVG, drawn here (no chart library to fetch).
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
const SVG_NS = "http://www.w3.org/2000/svg";
const TIMELINE_MAX_POINTS = 2400; // 20 minutes of 0.5 s hops; older points are dropped

class Timeline {
  // container: an element to draw into; labels: the label order of the probabilities.
  constructor(container, labels) {
    this.container = container;
    this.labels = labels;
    this.points = []; // {t, probabilities: number[] | null}
    this.silences = []; // [start_s, end_s]
    this.width = 640;
    this.height = 220;
    this.margin = { left: 36, right: 10, top: 10, bottom: 26 };
    this.legend();
    this.svg = document.createElementNS(SVG_NS, "svg");
    this.svg.setAttribute("viewBox", `0 0 ${this.width} ${this.height}`);
    this.svg.setAttribute("role", "img");
    this.svg.setAttribute("aria-label", "Probability of each emotion over time");
    this.container.append(this.svg);
    this.render();
  }

  legend() {
    const legend = document.createElement("div");
    legend.className = "timeline-legend";
    for (const label of this.labels) {
      const item = document.createElement("span");
      item.className = "timeline-key";
      item.innerHTML = `<span class="swatch" style="background:${TIMELINE_COLOURS[label]}"></span>${label}`;
      legend.append(item);
    }
    this.container.append(legend);
  }

  clear() {
    this.points = [];
    this.silences = [];
    this.render();
  }

  // One window: its span in seconds and its probabilities ({label: p} or null for silence).
  add(startS, endS, probabilities) {
    if (probabilities) {
      const values = this.labels.map((label) => Number(probabilities[label] ?? 0));
      this.points.push({ t: (startS + endS) / 2, values });
      if (this.points.length > TIMELINE_MAX_POINTS) this.points.shift();
    } else {
      this.silences.push([startS, endS]);
    }
    this.render();
  }

  render() {
    const { left, right, top, bottom } = this.margin;
    const plotW = this.width - left - right;
    const plotH = this.height - top - bottom;
    const lastT = Math.max(1, ...this.points.map((p) => p.t), ...this.silences.map((s) => s[1]));
    const firstT = 0;
    const x = (t) => left + ((t - firstT) / (lastT - firstT)) * plotW;
    const y = (p) => top + (1 - p) * plotH;
    const parts = [];
    for (const [start, end] of this.silences) {
      const x0 = Math.max(left, x(start));
      parts.push(
        `<rect class="silence" x="${x0}" y="${top}" width="${Math.max(1, x(end) - x0)}" height="${plotH}"></rect>`,
      );
    }
    for (const p of [0, 0.25, 0.5, 0.75, 1]) {
      parts.push(`<line class="grid" x1="${left}" x2="${left + plotW}" y1="${y(p)}" y2="${y(p)}"></line>`);
      parts.push(`<text class="tick" x="${left - 4}" y="${y(p) + 4}" text-anchor="end">${p}</text>`);
    }
    const step = niceStep(lastT - firstT);
    for (let t = Math.ceil(firstT / step) * step; t <= lastT + 1e-9; t += step) {
      parts.push(`<text class="tick" x="${x(t)}" y="${this.height - 8}" text-anchor="middle">${+t.toFixed(1)}</text>`);
    }
    parts.push(`<text class="axis" x="${left + plotW}" y="${this.height - 8}" text-anchor="end">s</text>`);
    this.labels.forEach((label, i) => {
      const coords = this.points.map((p) => `${x(p.t).toFixed(1)},${y(p.values[i]).toFixed(1)}`);
      parts.push(
        `<polyline class="series" data-label="${label}" fill="none" stroke="${TIMELINE_COLOURS[label]}"` +
          ` stroke-width="2" points="${coords.join(" ")}"></polyline>`,
      );
    });
    this.svg.innerHTML = parts.join("");
    this.container.dataset.points = String(this.points.length);
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
