/*
 * gridgen serve: the viewer's script. Served by gridgen/viewer only, never copied into a grid folder.
 *
 * On a grid's page (the static explorer, served with a <script id="gridgen-viewer"> config) it
 * subscribes to the grid's Server-Sent Events and hands new cells to the explorer through its API,
 * window.GridgenExplorer.update(data), so they appear without a reload; and it gives the explorer's
 * stars a server-side store (GridgenExplorer.favourites.useStore), so favourites are shared across
 * browsers and downloadable as one zip. On the viewer's own pages it refreshes the index's
 * progress, removes favourites, and drives the runs form and queue.
 * Plain browser JavaScript, no dependencies.
 */
(function () {
  "use strict";

  function $(id) {
    return document.getElementById(id);
  }

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else node.setAttribute(name, value === true ? "" : value);
    }
    node.append(...children.filter((child) => child !== null && child !== undefined));
    return node;
  }

  async function api(url, options) {
    const init = Object.assign({ credentials: "same-origin" }, options || {});
    init.headers = Object.assign({ Accept: "application/json" }, init.headers || {});
    let response;
    try {
      response = await fetch(url, init);
    } catch (err) {
      return { ok: false, status: 0, body: { error: String(err) } };
    }
    let body = null;
    try {
      body = await response.json();
    } catch (err) {
      body = null;
    }
    return { ok: response.ok, status: response.status, body: body || {} };
  }

  function sendJSON(method, body) {
    return { method, headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  }

  /* ---------- a grid's page: live cells ---------- */

  /* The page's data is data.js (re-loaded by the explorer while a run goes on) merged with the
   * cells the event stream brought since: window.GRIDGEN becomes an accessor that keeps both. */
  function liveGrid(config) {
    let base = window.GRIDGEN;
    if (!base || !Array.isArray(base.axes)) return;
    const live = new Map(); // cell key -> cell, from the stream
    let liveProgress = null;
    let current = base;
    let timer = 0;
    const hook = window.GridgenExplorer && window.GridgenExplorer.update ? window.GridgenExplorer : null;

    function newerProgress(a, b) {
      if (!a) return b;
      if (!b) return a;
      return String(b.updated || "") >= String(a.updated || "") ? b : a;
    }

    function merged() {
      if (!base || !Array.isArray(base.axes)) return base;
      const cells = Object.assign({}, base.cells || {});
      for (const [key, cell] of live) cells[key] = cell;
      let progress = newerProgress(base.progress, liveProgress);
      if (progress) {
        progress = Object.assign({}, progress, { done: Math.max(progress.done || 0, Object.keys(cells).length) });
      }
      return Object.assign({}, base, { cells, progress });
    }

    Object.defineProperty(window, "GRIDGEN", {
      configurable: true,
      get() {
        return current;
      },
      set(value) {
        base = value;
        current = merged();
      },
    });

    function push() {
      timer = 0;
      current = merged();
      if (hook) hook.update(current);
      else showStale();
    }

    function schedule() {
      if (!timer) timer = setTimeout(push, 30);
    }

    function reloadData() {
      const script = document.createElement("script");
      script.src = "data.js?t=" + Date.now();
      script.onload = script.onerror = () => {
        script.remove();
        push();
      };
      document.head.append(script);
    }

    function showStale() {
      if ($("gv-stale")) return;
      document.body.append(
        el("div", { id: "gv-stale", class: "gv-stale", role: "status" }, "New cells have landed. ", el("a", { href: "" }, "Reload")),
      );
    }

    const done = (base.progress && base.progress.done) || 0;
    const source = new EventSource(config.events + "?from=" + encodeURIComponent(done));
    source.addEventListener("hello", (event) => {
      const message = JSON.parse(event.data);
      if (message.progress) {
        liveProgress = newerProgress(liveProgress, message.progress);
        schedule();
      }
    });
    source.addEventListener("cell", (event) => {
      const message = JSON.parse(event.data);
      live.set(message.key, message.cell);
      document.documentElement.dataset.gvCells = String(live.size); // cells the stream brought
      schedule();
    });
    source.addEventListener("progress", (event) => {
      liveProgress = JSON.parse(event.data);
      schedule();
    });
    source.addEventListener("reset", () => {
      live.clear();
      reloadData();
    });
    document.documentElement.dataset.gvLive = "connecting";
    source.addEventListener("open", () => (document.documentElement.dataset.gvLive = "open"));
    source.addEventListener("error", () => (document.documentElement.dataset.gvLive = "retrying"));
  }

  /* ---------- a grid's page: favourites kept by the server ---------- */

  /* The explorer's own stars, stored by the server (per grid, by cell key) instead of localStorage,
   * plus a small bar: back to the index, the count, and a zip of the starred images. */
  function favourites(config) {
    const X = window.GridgenExplorer;
    const count = el("span", { id: "gv-count" }, "");
    document.body.append(
      el(
        "div",
        { class: "gv-bar", id: "gv-bar" },
        el("a", { href: config.index }, "All grids"),
        " \u00b7 ",
        count,
        " \u00b7 ",
        el("a", { href: config.zip, download: true, id: "gv-zip" }, "Download starred (zip)"),
      ),
    );
    if (!X || !X.favourites || !X.favourites.useStore) return;
    const showCount = () => (count.textContent = `\u2605 ${X.favourites.keys().length} starred`);
    let known = new Set();

    async function send(method, key) {
      const result = await api(config.favouritesApi, sendJSON(method, { grid: config.grid, key }));
      if (!result.ok && method === "POST") {
        known.delete(key);
        X.favourites.set(key, false);
      }
    }

    X.favourites.useStore({
      load() {
        return api(config.favourites).then((result) => {
          known = new Set(((result.body && result.body.favourites) || []).map((item) => item.key));
          return [...known];
        });
      },
      save(keys) {
        const next = new Set(keys);
        for (const key of next) if (!known.has(key)) send("POST", key);
        for (const key of known) if (!next.has(key)) send("DELETE", key);
        known = next;
      },
    });
    X.on("favourites", showCount);
    showCount();
  }

  /* ---------- the index: progress of running grids ---------- */

  function indexPage(root) {
    async function refresh() {
      const result = await api(root + "api/grids");
      if (!result.ok) return;
      let running = false;
      for (const grid of result.body.grids || []) {
        const item = document.querySelector(`.gv-grid[data-grid="${CSS.escape(grid.id)}"]`);
        if (!item) continue;
        running = running || grid.running;
        const box = item.querySelector(".gv-progress");
        box.dataset.running = String(grid.running);
        box.querySelector("progress").max = grid.total || 1;
        box.querySelector("progress").value = grid.done;
        const parts = [`${grid.done} / ${grid.total} rendered`];
        if (grid.failed) parts.push(`${grid.failed} failed`);
        if (grid.running) parts.push("rendering\u2026");
        box.querySelector(".gv-progress-text").textContent = parts.join(" \u00b7 ");
      }
      setTimeout(refresh, running ? 2000 : 10000);
    }
    setTimeout(refresh, 2000);
    for (const time of document.querySelectorAll("time.gv-modified")) {
      const date = new Date(time.dateTime);
      if (!isNaN(date)) time.textContent = date.toLocaleString();
    }
  }

  /* ---------- favourites page ---------- */

  function favouritesPage(root) {
    const list = $("gv-favourites");
    if (!list) return;
    list.addEventListener("click", async (event) => {
      const button = event.target.closest(".gv-unstar");
      if (!button) return;
      const item = button.closest(".gv-favourite");
      const result = await api(root + "api/favourites", sendJSON("DELETE", { grid: item.dataset.grid, key: item.dataset.key }));
      if (result.ok) item.remove();
    });
  }

  /* ---------- runs page ---------- */

  function runsPage(root) {
    const form = $("gv-submit");
    const problems = $("gv-problems");
    const status = $("gv-status");
    const queue = $("gv-queue");

    function showProblems(lines) {
      problems.replaceChildren(...lines.map((line) => el("li", {}, line)));
      problems.hidden = lines.length === 0;
    }

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const file = $("gv-file").files[0];
      const limit = Number(form.dataset.maxUpload);
      if (file && file.size > limit) {
        status.textContent = `The file is larger than ${limit} bytes.`;
        return;
      }
      status.textContent = "Validating\u2026";
      showProblems([]);
      const data = new FormData(form);
      if (!file) data.delete("file");
      const result = await api(root + "api/runs", { method: "POST", body: data });
      if (result.ok) {
        const warnings = result.body.warnings || [];
        status.textContent = `Queued #${result.body.run.id} (${result.body.run.name}, ${result.body.cells} cells).`;
        showProblems(warnings);
        form.reset();
        refresh();
      } else {
        status.textContent = result.status === 422 ? "The spec has problems:" : result.body.error || `Refused (${result.status}).`;
        showProblems(result.body.problems || []);
      }
    });

    queue.addEventListener("click", async (event) => {
      const button = event.target.closest(".gv-cancel");
      if (!button) return;
      button.disabled = true;
      await api(`${root}api/runs/${button.dataset.run}/cancel`, { method: "POST" });
      refresh();
    });

    function row(run) {
      const name = run.href ? el("a", { href: run.href }, run.name) : run.name;
      const cancellable = run.status === "queued" || run.status === "running";
      const cancel = cancellable
        ? el("button", { type: "button", class: "gv-cancel", "data-run": run.id }, "Cancel")
        : null;
      const message = [run.message || "", ...(run.problems || [])].filter(Boolean).join("\n");
      return el(
        "tr",
        { "data-run": run.id, "data-status": run.status },
        el("td", {}, String(run.id)),
        el("td", {}, name),
        el("td", { class: "gv-status-" + run.status }, run.status),
        el("td", {}, run.created || ""),
        el("td", { class: "gv-message" }, message),
        el("td", {}, cancel),
      );
    }

    let timer = 0;
    async function refresh() {
      clearTimeout(timer);
      const result = await api(root + "api/runs");
      if (result.ok) queue.replaceChildren(...(result.body.runs || []).slice().reverse().map(row));
      timer = setTimeout(refresh, 2000);
    }
    refresh();
  }

  /* ---------- start ---------- */

  const configNode = $("gridgen-viewer");
  if (configNode) {
    const config = JSON.parse(configNode.textContent);
    liveGrid(config);
    favourites(config);
  } else {
    const page = document.body.dataset.viewerPage;
    const root = document.body.dataset.root || "/";
    if (page === "index") indexPage(root);
    else if (page === "favourites") favouritesPage(root);
    else if (page === "runs") runsPage(root);
  }
})();
