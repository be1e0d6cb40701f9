/*
 * gridgen grid explorer.
 *
 * Renders window.GRIDGEN (data.js, written by gridgen/explorer.py) as a table of images: any axis
 * can be the X axis, Y axis, X super-axis or Y super-axis, and every other axis is fixed by a row
 * of value tabs. The whole view lives in the URL hash, so a link reopens the same view. While a
 * run is in progress the page re-loads data.js every two seconds and fills in the cells that
 * landed. Plain browser JavaScript with no dependencies; works opened from file://.
 *
 * Large tables are windowed: only the rows and columns on screen (plus a margin) have DOM, the rest
 * is spacer cells of the same size; rows follow the scroll a few at a time, and thumbnails start
 * loading a batch per frame. The page exposes Performance API entries for benchmarks: mark `gridgen:boot`
 * (data.js parsed), mark `gridgen:interactive` (first grid laid out), and a `gridgen:render` measure
 * per grid render.
 *
 * What gridgen published about the images rides in data.js too: each axis's influence (near-duplicate
 * values are greyed, zero-influence axes can be hidden) and each cell's metrics, which "colour cells
 * by" turns into a heat map with a score badge (static/explorer.scores.js reads the numbers).
 *
 * Other scripts (static/explorer.tools.js: save, animate, compare, flipbook, favourites panel;
 * static/explorer.insight.js: the influence chart, the colour-by menu, the navigation toggle) use the
 * small API published as window.GridgenExplorer at the end of this file.
 */
(function () {
  "use strict";

  performance.mark("gridgen:boot");

  const ROLES = ["x", "y", "xs", "ys"];
  const ROLE_LABELS = { x: "X axis", y: "Y axis", xs: "X super-axis", ys: "Y super-axis" };
  const PAGE_ROLE_KEYS = { x: "x_axis", y: "y_axis", xs: "x_super_axis", ys: "y_super_axis" };
  const TOGGLES = [
    { key: "desc", page: "show_descriptions", fallback: true, label: "Show descriptions" },
    { key: "scale", page: "autoscale", fallback: false, label: "Fit images to the window" },
    { key: "sticky", page: "sticky", fallback: false, label: "Sticky navigation" },
    { key: "labels", page: "sticky_labels", fallback: true, label: "Sticky row/column labels" },
    { key: "same", page: "hide_identical", fallback: false, label: "Hide axes whose images are all identical" },
    { key: "nav", page: "navigation", fallback: true, label: "Navigation", button: true },
  ];
  const POLL_MS = 2000;
  const ARROWS = { ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [-1, 0], ArrowDown: [1, 0] };
  const SPACING = 2; // the table's border-spacing, px (explorer.css)
  const WINDOW_MIN_CELLS = 400; // larger tables only build DOM for the cells on screen
  const OVERSCAN_PX = 600; // how far beyond the viewport a windowed table renders, at most
  const OVERSCAN_LINES = 12; // ... or this many rows and columns, if less (small cells)
  const SUPER_ROW_H = 30; // a Y super-axis header row in a windowed table, px
  const LABEL_W = 136; // the row-label column of a windowed table, px
  const MIN_CELL_PX = 128; // smaller thumbnails are scaled up (pixelated) to at least this
  const THUMB_MAX = 256; // gridgen/store.py THUMB_SIZE
  const MAX_CYCLE_S = 180;
  const IMAGES_PER_FRAME = [24, 128]; // thumbnails a windowed table starts loading per frame: at least, at most
  const SMOOTH_FRAME_MS = [33, 50]; // a frame gap under the first lets the next frame start more, over the second fewer
  const FILL_FRAME_MS = 40; // a fitted view (nothing to scroll smoothly) starts thumbnails for this long per frame
  const LABEL_MIN_W = 14; // px a column needs for a (rotated) label of its own
  const LABEL_MIN_H = 16; // px a row needs for a label of its own
  const NARROW_W = 56; // columns narrower than this get rotated labels

  let data = null; // the window.GRIDGEN on show
  let axisById = new Map(); // axis id -> axis
  let axisIndex = new Map(); // axis id -> position in data.axes (and in a cell key)
  let valueMaps = new Map(); // axis id -> Map(value id -> value)
  let defaults = null; // the view the page opens with when the URL has no hash
  // {roles: {x, y, xs, ys}, toggles: {key: bool}, sel: {axis: value id}, hidden: {axis: Set},
  //  cycle: {axis: seconds}, filter: {axis: text}}
  let state = null;
  let view = null; // what the grid shows: see buildView()
  let rendered = new Map(); // "row:col" -> {td, r, c, sig} for the cells that have DOM
  let popupAt = null; // [row, col] of the cell in the popup
  let popupSig = "";
  let popupFile = ""; // the extra file the popup shows instead of the image ("": the image); kept while moving
  let pollTimer = 0;
  let loading = false;
  let windowFrame = 0;
  let imageQueue = []; // thumbnails of a windowed table waiting for their src (queueImage)
  let imageHead = 0;
  let imageFrame = 0;
  let imageBatch = IMAGES_PER_FRAME[0];
  let imageLastFrame = 0;
  let fillWait = 0; // frames a fitted view has painted before its thumbnails start
  let cycleTimers = new Map(); // axis id -> interval id
  let identicalCache = { data: null, axes: new Set() };
  let influenceByAxis = new Map(); // axis id -> its entry of data.influence (published by gridgen/metrics.py)
  let duplicateOf = new Map(); // axis id -> Map(value id -> the neighbour value it nearly duplicates)
  let scoreRange = { data: null, field: "", low: 0, high: 0 };
  const listeners = new Map(); // event name -> [fn]

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

  function on(name, fn) {
    if (!listeners.has(name)) listeners.set(name, []);
    listeners.get(name).push(fn);
  }

  function emit(name, detail) {
    for (const fn of listeners.get(name) || []) fn(detail);
  }

  /* ---------- view state and the URL hash ---------- */

  function indexAxes() {
    axisById = new Map(data.axes.map((axis) => [axis.id, axis]));
    axisIndex = new Map(data.axes.map((axis, i) => [axis.id, i]));
    valueMaps = new Map(data.axes.map((axis) => [axis.id, new Map(axis.values.map((v) => [v.id, v]))]));
    indexInfluence();
  }

  function indexInfluence() {
    const entries = Array.isArray(data.influence) ? data.influence.filter((entry) => axisById.has(entry.axis)) : [];
    influenceByAxis = new Map(entries.map((entry) => [entry.axis, entry]));
    duplicateOf = new Map(entries.map((entry) => [entry.axis, new Map(Object.entries(entry.duplicates || {}))]));
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
    const cycle = {};
    const filter = {};
    for (const axis of data.axes) {
      sel[axis.id] = defaultValue(axis);
      hidden[axis.id] = new Set(axis.values.filter((v) => v.show === false).map((v) => v.id));
      cycle[axis.id] = 0;
      filter[axis.id] = "";
    }
    return { roles, toggles, sel, hidden, cycle, filter, score: "", sort: "" };
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
    if (state.score) pairs.push(["score", state.score]);
    if (state.sort) pairs.push(["sort", state.sort]);
    for (const axis of data.axes) {
      if (state.sel[axis.id] !== null) pairs.push(["s." + axis.id, state.sel[axis.id]]);
      const hidden = [...state.hidden[axis.id]];
      if (hidden.length || defaults.hidden[axis.id].size) pairs.push(["h." + axis.id, hidden.join(",")]);
      if (state.cycle[axis.id]) pairs.push(["c." + axis.id, String(state.cycle[axis.id])]);
      if (state.filter[axis.id]) pairs.push(["f." + axis.id, state.filter[axis.id]]);
    }
    return "#" + pairs.map(([key, value]) => `${hashPart(key)}=${hashPart(value)}`).join("&");
  }

  /* Like URLSearchParams, but commas and slashes stay readable. */
  function hashPart(text) {
    return encodeURIComponent(text).replace(/%2C/g, ",").replace(/%2F/g, "/");
  }

  function stateFromHash(hash) {
    const result = defaultState();
    const query = new URLSearchParams(hash.replace(/^#/, ""));
    for (const role of ROLES) {
      // an empty role is "none"; one naming an axis this grid lacks (an old link) keeps the default
      if (query.get(role) === "" || axisById.has(query.get(role))) result.roles[role] = query.get(role) || null;
    }
    dedupeRoles(result.roles);
    for (const t of TOGGLES) {
      if (query.has(t.key)) result.toggles[t.key] = query.get(t.key) === "1";
    }
    result.score = query.get("score") || "";
    result.sort = result.score ? query.get("sort") || "" : "";
    for (const axis of data.axes) {
      const picked = query.get("s." + axis.id);
      if (hasValue(axis.id, picked)) result.sel[axis.id] = picked;
      const hidden = query.get("h." + axis.id);
      if (hidden !== null) result.hidden[axis.id] = new Set(hidden.split(",").filter((id) => hasValue(axis.id, id)));
      const cycle = Number(query.get("c." + axis.id));
      if (cycle > 0) result.cycle[axis.id] = clamp(cycle, 0, MAX_CYCLE_S);
      result.filter[axis.id] = query.get("f." + axis.id) || "";
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
    renderFilter();
    renderTabs();
    renderShowPanel();
    renderGrid();
    renderProgress();
    syncCycles();
  }

  function renderPickers() {
    const hiddenAxes = identicalShown();
    $("pickers").replaceChildren(
      ...ROLES.map((role) => {
        const select = el(
          "select",
          { id: "pick-" + role, "data-role": role },
          el("option", { value: "" }, "(none)"),
          ...data.axes.map((axis) =>
            el("option", { value: axis.id, disabled: hiddenAxes.has(axis.id) && axis.id !== state.roles[role] }, titleOf(axis)),
          ),
        );
        select.value = state.roles[role] || "";
        return el("label", { class: "picker" }, ROLE_LABELS[role] + " ", select);
      }),
    );
  }

  /* Give `role` to `axisId`; a role that held that axis takes this role's previous axis (a swap). */
  function setRole(role, axisId) {
    assignRole(role, axisId);
    showRoles();
  }

  /* Several roles at once ({x: id, y: id}), then one render. */
  function setRoles(roles) {
    for (const [role, axisId] of Object.entries(roles)) assignRole(role, axisId);
    showRoles();
  }

  function assignRole(role, axisId) {
    const previous = state.roles[role];
    for (const other of ROLES) {
      if (other !== role && axisId && state.roles[other] === axisId) state.roles[other] = previous;
    }
    state.roles[role] = axisId;
  }

  function showRoles() {
    syncCycleNotes();
    renderPickers();
    renderTabs();
    renderGrid();
    saveHash();
  }

  function renderToggles() {
    $("toggles").replaceChildren(
      ...TOGGLES.filter((t) => !t.button).map((t) => {
        const box = el("input", { type: "checkbox", id: "opt-" + t.key, "data-toggle": t.key });
        box.checked = state.toggles[t.key];
        return el("label", { class: "toggle" }, box, " " + t.label);
      }),
      el("span", { id: "identical-note", class: "note" }),
    );
    renderIdenticalNote();
  }

  function applyToggles() {
    for (const t of TOGGLES) {
      // a folded panel is the exception, so it is the one marked: body.nav-folded
      if (t.button) document.body.classList.toggle(t.key + "-folded", !state.toggles[t.key]);
      else document.body.classList.toggle("opt-" + t.key, state.toggles[t.key]);
    }
  }

  function onToggle(event) {
    const key = event.target.dataset.toggle;
    if (key) setToggle(key, event.target.checked);
  }

  function setToggle(key, value) {
    state.toggles[key] = value;
    const box = $("opt-" + key);
    if (box) box.checked = value;
    applyToggles();
    if (key === "same") {
      renderIdenticalNote();
      renderPickers();
      renderTabs();
      renderGrid();
    } else if (view && view.windowed) {
      renderGrid(); // a windowed table's geometry depends on the toggles
    }
    saveHash();
    emit("toggle", key);
  }

  /* ---------- axes whose values all render the same image ---------- */

  /* Axes whose influence is zero: no pair of cells differing in that axis alone differs at all. A grid
     published before the influence was computed falls back to comparing the images' hashes. */
  function identicalAxes() {
    if (identicalCache.data === data) return identicalCache.axes;
    if (influenceByAxis.size) {
      const none = [...influenceByAxis.values()].filter((entry) => entry.pairs > 0 && entry.distance === 0);
      identicalCache = { data, axes: new Set(none.map((entry) => entry.axis)) };
      return identicalCache.axes;
    }
    return identicalByHash();
  }

  /* Axes where, for every combination of the other axes, every rendered value has the same hash. */
  function identicalByHash() {
    const axes = new Set();
    const entries = Object.entries(data.cells).filter(([, cell]) => cell && cell.hash);
    const split = entries.map(([key, cell]) => [key.split("/"), cell.hash]);
    data.axes.forEach((axis, a) => {
      if (axis.values.length < 2) return;
      const groups = new Map();
      let compared = false;
      for (const [parts, hash] of split) {
        const saved = parts[a];
        parts[a] = "";
        const group = parts.join("/");
        parts[a] = saved;
        const first = groups.get(group);
        if (first === undefined) groups.set(group, hash);
        else if (first !== hash) return;
        else compared = true;
      }
      if (compared) axes.add(axis.id);
    });
    identicalCache = { data, axes };
    return axes;
  }

  /* The identical axes hidden right now (none unless the toggle is on). */
  function identicalShown() {
    return state.toggles.same ? identicalAxes() : new Set();
  }

  function renderIdenticalNote() {
    const note = $("identical-note");
    if (!note) return;
    const hidden = [...identicalShown()].map((id) => titleOf(axisById.get(id)));
    note.textContent = hidden.length ? `hidden (identical images): ${hidden.join(", ")}` : "";
  }

  /* The roles as the grid uses them: an axis hidden as identical plays none. */
  function effectiveRoles() {
    const hidden = identicalShown();
    const roles = {};
    for (const role of ROLES) roles[role] = hidden.has(state.roles[role]) ? null : state.roles[role];
    return roles;
  }

  /* ---------- filter: values of an axis by title ---------- */

  function matchesFilter(axisId, value) {
    const text = (state.filter[axisId] || "").trim().toLowerCase();
    if (!text) return true;
    return titleOf(value).toLowerCase().includes(text) || value.id.toLowerCase().includes(text);
  }

  function renderFilter() {
    const select = $("filter-axis");
    if (!select) return;
    const current = select.value;
    select.replaceChildren(...data.axes.map((axis) => el("option", { value: axis.id }, titleOf(axis))));
    select.value = axisById.has(current) ? current : (state.roles.x || (data.axes[0] && data.axes[0].id) || "");
    $("filter-text").value = state.filter[select.value] || "";
    renderFilterChips();
  }

  function renderFilterChips() {
    const chips = data.axes
      .filter((axis) => state.filter[axis.id])
      .map((axis) =>
        el(
          "button",
          { type: "button", class: "chip", "data-axis": axis.id, title: "Remove this filter" },
          `${titleOf(axis)}: \u201c${state.filter[axis.id]}\u201d \u00d7`,
        ),
      );
    $("filter-chips").replaceChildren(...chips);
  }

  function setFilter(axisId, text) {
    state.filter[axisId] = text;
    // a tab axis whose chosen value is filtered out moves to the first value that matches
    const chosen = valueById(axisId, state.sel[axisId]);
    if (chosen && !matchesFilter(axisId, chosen)) {
      const match = visibleValues(axisId)[0];
      if (match) state.sel[axisId] = match.id;
    }
    if ($("filter-axis").value === axisId && $("filter-text").value !== text) $("filter-text").value = text;
    renderFilterChips();
    renderTabs();
    renderGrid();
    saveHash();
  }

  function onFilterInput() {
    setFilter($("filter-axis").value, $("filter-text").value);
  }

  function onFilterAxis() {
    $("filter-text").value = state.filter[$("filter-axis").value] || "";
  }

  function onChipClick(event) {
    const chip = event.target.closest(".chip");
    if (chip) setFilter(chip.dataset.axis, "");
  }

  /* ---------- value tabs of the fixed axes ---------- */

  function fixedAxes() {
    const used = new Set(Object.values(state.roles));
    const hidden = identicalShown();
    return data.axes.filter((axis) => !used.has(axis.id) && !hidden.has(axis.id));
  }

  function renderTabs() {
    $("tabs").replaceChildren(...fixedAxes().map(tabRow));
  }

  function tabRow(axis) {
    const tabs = axis.values.map((v) =>
      el(
        "button",
        { type: "button", role: "tab", class: "tab" + (v.skip ? " skip" : "") + nearDuplicateClass(axis.id, v), "data-value": v.id, title: nearDuplicateNote(axis.id, v) },
        titleOf(v),
      ),
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
      tab.hidden = !selected && !matchesFilter(axisId, valueById(axisId, tab.dataset.value));
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
    const tabs = [...row.querySelectorAll('[role="tab"]')].filter((tab) => !tab.hidden);
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

  /* ---------- advanced: which values are shown, auto-cycle ---------- */

  function renderShowPanel() {
    $("show-values").replaceChildren(...data.axes.map(showFieldset));
    syncCycleNotes();
  }

  /* Auto-cycle steps a tab axis: an axis on the grid (X, Y or a super-axis) says it waits until it has tabs. */
  function syncCycleNotes() {
    for (const fieldset of $("show-values").querySelectorAll("fieldset")) {
      const role = ROLES.find((r) => state.roles[r] === fieldset.dataset.axis);
      const note = fieldset.querySelector(".cycle-note");
      note.textContent = role ? ` (on the grid as the ${ROLE_LABELS[role]}: it cycles once it is a tab axis again)` : " (0 = off)";
      note.classList.toggle("warn", Boolean(role) && state.cycle[fieldset.dataset.axis] > 0);
    }
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
    const cycle = el("input", {
      type: "number",
      class: "cycle-input",
      min: 0,
      max: MAX_CYCLE_S,
      step: "any",
      value: state.cycle[axis.id] || 0,
      "data-cycle": axis.id,
      "aria-label": `Auto-cycle ${titleOf(axis)} every N seconds (0: off)`,
    });
    const fieldset = el(
      "fieldset",
      { "data-axis": axis.id },
      el("legend", {}, el("label", {}, all, " " + titleOf(axis))),
      el("div", { class: "cycle" }, el("label", {}, "Auto-cycle every ", cycle, " s"), el("span", { class: "note cycle-note" }, " (0 = off)")),
      ...boxes,
    );
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
    if (box.dataset.cycle) return onCycleChange(box);
    const axis = axisById.get(box.dataset.axis);
    if (!axis) return;
    const hidden = state.hidden[axis.id];
    if (box.classList.contains("show-all")) {
      hidden.clear();
      if (!box.checked) for (const v of axis.values) hidden.add(v.id);
    } else if (box.checked) hidden.delete(box.dataset.value);
    else hidden.add(box.dataset.value);
    moveOffHidden(axis);
    syncShowFieldset(box.closest("fieldset"));
    renderTabs();
    renderGrid();
    saveHash();
  }

  /* A tab axis whose chosen value was just hidden moves to the next value still shown (wrapping round). */
  function moveOffHidden(axis) {
    const hidden = state.hidden[axis.id];
    if (!hidden.has(state.sel[axis.id])) return;
    const at = axis.values.findIndex((v) => v.id === state.sel[axis.id]);
    for (let step = 1; step < axis.values.length; step++) {
      const next = axis.values[(at + step) % axis.values.length];
      if (!hidden.has(next.id)) {
        state.sel[axis.id] = next.id;
        return;
      }
    }
  }

  function onCycleChange(input) {
    const seconds = Number(input.value);
    state.cycle[input.dataset.cycle] = Number.isFinite(seconds) ? clamp(seconds, 0, MAX_CYCLE_S) : 0;
    if (String(state.cycle[input.dataset.cycle]) !== input.value) input.value = state.cycle[input.dataset.cycle];
    syncCycles();
    syncCycleNotes();
    saveHash();
  }

  /* One timer per axis with an auto-cycle period: it steps the axis's chosen value. */
  function syncCycles() {
    for (const [axisId, timer] of cycleTimers) {
      clearInterval(timer.id);
      if (timer.seconds !== state.cycle[axisId]) cycleTimers.delete(axisId);
    }
    const next = new Map();
    for (const axis of data.axes) {
      const seconds = state.cycle[axis.id];
      if (seconds > 0) next.set(axis.id, { seconds, id: setInterval(() => cycleStep(axis.id), seconds * 1000) });
    }
    cycleTimers = next;
  }

  function cycleStep(axisId) {
    const values = visibleValues(axisId);
    if (!values.length) return;
    const at = values.findIndex((v) => v.id === state.sel[axisId]);
    selectValue(axisId, values[(at + 1) % values.length].id);
    emit("cycle", axisId);
  }

  /* ---------- the grid: what it shows ---------- */

  function visibleValues(axisId) {
    if (!axisId) return [null];
    return axisById.get(axisId).values.filter((v) => !state.hidden[axisId].has(v.id) && matchesFilter(axisId, v));
  }

  /* The table's rows (or columns): every visible super-axis value times every visible axis value. */
  function lines(superAxis, axis) {
    const result = [];
    for (const outer of visibleValues(superAxis)) {
      for (const inner of visibleValues(axis)) result.push({ outer, inner });
    }
    return result;
  }

  /* The size a cell shows its thumbnail at, from the images' size (a store thumb fits 256 px). */
  function thumbSize() {
    const [w, h] = imageSize();
    const fit = Math.min(1, THUMB_MAX / Math.max(w, h));
    const tw = Math.max(1, Math.round(w * fit));
    const th = Math.max(1, Math.round(h * fit));
    const up = Math.max(1, Math.ceil(MIN_CELL_PX / Math.max(tw, th)));
    return { w: tw * up, h: th * up, pixelated: up > 1, ratio: `${w} / ${h}` };
  }

  /* The grid's image size: the real size the store recorded, else the size params (older grids). */
  function imageSize(cell) {
    for (const key in data.cells) {
      cell = cell || data.cells[key];
      break;
    }
    if (cell && Array.isArray(cell.size) && cell.size[0] > 0 && cell.size[1] > 0) return cell.size;
    const params = (cell && cell.params) || {};
    if (params.width > 0 && params.height > 0) return [params.width, params.height];
    const base = data.base_params || {};
    return base.width > 0 && base.height > 0 ? [base.width, base.height] : [512, 512];
  }

  function buildView() {
    const roles = effectiveRoles();
    const idx = {};
    for (const role of ROLES) idx[role] = roles[role] ? axisIndex.get(roles[role]) : -1;
    const rows = lines(roles.ys, roles.y);
    const cols = lines(roles.xs, roles.x);
    sortLines(rows, cols, idx);
    const size = thumbSize();
    const windowed = rows.length * cols.length > WINDOW_MIN_CELLS;
    let cellW = size.w;
    let cellH = size.h;
    if (windowed && state.toggles.scale && cols.length) {
      const room = $("grid").clientWidth - 32 - LABEL_W - SPACING * (cols.length + 2);
      cellW = Math.max(8, Math.floor(room / cols.length));
      cellH = Math.max(8, Math.round((cellW * size.h) / size.w));
    }
    // display rows: a cell row is its index in `rows`; a Y super-axis header row is {value}
    const display = [];
    let block;
    rows.forEach((row, r) => {
      if (roles.ys && row.outer !== block) {
        block = row.outer;
        display.push({ value: block });
      }
      display.push(r);
    });
    const offsets = new Float64Array(display.length + 1);
    for (let d = 0; d < display.length; d++) {
      offsets[d + 1] = offsets[d] + (typeof display[d] === "number" ? cellH : SUPER_ROW_H) + SPACING;
    }
    return {
      roles,
      idx,
      base: baseValues(),
      rows,
      cols,
      display,
      offsets,
      windowed,
      cellW,
      cellH,
      colPitch: cellW + SPACING,
      // small cells: rotated column labels, and only every n-th label where one would not fit
      narrow: windowed && cellW < NARROW_W,
      colLabelEvery: windowed ? Math.ceil(LABEL_MIN_W / (cellW + SPACING)) : 1,
      rowLabelEvery: windowed ? Math.ceil(LABEL_MIN_H / (cellH + SPACING)) : 1,
      pixelated: size.pixelated,
      ratio: size.ratio,
      win: null,
    };
  }

  /* The chosen value of every axis, in axes order. */
  function baseValues() {
    return data.axes.map((axis) => valueById(axis.id, state.sel[axis.id]));
  }

  /* The value of every axis, in axes order, for the cell at (row, col). */
  function cellValues(row, col) {
    const values = view.base.slice();
    if (view.idx.ys >= 0) values[view.idx.ys] = row.outer;
    if (view.idx.y >= 0) values[view.idx.y] = row.inner;
    if (view.idx.xs >= 0) values[view.idx.xs] = col.outer;
    if (view.idx.x >= 0) values[view.idx.x] = col.inner;
    return values;
  }

  function describeCell(values) {
    if (values.some((v) => !v)) return { key: "", kind: "pending", cell: null };
    const key = values.map((v) => v.id).join("/");
    if (values.some((v) => v.skip)) return { key, kind: "skipped", cell: null };
    const cell = data.cells[key] || null;
    return { key, kind: cell ? "done" : "pending", cell };
  }

  /* The values (in axes order) of the cell with this key, or null when the key is not in the grid. */
  function valuesOfKey(key) {
    const ids = String(key).split("/");
    if (ids.length !== data.axes.length) return null;
    const values = data.axes.map((axis, i) => valueById(axis.id, ids[i]));
    return values.every(Boolean) ? values : null;
  }

  function cellLabel(values) {
    return data.axes.map((axis, i) => `${titleOf(axis)}: ${values[i] ? titleOf(values[i]) : "?"}`).join(", ");
  }

  /* ---------- scores: colour cells by an image metric or any numeric field (static/explorer.scores.js) ---------- */

  const { scoreOf, scoreLabel, formatScore } = window.GridgenScores;

  /* The range of a score over the grid, found when it is first asked for. */
  function range(field) {
    if (scoreRange.data !== data || scoreRange.field !== field) {
      scoreRange = Object.assign({ data, field }, window.GridgenScores.rangeOf(data.cells, field));
    }
    return scoreRange;
  }

  function heatColour(score) {
    return window.GridgenScores.heatColour(score, range(state.score));
  }

  function setScore(field) {
    state.score = field || "";
    if (!state.score) state.sort = "";
    renderGrid();
    saveHash();
    emit("score", state.score);
  }

  /* ---------- sorting a column's rows (or a row's columns) by their score ---------- */

  function lineKey(line) {
    return `${line.outer ? line.outer.id : ""}/${line.inner ? line.inner.id : ""}`;
  }

  function sortButton(line) {
    const active = state.sort === line;
    return el(
      "button",
      { type: "button", class: active ? "sort active" : "sort", "data-sort": line, "aria-pressed": String(active), title: active ? "Unsort" : `Sort by ${scoreLabel(state.score)}, highest first` },
      line.startsWith("col/") ? "\u2193" : "\u2192",
    );
  }

  function toggleSort(line) {
    state.sort = state.sort === line ? "" : line;
    renderGrid();
    saveHash();
  }

  /* Order the rows by their score in the sorted column (or the columns by the sorted row), highest first,
     within each super-axis block. */
  function sortLines(rows, cols, idx) {
    if (!state.score || !state.sort) return;
    const across = state.sort.startsWith("col/") ? cols : state.sort.startsWith("row/") ? rows : null;
    const prefix = across === cols ? "col/" : "row/";
    const fixed = across && across.find((line) => state.sort === prefix + lineKey(line));
    if (!fixed) return;
    const base = baseValues();
    const sorted = across === cols ? rows : cols;
    window.GridgenScores.orderWithinBlocks(sorted, (line) => {
      const [row, col] = across === cols ? [line, fixed] : [fixed, line];
      const values = base.slice();
      if (idx.ys >= 0) values[idx.ys] = row.outer;
      if (idx.y >= 0) values[idx.y] = row.inner;
      if (idx.xs >= 0) values[idx.xs] = col.outer;
      if (idx.x >= 0) values[idx.x] = col.inner;
      return scoreOf(describeCell(values).cell, state.score);
    });
  }

  /* ---------- the grid: the table ---------- */

  function renderGrid() {
    const start = performance.now();
    view = buildView();
    fillWait = 0;
    document.body.classList.toggle("small-images", view.pixelated);
    const previous = rendered;
    rendered = new Map();
    const { rows, cols } = view;
    if (!rows.length || !cols.length) {
      $("grid").replaceChildren(el("p", { class: "empty" }, "No values are shown: turn some on under Advanced, or clear the filter."));
      finishRender(start);
      return;
    }
    view.win = view.windowed ? guessWindow() : { r0: 0, r1: view.display.length, c0: 0, c1: cols.length };
    const classes = ["grid", view.windowed && "windowed", view.pixelated && "pixelated", view.narrow && "narrow", view.rowLabelEvery > 1 && "short"];
    const table = el("table", { class: classes.filter(Boolean).join(" ") });
    table.style.setProperty("--cell-ratio", view.ratio);
    table.style.setProperty("--cell-w", view.cellW + "px");
    table.style.setProperty("--cell-h", view.cellH + "px");
    if (view.windowed) {
      table.style.setProperty("--label-w", LABEL_W + "px");
      table.style.width = LABEL_W + SPACING * 2 + cols.length * view.colPitch + "px";
    }
    fillTable(table, previous);
    $("grid").replaceChildren(table);
    if (view.windowed) updateWindow();
    finishRender(start);
  }

  /* Lay the page out now, so the measure covers the whole cost, and tell the tools. */
  function finishRender(start) {
    void document.body.offsetHeight;
    performance.measure("gridgen:render", { start, end: performance.now() });
    emit("render", view);
  }

  /* Before the table is in the page: the rows and columns a viewport at the top of the grid shows. */
  function guessWindow() {
    const top = Math.max(0, $("grid").getBoundingClientRect().top + 80);
    return windowAround(-top, innerHeight - top, -LABEL_W, innerWidth - LABEL_W);
  }

  /* The display rows and columns that cover the given body-relative box, plus the overscan (or a share of it). */
  function windowAround(top, bottom, left, right, share = 1) {
    const rowsOver = share * Math.min(OVERSCAN_PX, OVERSCAN_LINES * (view.cellH + SPACING));
    const colsOver = share * Math.min(OVERSCAN_PX, OVERSCAN_LINES * view.colPitch);
    const [r0, r1] = rowRange(top - rowsOver, bottom + rowsOver);
    const c0 = clamp(Math.floor((left - colsOver) / view.colPitch), 0, view.cols.length);
    const c1 = clamp(Math.ceil((right + colsOver) / view.colPitch), c0, view.cols.length);
    return { r0, r1, c0, c1 };
  }

  /* Display rows [d0, d1) that intersect body-relative y in [top, bottom). */
  function rowRange(top, bottom) {
    const offsets = view.offsets;
    const n = view.display.length;
    let lo = 0;
    let hi = n;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (offsets[mid + 1] <= top) lo = mid + 1;
      else hi = mid;
    }
    let end = lo;
    while (end < n && offsets[end] < bottom) end++;
    return [lo, Math.max(lo, end)];
  }

  /* Re-window a windowed table as the viewport moves. Rows follow the viewport a few at a time (scrolling down
     adds the rows coming into the overscan below and drops those leaving it above), so a scroll frame builds a
     row or two instead of re-building the whole window every few wheel steps; a move to other columns, or a
     jump past the whole window, builds the table again. */
  function updateWindow() {
    windowFrame = 0;
    if (!view || !view.windowed || !view.win) return;
    const table = $("grid").querySelector("table.grid");
    if (!table || !table.tBodies[0] || !table.tBodies[0].rows.length) return;
    const bodyTop = table.tBodies[0].rows[0].getBoundingClientRect().top;
    const colsLeft = table.getBoundingClientRect().left + SPACING * 2 + LABEL_W;
    const v0 = clamp(Math.floor(-colsLeft / view.colPitch), 0, view.cols.length);
    const v1 = clamp(Math.ceil((innerWidth - colsLeft) / view.colPitch), v0, view.cols.length);
    const win = view.win;
    const box = [-bodyTop, innerHeight - bodyTop, -colsLeft, innerWidth - colsLeft];
    const next = windowAround(...box);
    if (v0 >= win.c0 && v1 <= win.c1) {
      // rows move once half their overscan is used up: a few rows per wheel step, none for a window just built
      const need = windowAround(...box, 0.5);
      if (need.r0 < win.r0 || need.r1 > win.r1) shiftRows(table.tBodies[0], next.r0, next.r1);
      return;
    }
    view.win = next;
    fillTable(table, rendered);
  }

  function scheduleWindow() {
    if (!windowFrame && view && view.windowed) windowFrame = requestAnimationFrame(updateWindow);
  }

  /* Build the table's colgroup, head and body for view.win, reusing the cells `previous` had. */
  function fillTable(table, previous) {
    const reuse = previous;
    rendered = new Map();
    table.replaceChildren(colgroup(), gridHead(), gridBody(reuse));
  }

  /* Move the body's rendered display rows to [r0, r1): drop the rows that left, build the rows that came in. */
  function shiftRows(body, r0, r1) {
    const win = view.win;
    if (r0 >= win.r1 || r1 <= win.r0) {
      view.win = Object.assign({}, win, { r0, r1 });
      rendered = new Map();
      body.replaceWith(gridBody(null));
      return;
    }
    for (const row of body.querySelectorAll(":scope > tr.spacer-row")) row.remove();
    const rows = [...body.rows];
    const dropped = rows.slice(0, Math.max(0, r0 - win.r0)).concat(rows.slice(rows.length - Math.max(0, win.r1 - r1)));
    for (const tr of dropped) {
      for (const td of tr.querySelectorAll("td.cell")) rendered.delete(td.dataset.row + ":" + td.dataset.col);
      tr.remove();
    }
    const spacers = spacerWidths();
    const span = rowSpan(spacers);
    const above = [];
    for (let d = r0; d < win.r0; d++) above.push(displayRow(d, spacers, span, null));
    const below = [];
    for (let d = win.r1; d < r1; d++) below.push(displayRow(d, spacers, span, null));
    body.prepend(...above);
    body.append(...below);
    view.win = Object.assign({}, win, { r0, r1 });
    const n = view.display.length;
    if (r0 > 0) body.prepend(spacerRow(view.offsets[r0] - SPACING, span));
    if (r1 < n) body.append(spacerRow(view.offsets[n] - view.offsets[r1] - SPACING, span));
  }

  function spacerWidths() {
    const { c0, c1 } = view.win;
    return {
      left: c0 > 0 ? c0 * view.colPitch - SPACING : 0,
      right: c1 < view.cols.length ? (view.cols.length - c1) * view.colPitch - SPACING : 0,
    };
  }

  function colgroup() {
    const { c0, c1 } = view.win;
    const spacers = spacerWidths();
    const cols = [el("col", { class: "label-col" })];
    if (spacers.left) cols.push(el("col", { style: `width:${spacers.left}px` }));
    for (let c = c0; c < c1; c++) cols.push(el("col", view.windowed ? { style: `width:${view.cellW}px` } : {}));
    if (spacers.right) cols.push(el("col", { style: `width:${spacers.right}px` }));
    return el("colgroup", {}, ...cols);
  }

  /* A column or row label; `role` names the axis it belongs to, `line` the column or row (for sorting). */
  function labelCell(value, attrs, role, line, quiet) {
    const axisId = view.roles[role];
    const classes = (attrs.class || "") + nearDuplicateClass(axisId, value);
    const title = value ? titleOf(value) : "";
    return el(
      "th",
      Object.assign({}, attrs, { class: classes, title: nearDuplicateNote(axisId, value) || (quiet ? title : null) }),
      el("div", { class: "label-title" }, quiet ? "" : title),
      value && value.description ? el("div", { class: "desc", html: value.description }) : null,
      line && state.score ? sortButton(line) : null,
    );
  }

  /* ---------- near-duplicate values (from the published influence) ---------- */

  function nearDuplicate(axisId, value) {
    const map = value && axisId ? duplicateOf.get(axisId) : null;
    const twin = map && map.get(value.id);
    return twin ? valueById(axisId, twin) : null;
  }

  function nearDuplicateClass(axisId, value) {
    return nearDuplicate(axisId, value) ? " near-dup" : "";
  }

  function nearDuplicateNote(axisId, value) {
    const twin = nearDuplicate(axisId, value);
    return twin ? `Nearly the same images as ${titleOf(twin)}` : null;
  }

  /* The corner names the axes: super-axes with double arrows, X and Y with single ones. */
  function cornerCell(attrs) {
    const arrows = { xs: "\u21d2", x: "\u2192", ys: "\u21d3", y: "\u2193" };
    const names = Object.keys(arrows)
      .filter((role) => view.roles[role])
      .map((role) => el("div", {}, `${titleOf(axisById.get(view.roles[role]))}\u00a0${arrows[role]}`)); // the arrow keeps to its name
    return el("th", Object.assign({ class: "corner" }, attrs), ...names);
  }

  function spacerCell(tag, width) {
    return width ? el(tag, { class: "spacer", "aria-hidden": "true" }) : null;
  }

  function gridHead() {
    const { c0, c1 } = view.win;
    const spacers = spacerWidths();
    const head = el("thead");
    const labels = [];
    for (let c = c0; c < c1; c++) {
      const quiet = c % view.colLabelEvery !== 0; // too narrow for every label: every n-th, the rest on hover
      labels.push(labelCell(view.cols[c].inner, { class: "col-label", scope: "col" }, "x", "col/" + lineKey(view.cols[c]), quiet));
    }
    if (view.roles.xs) {
      const supers = [];
      for (let c = c0; c < c1; ) {
        const outer = view.cols[c].outer;
        let end = c;
        while (end < c1 && view.cols[end].outer === outer) end++;
        supers.push(labelCell(outer, { class: "super-label", colspan: end - c, scope: "colgroup" }, "xs"));
        c = end;
      }
      head.append(
        el(
          "tr",
          { class: "super-head" },
          cornerCell({ rowspan: 2 }),
          spacerCell("th", spacers.left),
          ...supers,
          spacerCell("th", spacers.right),
        ),
        el("tr", {}, spacerCell("th", spacers.left), ...labels, spacerCell("th", spacers.right)),
      );
    } else {
      head.append(el("tr", {}, cornerCell({}), spacerCell("th", spacers.left), ...labels, spacerCell("th", spacers.right)));
    }
    return head;
  }

  function gridBody(previous) {
    const { r0, r1 } = view.win;
    const spacers = spacerWidths();
    const span = rowSpan(spacers);
    const fragment = document.createDocumentFragment();
    if (r0 > 0) fragment.append(spacerRow(view.offsets[r0] - SPACING, span));
    for (let d = r0; d < r1; d++) fragment.append(displayRow(d, spacers, span, previous));
    const n = view.display.length;
    if (r1 < n) fragment.append(spacerRow(view.offsets[n] - view.offsets[r1] - SPACING, span));
    const body = el("tbody");
    body.append(fragment);
    return body;
  }

  function rowSpan(spacers) {
    return 1 + (spacers.left ? 1 : 0) + (view.win.c1 - view.win.c0) + (spacers.right ? 1 : 0);
  }

  /* The <tr> of display row d: a Y super-axis header, or a label and the cells of columns c0..c1. */
  function displayRow(d, spacers, span, previous) {
    const item = view.display[d];
    if (typeof item !== "number") return superRow(item.value, span);
    const { c0, c1 } = view.win;
    const quiet = item % view.rowLabelEvery !== 0;
    const label = labelCell(view.rows[item].inner, { class: "row-label", scope: "row" }, "y", "row/" + lineKey(view.rows[item]), quiet);
    const tr = el("tr", { style: view.windowed ? `height:${view.cellH}px` : null }, label);
    if (spacers.left) tr.append(el("td", { class: "spacer" }));
    for (let c = c0; c < c1; c++) {
      const id = item + ":" + c;
      let entry = previous && previous.get(id);
      if (!entry) entry = { td: el("td", { class: "cell", "data-row": item, "data-col": c }), r: item, c, sig: "" };
      fillCell(entry);
      rendered.set(id, entry);
      tr.append(entry.td);
    }
    if (spacers.right) tr.append(el("td", { class: "spacer" }));
    return tr;
  }

  function spacerRow(height, span) {
    return el("tr", { class: "spacer-row", "aria-hidden": "true" }, el("td", { colspan: span, style: `height:${height}px` }));
  }

  function superRow(value, span) {
    const label = el(
      "div",
      { class: "sticky-left" },
      el("span", { class: "label-title" }, titleOf(value)),
      value.description ? el("div", { class: "desc", html: value.description }) : null,
    );
    return el(
      "tr",
      { class: "super-row", style: view.windowed ? `height:${SUPER_ROW_H}px` : null },
      el("th", { class: "super-label" + nearDuplicateClass(view.roles.ys, value), colspan: span, scope: "rowgroup", title: nearDuplicateNote(view.roles.ys, value) }, label),
    );
  }

  /* (Re)fill one table cell; does nothing when what it shows has not changed. */
  function fillCell(entry) {
    const values = cellValues(view.rows[entry.r], view.cols[entry.c]);
    const info = describeCell(values);
    const score = state.score ? scoreOf(info.cell, state.score) : null;
    const shape = `${view.cellW}x${view.cellH}${view.narrow ? "n" : ""}`; // a reused cell may change size
    const sig = cellSig(info) + (info.kind === "done" && favourites.has(info.key) ? "|*" : "") + `|${state.score}${score}|${shape}`;
    if (sig === entry.sig) return;
    entry.sig = sig;
    entry.td.dataset.key = info.key;
    entry.td.dataset.state = info.kind;
    // the star and the score badge share the image's grid area: an overlay with no positioned element, which
    // would cost every cell its own compositing layer next to the sticky row labels
    entry.td.classList.toggle("heat", score !== null);
    if (score === null) entry.td.style.removeProperty("--heat");
    else entry.td.style.setProperty("--heat", heatColour(score));
    if (view.narrow) {
      // thousands of cells a few px wide (fit to the window): the image alone, no room for a star or a badge
      entry.td.replaceChildren(cellContent(info, values, false));
      return;
    }
    const box = el("div", { class: "cell-box" }, cellContent(info, values, false));
    if (info.kind === "done") box.append(starButton(info.key));
    if (score !== null) box.append(el("span", { class: "score", title: scoreLabel(state.score) }, formatScore(score)));
    entry.td.replaceChildren(box);
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
    const src = urlOf(full ? info.cell.image : info.cell.thumb || info.cell.image);
    const queued = !full && view.windowed;
    const img = el("img", {
      src: queued ? null : src,
      "data-src": queued ? src : null,
      alt: queued ? "" : label, // an image without a source would lay its alt text out: given with the source
      loading: full || queued ? null : "lazy", // a windowed table only has what is near the screen
      decoding: "async",
      width: full ? null : view.cellW,
      height: full ? null : view.cellH,
    });
    if (queued) queueImage(img);
    if (full) return img;
    if (view.narrow) img.title = label; // a narrow cell is its image alone: a click on it opens the popup
    return view.narrow ? img : el("a", { class: "cell-link", href: urlOf(info.cell.image), title: label }, img);
  }

  /* A windowed table's thumbnails start loading a batch per frame, so a view that shows thousands of cells at
     once (fit to the window) paints at once and fills in, instead of freezing while the browser loads every
     image first. While scrolling, the batch grows while frames stay smooth and halves when one runs long, so
     scrolling stays fluid on a slow machine and fills fast on a quick one. A fitted view, which has nothing to
     keep smooth, paints its cells first and then starts thumbnails for FILL_FRAME_MS of each frame: few frames
     (each one paints thousands of cells again) and the whole view fills as fast as the browser loads files.
     Images scrolled out before their turn are dropped. */
  function queueImage(img) {
    imageQueue.push(img);
    if (!imageFrame) imageFrame = requestAnimationFrame(pumpImages);
  }

  function pumpImages(now) {
    imageFrame = 0;
    if (windowFrame) {
      // re-window first: it reads the layout, which the images started below would make stale (a forced layout
      // of the whole table in the middle of the frame)
      cancelAnimationFrame(windowFrame);
      updateWindow();
    }
    const fill = Boolean(view && view.narrow);
    if (fill && fillWait < 2) {
      // a fitted view paints its cells, and has that frame on screen, before its thousands of thumbnails start
      fillWait++;
      imageLastFrame = now;
      imageFrame = requestAnimationFrame(pumpImages);
      return;
    }
    const gap = imageLastFrame ? now - imageLastFrame : 0;
    const [least, most] = IMAGES_PER_FRAME;
    const [smooth, long] = SMOOTH_FRAME_MS;
    const grown = gap < smooth ? imageBatch * 1.25 + 1 : gap > long ? imageBatch / 2 : imageBatch;
    imageBatch = clamp(Math.round(grown), least, most);
    const stop = fill ? performance.now() + FILL_FRAME_MS : Infinity;
    let started = 0;
    while (imageHead < imageQueue.length && (fill ? performance.now() < stop : started < imageBatch)) {
      const img = imageQueue[imageHead++];
      if (img.isConnected && !img.src) {
        img.alt = img.title || img.parentNode.title;
        img.src = img.dataset.src;
        started++;
      }
    }
    if (imageHead < imageQueue.length) {
      imageLastFrame = now;
      imageFrame = requestAnimationFrame(pumpImages);
    } else {
      imageQueue = [];
      imageHead = 0;
      imageLastFrame = 0;
      imageBatch = least;
      fillWait = 0;
    }
  }

  function refreshCells() {
    if (view) view.base = baseValues();
    for (const entry of rendered.values()) fillCell(entry);
    refreshPopup();
    emit("cells", view);
  }

  function onGridClick(event) {
    const sort = event.target.closest("button.sort");
    if (sort) {
      toggleSort(sort.dataset.sort);
      return;
    }
    const star = event.target.closest("button.star");
    if (star) {
      event.preventDefault();
      toggleFavourite(star.dataset.key);
      return;
    }
    const link = event.target.closest("a.cell-link, table.narrow td.cell > img");
    if (!link) return;
    event.preventDefault();
    const td = link.closest("td");
    openPopup(Number(td.dataset.row), Number(td.dataset.col));
  }

  /* ---------- favourites: stars keyed by cell key ---------- */
  /*
   * The store is the one thing to replace for server-backed favourites:
   * GridgenExplorer.favourites.useStore({load() -> keys or Promise of keys, save(keys)}).
   * The default keeps them in localStorage, per page path.
   */

  const localFavouriteStore = {
    name: "gridgen:favourites:" + location.pathname,
    load() {
      try {
        const keys = JSON.parse(localStorage.getItem(this.name) || "[]");
        return Array.isArray(keys) ? keys.map(String) : [];
      } catch (err) {
        return [];
      }
    },
    save(keys) {
      try {
        localStorage.setItem(this.name, JSON.stringify(keys));
      } catch (err) {
        // storage full or disabled: the stars last until the page closes
      }
    },
  };
  let favouriteStore = localFavouriteStore;
  let favourites = new Set();

  function loadFavourites() {
    return Promise.resolve(favouriteStore.load()).then((keys) => {
      favourites = new Set(keys || []);
      favouritesChanged(false);
    });
  }

  function useFavouriteStore(store) {
    favouriteStore = store || localFavouriteStore;
    return loadFavourites();
  }

  function setFavourite(key, starred) {
    if (!key || favourites.has(key) === starred) return;
    if (starred) favourites.add(key);
    else favourites.delete(key);
    favouritesChanged(true);
  }

  function toggleFavourite(key) {
    setFavourite(key, !favourites.has(key));
  }

  function favouritesChanged(save) {
    if (save) favouriteStore.save([...favourites]);
    for (const entry of rendered.values()) fillCell(entry);
    syncPopupStar();
    const count = $("favourites-count");
    if (count) count.textContent = favourites.size ? String(favourites.size) : "";
    emit("favourites", favourites);
  }

  function starButton(key) {
    const starred = favourites.has(key);
    return el(
      "button",
      {
        type: "button",
        class: starred ? "star starred" : "star",
        "data-key": key,
        "aria-pressed": String(starred),
        title: starred ? "Starred: click to unstar" : "Star this image",
      },
      starred ? "\u2605" : "\u2606",
    );
  }

  function onStorage(event) {
    if (favouriteStore === localFavouriteStore && event.key === localFavouriteStore.name) loadFavourites();
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

  /* The values and description of the cell in the popup (or null when it is closed). */
  function popupCell() {
    if (!popupAt || !view || !view.rows[popupAt[0]] || !view.cols[popupAt[1]]) return null;
    const values = cellValues(view.rows[popupAt[0]], view.cols[popupAt[1]]);
    return { values, info: describeCell(values) };
  }

  function refreshPopup() {
    const current = popupCell();
    if (!current) return;
    const { values, info } = current;
    const sig = cellSig(info);
    if (sig === popupSig) return;
    popupSig = sig;
    $("popup").dataset.key = info.key;
    $("popup-title").textContent = values.map((v) => (v ? titleOf(v) : "?")).join(" \u00b7 ");
    $("popup-figure").replaceChildren(cellContent(info, values, true));
    fitPopupImage(info.cell);
    syncPopupFiles(info);
    $("popup-params").replaceChildren(...metaRows(values, info.cell));
    $("popup-parameters").textContent = (info.cell && info.cell.parameters) || "";
    $("popup-copy").hidden = !(info.cell && info.cell.parameters);
    $("popup-copied").textContent = "";
    const open = $("popup-open");
    if (open) {
      open.hidden = !info.cell;
      if (info.cell) open.href = urlOf(info.cell.image);
    }
    syncPopupStar();
    emit("popup", current);
    if (!$("popup").contains(document.activeElement)) $("popup").focus();
  }

  /* The popup's image fills the room it has at the image's own aspect ratio; one enlarged 2x or more
     keeps crisp pixels. */
  function fitPopupImage(cell) {
    const img = $("popup-figure").querySelector("img");
    if (!img || !cell) return;
    const [w, h] = imageSize(cell);
    img.style.setProperty("--ratio", String(w / h));
    const crisp = () => img.classList.toggle("pixelated", img.clientWidth >= 2 * (img.naturalWidth || w));
    img.addEventListener("load", crisp);
    requestAnimationFrame(crisp);
  }

  /* ---------- the popup's switcher: the image or one of the cell's extra files (entry.files: name -> path) ---------- */

  const FILE_LABELS = { overlay: "Mask" }; // the SAM edit's input with its mask tinted and its prompt marked

  /* "bracket_1" -> "Bracket 1": a name's own words, unless it has a label of its own. */
  function fileLabel(name) {
    const words = name.replace(/_/g, " ");
    return FILE_LABELS[name] || words.charAt(0).toUpperCase() + words.slice(1);
  }

  /* [name, label] of a cell's extra files in name order, the image ("") first; two files that would share a
     label (a SAM edit's "mask" and its "overlay", labelled Mask) say their names. */
  function fileChoices(cell) {
    const names = Object.keys((cell && cell.files) || {}).sort();
    const labels = names.map(fileLabel);
    const choices = names.map((name, i) => {
      const shared = labels.indexOf(labels[i]) !== labels.lastIndexOf(labels[i]) && !FILE_LABELS[name];
      return [name, shared ? `${labels[i]} (${name})` : labels[i]];
    });
    return [["", "Image"], ...choices];
  }

  /* One button per choice (none for a cell with no extra files); the popup's image shows the chosen file. A
     choice the cell lacks shows its image, and the choice holds for the next cell that has it. */
  function syncPopupFiles(info) {
    const group = $("popup-files");
    const choices = info.cell ? fileChoices(info.cell) : [];
    const shown = choices.some(([name]) => name === popupFile) ? popupFile : "";
    group.hidden = choices.length < 2;
    const sig = choices.length < 2 ? "" : JSON.stringify(choices);
    if (group.dataset.sig !== sig) {
      // the same choices keep their buttons, so a button pressed from the keyboard keeps the focus
      group.dataset.sig = sig;
      group.replaceChildren(
        ...(sig ? choices : []).map(([name, label]) =>
          el("button", { type: "button", "data-file": name, title: `Show the ${name ? label.toLowerCase() : "image"} (M)` }, label),
        ),
      );
    }
    for (const button of group.children) button.setAttribute("aria-pressed", String(button.dataset.file === shown));
    const img = $("popup-figure").querySelector("img");
    if (!img || !info.cell) return;
    img.src = urlOf(shown ? info.cell.files[shown] : info.cell.image);
    const what = choices.find(([name]) => name === shown)[1];
    img.alt = (shown ? what + ": " : "") + $("popup-title").textContent;
  }

  function showPopupFile(name) {
    const current = popupCell();
    if (!current) return;
    popupFile = name;
    syncPopupFiles(current.info);
  }

  function onPopupFiles(event) {
    const button = event.target.closest("button[data-file]");
    if (button) showPopupFile(button.dataset.file);
  }

  /* M shows the next choice (Shift+M the previous one), round to the image again. */
  function stepPopupFile(delta) {
    const current = popupCell();
    const choices = current ? fileChoices(current.info.cell) : [];
    if (choices.length < 2) return;
    const at = Math.max(0, choices.findIndex(([name]) => name === popupFile));
    showPopupFile(choices[(at + delta + choices.length) % choices.length][0]);
  }

  function syncPopupStar() {
    const button = $("popup-star");
    const current = popupCell();
    if (!button || !current) return;
    const done = current.info.kind === "done";
    const starred = done && favourites.has(current.info.key);
    button.hidden = !done;
    button.setAttribute("aria-pressed", String(starred));
    button.textContent = starred ? "\u2605 Starred" : "\u2606 Star";
  }

  /* The popup's parameter rows: the axes' values, then the params the axes and the grid set (what differs
     from the defaults), the seed and the render time; every other param is folded under "All parameters". */
  function metaRows(values, cell) {
    const rows = data.axes.map((axis, i) => [titleOf(axis), values[i] ? titleOf(values[i]) : "?", "axis"]);
    const more = [];
    if (cell) {
      const params = cell.params || {};
      const set = new Set(Object.keys(data.base_params || {}));
      for (const value of values) for (const name of Object.keys((value && value.params) || {})) set.add(name);
      set.delete("seed");
      for (const name of Object.keys(params)) {
        if (name !== "seed") (set.has(name) ? rows : more).push([name, formatValue(params[name]), "param"]);
      }
      rows.push(["seed", String(cell.seed ?? params.seed), "meta"]);
      if (Array.isArray(cell.size)) rows.push(["size", cell.size.join(" \u00d7 "), "meta"]);
      rows.push(["render time", typeof cell.time === "number" ? cell.time.toFixed(2) + " s" : "?", "meta"]);
      for (const [name, value] of Object.entries(cell.metrics || {})) more.push([name, String(value), "meta"]);
      if (cell.hash) more.push(["image hash", cell.hash, "meta"]);
    }
    const table = el("table", { class: "params" }, el("tbody", {}, ...rows.map(metaRow)));
    if (!more.length) return [table];
    const toggle = el("button", { type: "button", id: "popup-more", "aria-expanded": "false" }, `All parameters (${more.length} more)`);
    const folded = el("tbody", { class: "more", hidden: true }, ...more.map(metaRow));
    toggle.addEventListener("click", () => {
      folded.hidden = !folded.hidden;
      toggle.setAttribute("aria-expanded", String(!folded.hidden));
    });
    table.append(el("tbody", { class: "fold" }, el("tr", {}, el("td", { colspan: 2 }, toggle))), folded);
    return [table];
  }

  function metaRow([name, value, kind]) {
    return el("tr", { class: kind, "data-name": name }, el("th", { scope: "row" }, name), el("td", {}, value));
  }

  function formatValue(value) {
    return typeof value === "string" ? value : JSON.stringify(value);
  }

  function onPopupKey(event) {
    if (!popupAt || !$("popup").open) return;
    if ((event.key === "s" || event.key === "S" || event.key === "*") && !event.ctrlKey && !event.metaKey && !event.altKey) {
      const current = popupCell();
      if (current && current.info.kind === "done") toggleFavourite(current.info.key);
      return;
    }
    if ((event.key === "m" || event.key === "M") && !event.ctrlKey && !event.metaKey && !event.altKey) {
      stepPopupFile(event.shiftKey ? -1 : 1);
      return;
    }
    if (!(event.key in ARROWS)) return;
    event.preventDefault();
    const [down, right] = ARROWS[event.key];
    openPopup(clamp(popupAt[0] + down, 0, view.rows.length - 1), clamp(popupAt[1] + right, 0, view.cols.length - 1));
  }

  /* A click on the backdrop (the dialog itself, outside its content) closes the popup. */
  function onPopupClick(event) {
    if (event.target === $("popup")) closePopup();
  }

  function onPopupStar() {
    const current = popupCell();
    if (current) toggleFavourite(current.info.key);
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
    const hiddenBefore = [...identicalShown()].join("/");
    data = next;
    indexInfluence();
    if (reshaped) setup();
    else if ([...identicalShown()].join("/") !== hiddenBefore) {
      // new cells changed which axes render identical images
      renderIdenticalNote();
      renderPickers();
      renderTabs();
      renderGrid();
      refreshPopup();
    } else refreshCells();
    renderProgress();
    syncPolling();
    emit("data", data);
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
    $("filter-text").addEventListener("input", onFilterInput);
    $("filter-axis").addEventListener("change", onFilterAxis);
    $("filter-chips").addEventListener("click", onChipClick);
    $("grid").addEventListener("click", onGridClick);
    document.addEventListener("keydown", onPopupKey);
    $("popup").addEventListener("click", onPopupClick);
    $("popup").addEventListener("close", () => (popupAt = null));
    $("popup-close").addEventListener("click", closePopup);
    $("popup-copy").addEventListener("click", copyParameters);
    $("popup-star").addEventListener("click", onPopupStar);
    $("popup-files").addEventListener("click", onPopupFiles);
    window.addEventListener("hashchange", onHashChange);
    window.addEventListener("scroll", scheduleWindow, { passive: true });
    window.addEventListener("resize", () => (view && view.windowed && state.toggles.scale ? renderGrid() : scheduleWindow()));
    window.addEventListener("storage", onStorage);
    new ResizeObserver(() => {
      document.documentElement.style.setProperty("--nav-h", $("controls").offsetHeight + "px");
    }).observe($("controls"));
  }

  /* ---------- the API the page's other scripts use ---------- */

  window.GridgenExplorer = {
    get data() {
      return data;
    },
    get state() {
      return state;
    },
    get view() {
      return view;
    },
    el,
    urlOf,
    titleOf,
    valueById,
    visibleValues,
    cellValues,
    describeCell,
    valuesOfKey,
    cellLabel,
    metaRows,
    popupCell,
    openPopup,
    closePopup,
    selectValue,
    setRoles,
    setScore,
    setToggle,
    scoreFields: () => window.GridgenScores.scoreFields(data.cells),
    scoreLabel,
    scoreRange: () => (state.score ? range(state.score) : null),
    influence: (axisId) => influenceByAxis.get(axisId) || null,
    on,
    // gridgen serve (static/viewer.js): hand the page new data of window.GRIDGEN's shape when cells
    // land; it refreshes in place, as after re-loading data.js. Unused when opened from disk.
    update: (next) => data && takeData(next),
    favourites: {
      has: (key) => favourites.has(key),
      keys: () => [...favourites],
      set: setFavourite,
      toggle: toggleFavourite,
      useStore: useFavouriteStore,
    },
  };

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
    favourites = new Set(localFavouriteStore.load());
    setup();
    syncPolling();
    favouritesChanged(false);
    performance.mark("gridgen:interactive");
  }

  boot();
})();
