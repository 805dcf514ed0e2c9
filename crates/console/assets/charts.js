// Metrics charts: SVG line charts built by hand from `GET /clusters/{name}/metrics` (no
// library: nothing is loaded from outside the installation). One chart per key metric,
// one line per member or series, with a legend, axes labelled with units, and for screen
// readers a caption with the latest values and the values as a table.

import * as api from "./api.js";
import { h, clear, errorBox, bytes } from "./ui.js";

// The SVG namespace is a name, not an address anything is loaded from.
const SVG_NS = "http://www.w3.org/2000/svg";

/** An SVG element; attributes are set with setAttribute (no style attribute: the policy). */
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== undefined && v !== null) el.setAttribute(k, String(v));
  for (const c of children) if (c !== undefined && c !== null) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

/** The ranges offered, each with a step that gives 120 to 180 points per series. */
export const RANGES = [
  { id: "1h", label: "1 h", from: "1h", step: "30s", seconds: 3600 },
  { id: "6h", label: "6 h", from: "6h", step: "2m", seconds: 6 * 3600 },
  { id: "24h", label: "24 h", from: "24h", step: "10m", seconds: 86400 },
  { id: "14d", label: "14 d", from: "14d", step: "2h", seconds: 14 * 86400 },
];

const minus = (a, b) => a - b;

/**
 * The charts: which metrics each reads (two for a derived series: `derive(a, b)` of the
 * values of the same target, series and moment), how its values read.
 */
export const CHARTS = [
  { id: "commits", title: "Commits per second", metrics: ["pg_commits_per_second"], unit: "per_s", axis: "commits/s" },
  { id: "connections", title: "Connections", metrics: ["pg_connections"], unit: "count", axis: "connections" },
  { id: "lag-bytes", title: "Replication lag (bytes)", metrics: ["pg_replication_lag_bytes"], unit: "bytes", axis: "bytes behind" },
  { id: "lag-seconds", title: "Replication lag (seconds)", metrics: ["pg_replication_lag_seconds"], unit: "seconds", axis: "seconds behind" },
  { id: "cache", title: "Cache hit ratio", metrics: ["pg_cache_hit_ratio"], unit: "ratio", axis: "% of reads" },
  { id: "wal", title: "WAL rate", metrics: ["pg_wal_bytes_per_second"], unit: "bytes_s", axis: "WAL bytes/s" },
  { id: "cpu", title: "Host CPU busy", metrics: ["host_cpu_busy_ratio"], unit: "ratio", axis: "% of CPU time" },
  {
    id: "memory",
    title: "Host memory used",
    metrics: ["host_memory_total_bytes", "host_memory_available_bytes"],
    derive: minus,
    unit: "bytes",
    axis: "bytes used",
  },
  {
    id: "disk",
    title: "Disk used",
    metrics: ["host_disk_total_bytes", "host_disk_free_bytes"],
    derive: minus,
    unit: "bytes",
    axis: "bytes used",
  },
];

function trim(n) {
  // Up to 3 significant digits, no trailing zeros.
  if (n === 0) return "0";
  const a = Math.abs(n);
  // Below 1, significant digits: 0.0004 is not "0".
  if (a < 1) return String(Number(n.toPrecision(2)));
  const digits = a >= 100 ? 0 : a >= 10 ? 1 : 2;
  return String(Number(n.toFixed(digits)));
}

/** A value as a person reads it, in the chart's unit. */
export function formatValue(unit, v) {
  switch (unit) {
    case "bytes":
      return bytes(Math.round(v));
    case "bytes_s":
      return bytes(Math.round(v)) + "/s";
    case "per_s":
      return trim(v) + "/s";
    case "seconds":
      return trim(v) + " s";
    case "ratio":
      return trim(v * 100) + " %";
    default:
      return trim(v);
  }
}

/** Nice tick values from 0 to at least `max` (about 4 steps of 1, 2 or 5 × 10ⁿ). */
function ticks(max, unit) {
  if (unit === "ratio") return [0, 0.25, 0.5, 0.75, 1];
  // Seconds, counts and rates get an axis of at least 1: a lag of 0.4 ms is drawn at the
  // bottom of 0–1 s, not as the top of a 0–0.4 ms axis.
  if (unit === "seconds" || unit === "count" || unit === "per_s") max = Math.max(max, 1);
  // Bytes tick at round numbers of the unit they are shown in (KiB, MiB...).
  const scale = unit === "bytes" || unit === "bytes_s" ? 1024 ** Math.max(0, Math.floor(Math.log(Math.max(max, 1)) / Math.log(1024))) : 1;
  const m = max / scale || 1;
  const raw = m / 4;
  const p = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((f) => f * p).find((x) => x >= raw);
  // Whole things (connections, bytes) have no fractions to mark.
  if ((unit === "count" || unit === "bytes" || unit === "bytes_s") && step * scale < 1) return [0, 1];
  const out = [];
  for (let v = 0; v < m + step * 0.999; v += step) out.push(Number((v * scale).toPrecision(12)));
  return out;
}

function timeLabel(t, range) {
  const d = new Date(t * 1000);
  return range.seconds > 86400
    ? d.toLocaleDateString([], { month: "short", day: "numeric" })
    : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
}

/** A series' name in the legend: the member (or host) and the series' label. */
function seriesName(x, hostMetric) {
  const who = hostMetric ? `host ${x.host}` : x.member;
  if (!x.dim) return who;
  if (x.dim_label === "replica") return `${x.dim} (seen on ${x.member})`;
  return `${who} ${x.dim}`;
}

/** The lines of one chart from the query results: [{name, points: [[t, v]...]}]. */
function linesOf(chart, results) {
  const hostMetric = chart.metrics[0].startsWith("host_");
  const key = (x) => `${x.member}\u0000${x.host}\u0000${x.dim || ""}`;
  const first = results[chart.metrics[0]].series;
  if (!chart.derive) return first.map((x) => ({ name: seriesName(x, hostMetric), points: x.points }));
  const other = new Map(results[chart.metrics[1]].series.map((x) => [key(x), new Map(x.points)]));
  return first.map((x) => {
    const b = other.get(key(x)) || new Map();
    const points = x.points.filter(([t]) => b.has(t)).map(([t, v]) => [t, chart.derive(v, b.get(t))]);
    return { name: seriesName(x, hostMetric), points };
  });
}

const W = 360;
const H = 200;
const M = { left: 56, right: 10, top: 18, bottom: 26 };

/** One chart as a <figure>: title, latest values, the SVG, its legend and a table. */
function figure(chart, lines, result, range, open) {
  const id = "chart-" + chart.id;
  const withData = lines.filter((l) => l.points.length);
  const caption = h("figcaption", {}, h("h3", { id: id + "-title" }, chart.title));
  const fig = h("figure", { class: "chart", "data-metric": chart.metrics[0], "aria-labelledby": id + "-title" }, caption);
  if (!withData.length) {
    fig.classList.add("chart-empty");
    fig.append(h("p", { class: "empty" }, "No samples yet in this range."));
    return fig;
  }
  const latest = withData.map((l) => `${l.name} ${formatValue(chart.unit, l.points[l.points.length - 1][1])}`);
  caption.append(h("p", { class: "chart-latest", id: id + "-latest" }, "Latest: ", latest.join("; ")));

  const t0 = Date.parse(result.from) / 1000;
  const t1 = Date.parse(result.to) / 1000;
  const max = Math.max(...withData.flatMap((l) => l.points.map((p) => p[1])), 0);
  const ys = ticks(max, chart.unit);
  const yMax = ys[ys.length - 1] || 1;
  const pw = W - M.left - M.right;
  const ph = H - M.top - M.bottom;
  const x = (t) => M.left + ((t - t0) / Math.max(1, t1 - t0)) * pw;
  const y = (v) => M.top + ph - (Math.max(0, Math.min(v, yMax)) / yMax) * ph;

  const svg = s("svg", {
    viewBox: `0 0 ${W} ${H}`,
    class: "chart-svg",
    role: "img",
    "aria-labelledby": `${id}-title ${id}-latest`,
    focusable: "false",
  });
  // Grid and y axis: tick values with the unit.
  for (const v of ys) {
    const yy = y(v).toFixed(1);
    svg.append(s("line", { class: "grid", x1: M.left, x2: W - M.right, y1: yy, y2: yy }));
    svg.append(s("text", { class: "tick", x: M.left - 4, y: yy, "text-anchor": "end", "dominant-baseline": "middle" }, formatValue(chart.unit, v)));
  }
  svg.append(s("text", { class: "axis-title", x: 2, y: 10 }, chart.axis));
  // X axis: times at five evenly spaced places.
  svg.append(s("line", { class: "axis", x1: M.left, x2: W - M.right, y1: M.top + ph, y2: M.top + ph }));
  for (let i = 0; i <= 4; i++) {
    const t = t0 + ((t1 - t0) * i) / 4;
    const anchor = i === 0 ? "start" : i === 4 ? "end" : "middle";
    svg.append(s("text", { class: "tick", x: x(t).toFixed(1), y: H - 8, "text-anchor": anchor }, timeLabel(t, range)));
  }
  // The lines: a gap of more than two steps without data breaks the line.
  const legend = h("ul", { class: "legend" });
  lines.forEach((l, i) => {
    if (!l.points.length) return;
    const cls = `series series-${i % 8}`;
    let d = "";
    let prev = null;
    for (const [t, v] of l.points) {
      d += `${prev !== null && t - prev <= 2.5 * result.step ? "L" : "M"}${x(t).toFixed(1)} ${y(v).toFixed(1)}`;
      prev = t;
    }
    svg.append(s("path", { class: cls, d, "data-series": l.name }));
    // A lone point draws no line: a dot shows it.
    if (l.points.length === 1) svg.append(s("circle", { class: cls + " dot", cx: x(l.points[0][0]).toFixed(1), cy: y(l.points[0][1]).toFixed(1), r: 2.5 }));
    legend.append(h("li", {}, h("span", { class: `swatch swatch-${i % 8}`, "aria-hidden": "true" }), l.name));
  });
  const rows = withData.map((l) => {
    const vs = l.points.map((p) => p[1]);
    return h(
      "tr",
      {},
      h("th", { scope: "row" }, l.name),
      h("td", {}, formatValue(chart.unit, vs[vs.length - 1])),
      h("td", {}, formatValue(chart.unit, Math.min(...vs))),
      h("td", {}, formatValue(chart.unit, Math.max(...vs))),
      h("td", {}, String(vs.length)),
    );
  });
  const details = h(
    "details",
    { class: "chart-table", open: open || false },
    h("summary", {}, "Values as a table"),
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        {},
        h("caption", { class: "visually-hidden" }, `${chart.title}, ${range.label}`),
        h("thead", {}, h("tr", {}, ["Series", "Latest", "Lowest", "Highest", "Points"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, rows),
      ),
    ),
  );
  fig.append(svg, legend, details);
  return fig;
}

/**
 * The metrics of a cluster: a range selector and the charts, read again every 30 s while
 * the page is shown (a round is skipped while the keyboard focus is in the charts, so
 * nothing is taken from under it). Stops when `signal` aborts (the page was left).
 */
export function metricsPanel(cluster, signal) {
  const group = "range-" + Math.random().toString(36).slice(2, 8);
  let range = RANGES.find((r) => r.id === sessionStorage.getItem("sovdb.metrics.range")) || RANGES[0];
  const grid = h("div", { class: "charts", "aria-busy": "true" }, h("p", {}, "Loading the metrics…"));
  const status = h("div", { class: "chart-status" });
  const choices = RANGES.map((r) => {
    const radio = h("input", { type: "radio", name: group, value: r.id, id: `${group}-${r.id}`, checked: r === range });
    radio.addEventListener("change", () => {
      if (!radio.checked) return;
      range = r;
      sessionStorage.setItem("sovdb.metrics.range", r.id);
      load(true);
    });
    return h("span", { class: "range-choice" }, radio, h("label", { for: radio.id }, r.label));
  });
  const picker = h("fieldset", { class: "range" }, h("legend", {}, "Time range"), choices);
  let timer = null;
  let loading = false;
  const load = async (force) => {
    if (loading || (signal && signal.aborted) || (!grid.isConnected && !force)) return;
    if (!force && grid.contains(document.activeElement)) return;
    loading = true;
    const names = [...new Set(CHARTS.flatMap((c) => c.metrics))];
    const path = `/clusters/${encodeURIComponent(cluster)}/metrics`;
    try {
      const answers = await Promise.all(names.map((n) => api.get(`${path}?name=${n}&from=${range.from}&step=${range.step}`)));
      const results = Object.fromEntries(names.map((n, i) => [n, answers[i]]));
      const open = new Set([...grid.querySelectorAll("details[open]")].map((d) => d.closest("figure").dataset.metric));
      const result = answers[0];
      clear(status);
      clear(grid).append(...CHARTS.map((c) => figure(c, linesOf(c, results), result, range, open.has(c.metrics[0]))));
      grid.setAttribute("data-range", range.id);
    } catch (e) {
      if (!(signal && signal.aborted)) clear(status).append(errorBox(e));
    } finally {
      grid.removeAttribute("aria-busy");
      loading = false;
    }
  };
  const tick = () => {
    timer = setTimeout(async () => {
      if (signal && signal.aborted) return;
      if (document.visibilityState === "visible") await load(false);
      tick();
    }, 30000);
  };
  if (signal) signal.addEventListener("abort", () => clearTimeout(timer));
  load(true).then(tick);
  return h("div", { class: "metrics" }, picker, status, grid);
}
