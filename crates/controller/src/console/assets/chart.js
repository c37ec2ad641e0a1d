// Small SVG line charts drawn by the console itself (no library): a chart is an <svg> that
// `draw` redraws from a list of points and series.

const NS = "http://www.w3.org/2000/svg";

function el(name, attrs) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

// Draws `series` ([{name, color, values}]) over `times` (ms) into `svg`.
export function draw(svg, times, series, unit) {
  const w = 600, h = 160, left = 48, bottom = 18, top = 8, right = 8;
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("preserveAspectRatio", "none");
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const max = niceMax(Math.max(0, ...series.flatMap((s) => s.values)));
  const x = (i) => left + (times.length <= 1 ? 0 : (i * (w - left - right)) / (times.length - 1));
  const y = (v) => top + (h - top - bottom) * (1 - v / max);
  for (const f of [0, 0.5, 1]) {
    const v = max * f;
    svg.appendChild(el("line", { x1: left, x2: w - right, y1: y(v), y2: y(v), stroke: "#e3e6ee" }));
    const t = el("text", { x: left - 4, y: y(v) + 4, "text-anchor": "end", "font-size": 10, fill: "#6b7385" });
    t.textContent = v >= 1000 ? `${(v / 1000).toFixed(1)}k` : `${+v.toFixed(2)}`;
    svg.appendChild(t);
  }
  if (times.length > 0) {
    const t = el("text", { x: w - right, y: h - 4, "text-anchor": "end", "font-size": 10, fill: "#6b7385" });
    t.textContent = new Date(times[times.length - 1]).toLocaleTimeString() + (unit ? `  (${unit})` : "");
    svg.appendChild(t);
  }
  for (const s of series) {
    if (s.values.length === 0) continue;
    const d = s.values.map((v, i) => `${i === 0 ? "M" : "L"}${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    svg.appendChild(el("path", { d, fill: "none", stroke: s.color, "stroke-width": 2 }));
  }
}
