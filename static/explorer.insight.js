/*
 * gridgen explorer insight: which setting matters. A bar chart of the axes by their influence (how much
 * the image changes when that axis alone changes; computed when the grid was published, see
 * gridgen/metrics.py), a button that puts the two most influential axes on X and Y, the "colour cells
 * by" menu that turns the grid into a heat map of an image metric or any numeric field, its legend, and
 * the button that folds the navigation away. Nothing is computed here at load: the numbers ride in
 * data.js. Uses window.GridgenExplorer (explorer.js).
 */
(function () {
  "use strict";

  const X = window.GridgenExplorer;
  if (!X) return;
  const el = X.el;

  function $(id) {
    return document.getElementById(id);
  }

  /* The axes with an influence, most influential first; axes with nothing to compare yet go last. */
  function ranked() {
    return X.data.axes
      .map((axis) => ({ axis, entry: X.influence(axis.id) }))
      .filter(({ entry }) => entry)
      .sort((a, b) => (b.entry.distance ?? -1) - (a.entry.distance ?? -1));
  }

  function render() {
    const box = $("insight");
    if (!box) return;
    const axes = ranked();
    const top = axes.filter(({ entry }) => entry.distance > 0).map(({ axis }) => axis.id);
    const pick = el(
      "button",
      { type: "button", id: "pick-top", disabled: top.length < 1, title: "Put the most influential axis on X and the next on Y" },
      "X, Y \u2190 the two that matter most",
    );
    const head = el("div", { class: "insight-head" }, el("strong", {}, "Which setting matters?"), " ", pick, " ", scoreControl());
    const bars = axes.length ? barChart(axes) : el("p", { class: "note" }, "No influence figures: this grid was published by an older gridgen.");
    box.replaceChildren(head, bars);
    box.hidden = false;
    renderLegend();
  }

  function barChart(axes) {
    const most = Math.max(...axes.map(({ entry }) => entry.distance || 0), 1e-9);
    const roles = X.state.roles;
    return el(
      "ol",
      { id: "influence-bars", "aria-label": "Axes by influence" },
      ...axes.map(({ axis, entry }) => {
        const zero = entry.pairs > 0 && entry.distance === 0;
        const pending = !entry.pairs;
        const role = Object.keys(roles).find((r) => roles[r] === axis.id);
        const figure = pending ? "not compared yet" : zero ? "no change" : `\u0394E ${entry.distance.toFixed(1)} \u00b7 SSIM ${entry.ssim.toFixed(2)}`;
        return el(
          "li",
          { class: zero ? "zero" : pending ? "pending" : null, "data-axis": axis.id, title: `${X.titleOf(axis)}: ${figure}, over ${entry.pairs} image pairs that differ in this axis alone. Click to put it on X.` },
          el("span", { class: "bar-label" }, X.titleOf(axis), role ? el("span", { class: "bar-role" }, " " + role.toUpperCase()) : null),
          el("span", { class: "bar" }, el("span", { class: "bar-fill", style: `width:${(100 * (entry.distance || 0)) / most}%` })),
          el("span", { class: "bar-value" }, figure),
        );
      }),
    );
  }

  function scoreControl() {
    const select = el(
      "select",
      { id: "score-field", "aria-label": "Colour cells by" },
      el("option", { value: "" }, "(nothing)"),
      ...X.scoreFields().map(({ field, label }) => el("option", { value: field }, label)),
    );
    select.value = X.state.score;
    if (select.value !== X.state.score) select.append(el("option", { value: X.state.score }, X.scoreLabel(X.state.score)));
    select.value = X.state.score;
    return el("label", { class: "score-control" }, "Colour cells by ", select, " ", el("span", { id: "score-legend" }));
  }

  function renderLegend() {
    const legend = $("score-legend");
    if (!legend) return;
    const span = X.scoreRange();
    if (!span || !(span.high >= span.low)) {
      legend.replaceChildren(span ? el("span", { class: "note" }, "no cell has this field") : "");
      return;
    }
    legend.replaceChildren(
      el("span", { class: "legend-end" }, format(span.low)),
      el("span", { class: "legend-ramp", "aria-hidden": "true" }),
      el("span", { class: "legend-end" }, format(span.high)),
      el("span", { class: "note" }, " \u00b7 sort a column or row with its \u2193/\u2192 button"),
    );
  }

  function format(value) {
    return Math.abs(value) >= 100 ? value.toFixed(0) : value.toFixed(2);
  }

  function pickTop() {
    const top = ranked()
      .filter(({ entry }) => entry.distance > 0)
      .map(({ axis }) => axis.id);
    if (top.length) X.setRoles({ x: top[0], y: top[1] || null });
  }

  function onClick(event) {
    if (event.target.closest("#pick-top")) return pickTop();
    const bar = event.target.closest("#influence-bars li");
    if (bar) X.setRoles({ x: bar.dataset.axis });
  }

  function onChange(event) {
    if (event.target.id === "score-field") X.setScore(event.target.value);
  }

  function syncNav() {
    const open = X.state.toggles.nav;
    const button = $("nav-toggle");
    button.setAttribute("aria-expanded", String(open));
    button.textContent = open ? "\u25b4 Hide controls" : "\u2630 Controls";
  }

  function bind() {
    $("insight").addEventListener("click", onClick);
    $("insight").addEventListener("change", onChange);
    $("nav-toggle").addEventListener("click", () => X.setToggle("nav", !X.state.toggles.nav));
    X.on("toggle", (key) => key === "nav" && syncNav());
    X.on("score", renderLegend);
    X.on("render", () => {
      // the role markers, the menu and the legend follow the view; the bars only change with the data
      const select = $("score-field");
      if (select && select.value !== X.state.score) select.value = X.state.score;
      renderLegend();
      const roles = X.state.roles;
      for (const item of document.querySelectorAll("#influence-bars li")) {
        const role = Object.keys(roles).find((r) => roles[r] === item.dataset.axis);
        const mark = item.querySelector(".bar-role");
        if (mark) mark.remove();
        if (role) item.querySelector(".bar-label").append(el("span", { class: "bar-role" }, " " + role.toUpperCase()));
      }
    });
    X.on("data", render);
  }

  if (!X.data) return;
  bind();
  render();
  syncNav();
})();
