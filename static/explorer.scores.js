/*
 * gridgen explorer scores: what "colour cells by" reads and how it shows it. Pure functions over the
 * cells of data.js, published as window.GridgenScores for explorer.js (which loads after this file).
 *
 * A score field is a path into a cell: `metrics.NAME` (the image metrics gridgen/metrics.py computed
 * when the grid was published), `scores.NAME` (a numeric field of the backend's metadata, e.g. an
 * aesthetic scorer's), `params.NAME` (a numeric parameter) or `time` (the render time).
 */
(function () {
  "use strict";

  const METRIC_LABELS = {
    luminance: "Luminance (L*)",
    shadows: "Clipped shadows %",
    highlights: "Clipped highlights %",
    colourfulness: "Colourfulness",
    sharpness: "Sharpness (Laplacian variance)",
  };

  /* The cell's number at `field`, or null. */
  function scoreOf(cell, field) {
    if (!cell || !field) return null;
    const dot = field.indexOf(".");
    const source = dot < 0 ? cell : cell[field.slice(0, dot)];
    const value = source ? source[dot < 0 ? field : field.slice(dot + 1)] : undefined;
    return typeof value === "number" && Number.isFinite(value) ? value : null;
  }

  function scoreLabel(field) {
    const dot = field.indexOf(".");
    const [group, name] = dot < 0 ? ["", field] : [field.slice(0, dot), field.slice(dot + 1)];
    if (group === "metrics") return METRIC_LABELS[name] || name;
    if (group === "params") return name + " (parameter)";
    if (group === "scores") return name + " (score)";
    return field === "time" ? "Render time (s)" : field;
  }

  /* The fields cells can be coloured by: the metrics, then the numeric fields of one rendered cell. */
  function scoreFields(cells) {
    const fields = Object.keys(METRIC_LABELS).map((name) => "metrics." + name);
    for (const key in cells) {
      const cell = cells[key];
      for (const group of ["scores", "params"]) {
        for (const [name, value] of Object.entries(cell[group] || {})) {
          if (typeof value === "number" && Number.isFinite(value)) fields.push(group + "." + name);
        }
      }
      if (typeof cell.time === "number") fields.push("time");
      break;
    }
    return fields.map((field) => ({ field, label: scoreLabel(field) }));
  }

  /* The lowest and highest score of the cells ({low: Infinity, high: -Infinity} when none has one). */
  function rangeOf(cells, field) {
    let low = Infinity;
    let high = -Infinity;
    for (const key in cells) {
      const value = scoreOf(cells[key], field);
      if (value === null) continue;
      if (value < low) low = value;
      if (value > high) high = value;
    }
    return { low, high };
  }

  /* Low scores dark blue, high ones bright yellow (a viridis-like ramp, readable in both themes). */
  function heatColour(score, { low, high }) {
    const t = high > low ? (score - low) / (high - low) : 0.5;
    return `hsl(${Math.round(250 - 195 * t)} 75% ${Math.round(28 + 34 * t)}%)`;
  }

  function formatScore(value) {
    const size = Math.abs(value);
    return size >= 1000 ? value.toFixed(0) : size >= 10 ? value.toFixed(1) : value.toFixed(2);
  }

  /* Sort lines (rows or columns: {outer, inner}) by score, highest first and unscored last, in place,
     keeping each super-axis block (lines of one `outer`) together where it was. */
  function orderWithinBlocks(lines, scoreAt) {
    const scores = new Map(lines.map((line) => [line, scoreAt(line) ?? -Infinity]));
    const order = new Map(lines.map((line, i) => [line, i]));
    const blocks = new Map();
    lines.forEach((line) => blocks.has(line.outer) || blocks.set(line.outer, order.get(line)));
    lines.sort((a, b) => blocks.get(a.outer) - blocks.get(b.outer) || scores.get(b) - scores.get(a) || order.get(a) - order.get(b));
  }

  window.GridgenScores = { scoreOf, scoreLabel, scoreFields, rangeOf, heatColour, formatScore, orderWithinBlocks };
})();
