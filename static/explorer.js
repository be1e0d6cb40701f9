/*
 * gridgen grid explorer.
 *
 * Renders window.GRIDGEN (data.js, written by gridgen/explorer.py) as a table of images: any axis
 * can be the X axis, Y axis, X super-axis or Y super-axis, and every other axis is fixed by a row
 * of value tabs. The whole view lives in the URL hash, so a link reopens the same view. While a
 * run is in progress the page re-loads data.js every two seconds and fills in the cells that
 * landed. Plain browser JavaScript with no dependencies; works opened from file://.
 */
(function () {
  "use strict";

  const ROLES = ["x", "y", "xs", "ys"];
  const ROLE_LABELS = { x: "X axis", y: "Y axis", xs: "X super-axis", ys: "Y super-axis" };
  const PAGE_ROLE_KEYS = { x: "x_axis", y: "y_axis", xs: "x_super_axis", ys: "y_super_axis" };
  const TOGGLES = [
    { key: "desc", page: "show_descriptions", fallback: true, label: "Show descriptions" },
    { key: "scale", page: "autoscale", fallback: false, label: "Fit images to the window" },
    { key: "sticky", page: "sticky", fallback: false, label: "Sticky navigation" },
    { key: "labels", page: "sticky_labels", fallback: true, label: "Sticky row/column labels" },
  ];
  const POLL_MS = 2000;
  const ARROWS = { ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [-1, 0], ArrowDown: [1, 0] };

  let data = null; // the window.GRIDGEN on show
  let axisById = new Map(); // axis id -> axis
  let valueMaps = new Map(); // axis id -> Map(value id -> value)
  let defaults = null; // the view the page opens with when the URL has no hash
  let state = null; // {roles: {x, y, xs, ys}, toggles: {key: bool}, sel: {axis: value id}, hidden: {axis: Set}}
  let entries = []; // the table's cells by [row][col]: {td, row, col, sig}
  let popupAt = null; // [row, col] of the cell in the popup
  let popupSig = "";
  let pollTimer = 0;
  let loading = false;

  /* ---------- helpers ---------- */

  function $(id) {
    return document.getElementById(id);
  }

  /* Make an element: props are attributes, except `class` and `html` (trusted HTML from the spec). */
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "html") node.innerHTML = value;
      else node.setAttribute(name, value === true ? "" : value);
    }
    node.append(...children.filter((child) => child !== null && child !== undefined));
    return node;
  }

  function urlOf(path) {
    return path.split("/").map(encodeURIComponent).join("/");
  }

  function titleOf(item) {
    return item.title || item.id;
  }

  function valueById(axisId, valueId) {
    return valueMaps.get(axisId).get(valueId) || null;
  }

  function hasValue(axisId, valueId) {
    return valueMaps.has(axisId) && valueMaps.get(axisId).has(valueId);
  }

  function running() {
    return Boolean(data.progress && data.progress.running);
  }

  function clamp(n, low, high) {
    return Math.max(low, Math.min(high, n));
  }

  /* ---------- view state and the URL hash ---------- */

  function indexAxes() {
    axisById = new Map(data.axes.map((axis) => [axis.id, axis]));
    valueMaps = new Map(data.axes.map((axis) => [axis.id, new Map(axis.values.map((v) => [v.id, v]))]));
  }

  function defaultState() {
    const page = data.page || {};
    const roles = {};
    for (const role of ROLES) roles[role] = axisById.has(page[PAGE_ROLE_KEYS[role]]) ? page[PAGE_ROLE_KEYS[role]] : null;
    dedupeRoles(roles);
    const free = data.axes.map((axis) => axis.id).filter((id) => !Object.values(roles).includes(id));
    if (!roles.x) roles.x = free.shift() || null;
    if (!roles.y) roles.y = free.shift() || null;
    const toggles = {};
    for (const t of TOGGLES) toggles[t.key] = typeof page[t.page] === "boolean" ? page[t.page] : t.fallback;
    const sel = {};
    const hidden = {};
    for (const axis of data.axes) {
      sel[axis.id] = defaultValue(axis);
      hidden[axis.id] = new Set(axis.values.filter((v) => v.show === false).map((v) => v.id));
    }
    return { roles, toggles, sel, hidden };
  }

  function defaultValue(axis) {
    if (hasValue(axis.id, axis.default)) return axis.default;
    const first = axis.values.find((v) => !v.skip) || axis.values[0];
    return first ? first.id : null;
  }

  /* An axis plays at most one role: a later role naming it again is dropped. */
  function dedupeRoles(roles) {
    const seen = new Set();
    for (const role of ROLES) {
      if (seen.has(roles[role])) roles[role] = null;
      else if (roles[role]) seen.add(roles[role]);
    }
  }

  function stateToHash() {
    const pairs = [];
    for (const role of ROLES) pairs.push([role, state.roles[role] || ""]);
    for (const t of TOGGLES) pairs.push([t.key, state.toggles[t.key] ? "1" : "0"]);
    for (const axis of data.axes) {
      if (state.sel[axis.id] !== null) pairs.push(["s." + axis.id, state.sel[axis.id]]);
      const hidden = [...state.hidden[axis.id]];
      if (hidden.length || defaults.hidden[axis.id].size) pairs.push(["h." + axis.id, hidden.join(",")]);
    }
    return "#" + pairs.map(([key, value]) => `${hashPart(key)}=${hashPart(value)}`).join("&");
  }

  /* Like URLSearchParams, but commas stay readable. */
  function hashPart(text) {
    return encodeURIComponent(text).replace(/%2C/g, ",");
  }

  function stateFromHash(hash) {
    const result = defaultState();
    const query = new URLSearchParams(hash.replace(/^#/, ""));
    for (const role of ROLES) {
      if (query.has(role)) result.roles[role] = axisById.has(query.get(role)) ? query.get(role) : null;
    }
    dedupeRoles(result.roles);
    for (const t of TOGGLES) {
      if (query.has(t.key)) result.toggles[t.key] = query.get(t.key) === "1";
    }
    for (const axis of data.axes) {
      const picked = query.get("s." + axis.id);
      if (hasValue(axis.id, picked)) result.sel[axis.id] = picked;
      const hidden = query.get("h." + axis.id);
      if (hidden !== null) result.hidden[axis.id] = new Set(hidden.split(",").filter((id) => hasValue(axis.id, id)));
    }
    return result;
  }

  function saveHash() {
    const hash = stateToHash();
    if (hash === location.hash) return;
    try {
      history.replaceState(null, "", hash);
    } catch (err) {
      location.replace(hash);
    }
  }

  function onHashChange() {
    if (location.hash === stateToHash()) return;
    state = stateFromHash(location.hash);
    renderAll();
  }

  /* ---------- controls ---------- */

  function renderAll() {
    closePopup();
    applyToggles();
    renderPickers();
    renderToggles();
    renderTabs();
    renderShowPanel();
    renderGrid();
    renderProgress();
  }

  function renderPickers() {
    $("pickers").replaceChildren(
      ...ROLES.map((role) => {
        const select = el(
          "select",
          { id: "pick-" + role, "data-role": role },
          el("option", { value: "" }, "(none)"),
          ...data.axes.map((axis) => el("option", { value: axis.id }, titleOf(axis))),
        );
        select.value = state.roles[role] || "";
        return el("label", { class: "picker" }, ROLE_LABELS[role] + " ", select);
      }),
    );
  }

  /* Give `role` to `axisId`; a role that held that axis takes this role's previous axis (a swap). */
  function setRole(role, axisId) {
    const previous = state.roles[role];
    for (const other of ROLES) {
      if (other !== role && axisId && state.roles[other] === axisId) state.roles[other] = previous;
    }
    state.roles[role] = axisId;
    renderPickers();
    renderTabs();
    renderGrid();
    saveHash();
  }

  function renderToggles() {
    $("toggles").replaceChildren(
      ...TOGGLES.map((t) => {
        const box = el("input", { type: "checkbox", id: "opt-" + t.key, "data-toggle": t.key });
        box.checked = state.toggles[t.key];
        return el("label", { class: "toggle" }, box, " " + t.label);
      }),
    );
  }

  function applyToggles() {
    for (const t of TOGGLES) document.body.classList.toggle("opt-" + t.key, state.toggles[t.key]);
  }

  function onToggle(event) {
    const key = event.target.dataset.toggle;
    if (!key) return;
    state.toggles[key] = event.target.checked;
    applyToggles();
    saveHash();
  }

  /* ---------- value tabs of the fixed axes ---------- */

  function fixedAxes() {
    const used = new Set(Object.values(state.roles));
    return data.axes.filter((axis) => !used.has(axis.id));
  }

  function renderTabs() {
    $("tabs").replaceChildren(...fixedAxes().map(tabRow));
  }

  function tabRow(axis) {
    const tabs = axis.values.map((v) =>
      el("button", { type: "button", role: "tab", class: v.skip ? "tab skip" : "tab", "data-value": v.id }, titleOf(v)),
    );
    const row = el(
      "div",
      { class: "axis-tabs", "data-axis": axis.id },
      el(
        "div",
        { class: "axis-head" },
        el("span", { class: "axis-title" }, titleOf(axis)),
        axis.description ? el("span", { class: "desc", html: axis.description }) : null,
      ),
      el("div", { role: "tablist", class: "tablist", "aria-label": titleOf(axis) }, ...tabs),
      el("div", { class: "desc value-desc" }),
    );
    updateTabRow(row);
    return row;
  }

  function updateTabRow(row) {
    const axisId = row.dataset.axis;
    for (const tab of row.querySelectorAll('[role="tab"]')) {
      const selected = tab.dataset.value === state.sel[axisId];
      tab.setAttribute("aria-selected", String(selected));
      tab.tabIndex = selected ? 0 : -1;
      tab.classList.toggle("is-hidden", state.hidden[axisId].has(tab.dataset.value));
    }
    const value = valueById(axisId, state.sel[axisId]);
    row.querySelector(".value-desc").innerHTML = (value && value.description) || "";
  }

  function selectValue(axisId, valueId) {
    state.sel[axisId] = valueId;
    const row = $("tabs").querySelector(`.axis-tabs[data-axis="${CSS.escape(axisId)}"]`);
    if (row) updateTabRow(row);
    refreshCells();
    saveHash();
  }

  function onTabClick(event) {
    const tab = event.target.closest('[role="tab"]');
    if (tab) selectValue(tab.closest(".axis-tabs").dataset.axis, tab.dataset.value);
  }

  /* Left/right pick the previous/next value of the focused axis; up/down move to another axis. */
  function onTabKey(event) {
    const tab = event.target.closest('[role="tab"]');
    if (!tab || !(event.key in ARROWS)) return;
    event.preventDefault();
    const [down, right] = ARROWS[event.key];
    const row = tab.closest(".axis-tabs");
    if (right) stepValue(row, right);
    else stepAxis(row, down);
  }

  function stepValue(row, delta) {
    const tabs = [...row.querySelectorAll('[role="tab"]')];
    const at = tabs.findIndex((tab) => tab.dataset.value === state.sel[row.dataset.axis]);
    const next = tabs[(at + delta + tabs.length) % tabs.length];
    selectValue(row.dataset.axis, next.dataset.value);
    next.focus();
  }

  function stepAxis(row, delta) {
    const rows = [...$("tabs").querySelectorAll(".axis-tabs")];
    const next = rows[rows.indexOf(row) + delta];
    const tab = next && next.querySelector('[role="tab"][tabindex="0"]');
    if (tab) tab.focus();
  }

  /* ---------- advanced: which values are shown ---------- */

  function renderShowPanel() {
    $("show-values").replaceChildren(...data.axes.map(showFieldset));
  }

  function showFieldset(axis) {
    const all = el("input", { type: "checkbox", class: "show-all", "data-axis": axis.id });
    const boxes = axis.values.map((v) =>
      el(
        "label",
        { class: "show-value" },
        el("input", { type: "checkbox", "data-axis": axis.id, "data-value": v.id }),
        " " + titleOf(v),
      ),
    );
    const fieldset = el("fieldset", { "data-axis": axis.id }, el("legend", {}, el("label", {}, all, " " + titleOf(axis))), ...boxes);
    syncShowFieldset(fieldset);
    return fieldset;
  }

  function syncShowFieldset(fieldset) {
    const hidden = state.hidden[fieldset.dataset.axis];
    for (const box of fieldset.querySelectorAll("input[data-value]")) box.checked = !hidden.has(box.dataset.value);
    const all = fieldset.querySelector(".show-all");
    all.checked = hidden.size === 0;
    all.indeterminate = hidden.size > 0 && hidden.size < axisById.get(fieldset.dataset.axis).values.length;
  }

  function onShowChange(event) {
    const box = event.target;
    const axis = axisById.get(box.dataset.axis);
    if (!axis) return;
    const hidden = state.hidden[axis.id];
    if (box.classList.contains("show-all")) {
      hidden.clear();
      if (!box.checked) for (const v of axis.values) hidden.add(v.id);
    } else if (box.checked) hidden.delete(box.dataset.value);
    else hidden.add(box.dataset.value);
    syncShowFieldset(box.closest("fieldset"));
    renderTabs();
    renderGrid();
    saveHash();
  }

  /* ---------- the grid ---------- */

  function visibleValues(axisId) {
    if (!axisId) return [null];
    return axisById.get(axisId).values.filter((v) => !state.hidden[axisId].has(v.id));
  }

  /* The table's rows (or columns): every visible super-axis value times every visible axis value. */
  function lines(superRole, role) {
    const result = [];
    for (const outer of visibleValues(state.roles[superRole])) {
      for (const inner of visibleValues(state.roles[role])) result.push({ outer, inner });
    }
    return result;
  }

  /* The value of every axis, in axes order, for the cell at (row, col). */
  function cellValues(row, col) {
    const pinned = new Map([
      [state.roles.ys, row.outer],
      [state.roles.y, row.inner],
      [state.roles.xs, col.outer],
      [state.roles.x, col.inner],
    ]);
    return data.axes.map((axis) => (pinned.has(axis.id) ? pinned.get(axis.id) : valueById(axis.id, state.sel[axis.id])));
  }

  function describeCell(values) {
    if (values.some((v) => !v)) return { key: "", kind: "pending", cell: null };
    const key = values.map((v) => v.id).join("/");
    if (values.some((v) => v.skip)) return { key, kind: "skipped", cell: null };
    const cell = data.cells[key] || null;
    return { key, kind: cell ? "done" : "pending", cell };
  }

  function cellLabel(values) {
    return data.axes.map((axis, i) => `${titleOf(axis)}: ${values[i] ? titleOf(values[i]) : "?"}`).join(", ");
  }

  function renderGrid() {
    const rows = lines("ys", "y");
    const cols = lines("xs", "x");
    entries = [];
    if (!rows.length || !cols.length) {
      $("grid").replaceChildren(el("p", { class: "empty" }, "No values are shown: turn some on under Advanced."));
      return;
    }
    const table = el("table", { class: "grid" }, colgroup(cols), gridHead(cols), gridBody(rows, cols));
    table.style.setProperty("--cell-ratio", cellRatio());
    $("grid").replaceChildren(table);
  }

  function cellRatio() {
    const base = data.base_params || {};
    return base.width > 0 && base.height > 0 ? `${base.width} / ${base.height}` : "1";
  }

  function colgroup(cols) {
    return el("colgroup", {}, el("col", { class: "label-col" }), ...cols.map(() => el("col")));
  }

  function labelCell(value, attrs) {
    return el(
      "th",
      attrs,
      el("div", { class: "label-title" }, value ? titleOf(value) : ""),
      value && value.description ? el("div", { class: "desc", html: value.description }) : null,
    );
  }

  /* The corner names the axes: super-axes with double arrows, X and Y with single ones. */
  function cornerCell(attrs) {
    const arrows = { xs: "\u21d2", x: "\u2192", ys: "\u21d3", y: "\u2193" };
    const names = Object.keys(arrows)
      .filter((role) => state.roles[role])
      .map((role) => el("div", {}, `${titleOf(axisById.get(state.roles[role]))} ${arrows[role]}`));
    return el("th", Object.assign({ class: "corner" }, attrs), ...names);
  }

  function gridHead(cols) {
    const head = el("thead");
    if (state.roles.xs) {
      const supers = visibleValues(state.roles.xs);
      const span = cols.length / supers.length;
      head.append(
        el(
          "tr",
          { class: "super-head" },
          cornerCell({ rowspan: 2 }),
          ...supers.map((v) => labelCell(v, { class: "super-label", colspan: span, scope: "colgroup" })),
        ),
        el("tr", {}, ...cols.map((col) => labelCell(col.inner, { class: "col-label", scope: "col" }))),
      );
    } else {
      head.append(el("tr", {}, cornerCell({}), ...cols.map((col) => labelCell(col.inner, { class: "col-label", scope: "col" }))));
    }
    return head;
  }

  function gridBody(rows, cols) {
    const body = el("tbody");
    let block;
    rows.forEach((row, r) => {
      if (state.roles.ys && row.outer !== block) {
        block = row.outer;
        body.append(superRow(block, cols.length + 1));
      }
      const tr = el("tr", {}, labelCell(row.inner, { class: "row-label", scope: "row" }));
      entries.push(
        cols.map((col, c) => {
          const entry = { td: el("td", { class: "cell", "data-row": r, "data-col": c }), row, col, sig: "" };
          fillCell(entry);
          tr.append(entry.td);
          return entry;
        }),
      );
      body.append(tr);
    });
    return body;
  }

  function superRow(value, span) {
    const label = el(
      "div",
      { class: "sticky-left" },
      el("span", { class: "label-title" }, titleOf(value)),
      value.description ? el("div", { class: "desc", html: value.description }) : null,
    );
    return el("tr", { class: "super-row" }, el("th", { class: "super-label", colspan: span, scope: "rowgroup" }, label));
  }

  /* (Re)fill one table cell; does nothing when what it shows has not changed. */
  function fillCell(entry) {
    const values = cellValues(entry.row, entry.col);
    const info = describeCell(values);
    const sig = cellSig(info);
    if (sig === entry.sig) return;
    entry.sig = sig;
    entry.td.dataset.key = info.key;
    entry.td.dataset.state = info.kind;
    entry.td.replaceChildren(cellContent(info, values, false));
  }

  function cellSig(info) {
    const detail = info.cell ? `${info.cell.thumb}|${info.cell.hash}` : running();
    return `${info.key}|${info.kind}|${detail}`;
  }

  function cellContent(info, values, full) {
    if (info.kind === "skipped") return el("div", { class: "placeholder skipped" }, "skipped");
    if (info.kind === "pending") {
      return el("div", { class: "placeholder pending" }, running() ? "rendering\u2026" : "not rendered");
    }
    const label = cellLabel(values);
    const img = el("img", {
      src: urlOf(full ? info.cell.image : info.cell.thumb || info.cell.image),
      alt: label,
      loading: full ? null : "lazy",
      decoding: "async",
    });
    return full ? img : el("a", { class: "cell-link", href: urlOf(info.cell.image), title: label }, img);
  }

  function refreshCells() {
    for (const line of entries) for (const entry of line) fillCell(entry);
    refreshPopup();
  }

  function onGridClick(event) {
    const link = event.target.closest("a.cell-link");
    if (!link) return;
    event.preventDefault();
    const td = link.closest("td");
    openPopup(Number(td.dataset.row), Number(td.dataset.col));
  }

  /* Placeholders take the size of the first thumbnail that loads. */
  function onImageLoad(event) {
    const img = event.target;
    if (img.tagName !== "IMG" || document.documentElement.style.getPropertyValue("--thumb-w")) return;
    document.documentElement.style.setProperty("--thumb-w", img.naturalWidth + "px");
  }

  /* ---------- popup ---------- */

  function openPopup(r, c) {
    popupAt = [r, c];
    popupSig = "";
    refreshPopup();
    const dialog = $("popup");
    if (!dialog.open) dialog.showModal();
  }

  function closePopup() {
    popupAt = null;
    if ($("popup").open) $("popup").close();
  }

  function refreshPopup() {
    if (!popupAt) return;
    const entry = entries[popupAt[0]][popupAt[1]];
    const values = cellValues(entry.row, entry.col);
    const info = describeCell(values);
    const sig = cellSig(info);
    if (sig === popupSig) return;
    popupSig = sig;
    $("popup").dataset.key = info.key;
    $("popup-title").textContent = values.map((v) => (v ? titleOf(v) : "?")).join(" \u00b7 ");
    $("popup-figure").replaceChildren(cellContent(info, values, true));
    $("popup-params").replaceChildren(...metaRows(values, info.cell));
    $("popup-parameters").textContent = (info.cell && info.cell.parameters) || "";
    $("popup-copy").hidden = !(info.cell && info.cell.parameters);
    $("popup-copied").textContent = "";
    if (!$("popup").contains(document.activeElement)) $("popup").focus();
  }

  function metaRows(values, cell) {
    const rows = data.axes.map((axis, i) => [titleOf(axis), values[i] ? titleOf(values[i]) : "?", "axis"]);
    if (cell) {
      rows.push(["seed", String(cell.seed), "meta"]);
      rows.push(["render time", typeof cell.time === "number" ? cell.time.toFixed(2) + " s" : "?", "meta"]);
      for (const [name, value] of Object.entries(cell.params || {})) {
        if (!(name === "seed" && value === cell.seed)) rows.push([name, formatValue(value), "param"]);
      }
      if (cell.hash) rows.push(["image hash", cell.hash, "meta"]);
    }
    return rows.map(([name, value, kind]) =>
      el("tr", { class: kind, "data-name": name }, el("th", { scope: "row" }, name), el("td", {}, value)),
    );
  }

  function formatValue(value) {
    return typeof value === "string" ? value : JSON.stringify(value);
  }

  function onPopupKey(event) {
    if (!(event.key in ARROWS) || !popupAt || !$("popup").open) return;
    event.preventDefault();
    const [down, right] = ARROWS[event.key];
    openPopup(clamp(popupAt[0] + down, 0, entries.length - 1), clamp(popupAt[1] + right, 0, entries[0].length - 1));
  }

  /* A click on the backdrop (the dialog itself, outside its content) closes the popup. */
  function onPopupClick(event) {
    if (event.target === $("popup")) closePopup();
  }

  async function copyParameters() {
    const text = $("popup-parameters").textContent;
    let copied = false;
    try {
      await navigator.clipboard.writeText(text);
      copied = true;
    } catch (err) {
      copied = copyBySelection(text);
    }
    $("popup-copied").textContent = copied ? "Copied." : "Select the text below and copy it.";
  }

  function copyBySelection(text) {
    const area = el("textarea", { readonly: true, class: "offscreen" });
    area.value = text;
    $("popup").append(area);
    area.select();
    const copied = document.execCommand("copy");
    area.remove();
    return copied;
  }

  /* ---------- progress and live reloading ---------- */

  function renderProgress() {
    const box = $("progress");
    const p = data.progress;
    box.hidden = !p;
    if (!p) return;
    const parts = [`${p.done} / ${p.total} rendered`];
    if (p.skipped) parts.push(`${p.skipped} skipped`);
    if (p.failed) parts.push(`${p.failed} failed`);
    if (p.running) parts.push("rendering\u2026");
    else parts.push(p.done + p.failed >= p.total - p.skipped ? "complete" : "stopped");
    box.replaceChildren(el("progress", { max: p.total || 1, value: p.done }), " " + parts.join(" \u00b7 "));
    box.title = p.updated ? "updated " + p.updated : "";
  }

  function syncPolling() {
    if (running() && !pollTimer) pollTimer = setInterval(reloadData, POLL_MS);
    if (!running() && pollTimer) {
      clearInterval(pollTimer);
      pollTimer = 0;
    }
  }

  /* A fresh <script> re-runs data.js: the one way to re-read a file that works on file://. */
  function reloadData() {
    if (loading) return;
    loading = true;
    const script = document.createElement("script");
    script.src = "data.js?t=" + Date.now();
    script.onload = script.onerror = () => {
      script.remove();
      loading = false;
      takeData(window.GRIDGEN);
    };
    document.head.append(script);
  }

  function takeData(next) {
    if (!next || next === data || !Array.isArray(next.axes)) return;
    next.cells = next.cells || {};
    const reshaped = JSON.stringify(next.axes) !== JSON.stringify(data.axes);
    data = next;
    if (reshaped) setup();
    else refreshCells();
    renderProgress();
    syncPolling();
  }

  /* ---------- start ---------- */

  function setup() {
    indexAxes();
    defaults = defaultState();
    state = stateFromHash(location.hash);
    renderAll();
  }

  function bindEvents() {
    $("pickers").addEventListener("change", (event) => setRole(event.target.dataset.role, event.target.value || null));
    $("toggles").addEventListener("change", onToggle);
    $("tabs").addEventListener("click", onTabClick);
    $("tabs").addEventListener("keydown", onTabKey);
    $("show-values").addEventListener("change", onShowChange);
    $("grid").addEventListener("click", onGridClick);
    $("grid").addEventListener("load", onImageLoad, true);
    document.addEventListener("keydown", onPopupKey);
    $("popup").addEventListener("click", onPopupClick);
    $("popup").addEventListener("close", () => (popupAt = null));
    $("popup-close").addEventListener("click", closePopup);
    $("popup-copy").addEventListener("click", copyParameters);
    window.addEventListener("hashchange", onHashChange);
    new ResizeObserver(() => {
      document.documentElement.style.setProperty("--nav-h", $("controls").offsetHeight + "px");
    }).observe($("controls"));
  }

  function boot() {
    data = window.GRIDGEN;
    if (!data || !Array.isArray(data.axes)) {
      $("grid").replaceChildren(
        el("p", { class: "error" }, "data.js is missing or damaged: run `gridgen html OUTDIR` to write it again."),
      );
      return;
    }
    data.cells = data.cells || {};
    bindEvents();
    setup();
    syncPolling();
  }

  boot();
})();
