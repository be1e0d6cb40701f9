/*
 * gridgen explorer tools: save an image of the view, make an animation along an axis, compare two
 * cells (wipe, flicker, side by side, amplified difference), the flipbook, and the favourites
 * panel. Uses window.GridgenExplorer (explorer.js) and window.GridgenCodecs (explorer.codecs.js).
 *
 * A page opened from disk (file://) may show its images but not read their pixels: the browser
 * taints a canvas that draws them. The tools that need pixels or bytes (save, animation,
 * difference, downloading starred images) then ask once for the grid's folder through a folder
 * picker; the files are read locally, never uploaded. Served over http (gridgen serve) they read
 * the images directly.
 */
(function () {
  "use strict";

  const X = window.GridgenExplorer;
  const C = window.GridgenCodecs;
  if (!X || !C) return;
  const el = X.el;

  // Canvas limits: a part of a saved view is at most this many pixels a side and in all.
  const limits = { maxSide: 16000, maxArea: 120e6 };
  const SCALES = ["1", "0.75", "0.5", "0.25"];
  let lastCell = null; // values (axes order) of the cell last shown in the popup

  function $(id) {
    return document.getElementById(id);
  }

  function slug(text) {
    return (
      String(text || "grid")
        .toLowerCase()
        .replace(/[^a-z0-9]+/g, "-")
        .replace(/^-+|-+$/g, "")
        .slice(0, 60) || "grid"
    );
  }

  function axes() {
    return X.data.axes;
  }

  function nextFrame() {
    return new Promise((resolve) => setTimeout(resolve, 0));
  }

  /* ---------- dialogs ---------- */

  function toolDialog(id, title) {
    let dialog = $(id);
    if (dialog) return dialog;
    dialog = el(
      "dialog",
      { id, class: "tool-dialog", "aria-labelledby": id + "-title" },
      el("h2", { id: id + "-title" }, title),
      el("button", { type: "button", class: "dialog-close", "aria-label": "Close" }, "\u00d7"),
      el("div", { class: "tool-body" }),
    );
    dialog.querySelector(".dialog-close").addEventListener("click", () => dialog.close());
    dialog.addEventListener("click", (event) => {
      if (event.target === dialog) dialog.close();
    });
    document.body.append(dialog);
    return dialog;
  }

  function openDialog(dialog) {
    X.closePopup();
    if (!dialog.open) dialog.showModal();
  }

  function field(label, control) {
    return el("label", { class: "field" }, el("span", {}, label), control);
  }

  function select(id, options, value) {
    const node = el("select", { id }, ...options.map(([v, text]) => el("option", { value: v }, text)));
    if (value !== undefined) node.value = value;
    return node;
  }

  function status(id) {
    return el("p", { id, class: "tool-status", role: "status" });
  }

  /* ---------- downloads ---------- */

  function download(content, name, type) {
    const blob = content instanceof Blob ? content : new Blob([content], { type: type || "application/octet-stream" });
    const url = URL.createObjectURL(blob);
    const link = el("a", { href: url, download: name, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  }

  function canvasBlob(canvas, type, quality) {
    return new Promise((resolve, reject) =>
      canvas.toBlob((blob) => (blob ? resolve(blob) : reject(new Error("the browser could not encode the image"))), type, quality),
    );
  }

  /* ---------- reading the grid's own images ---------- */

  const folderFiles = new Map(); // path relative to the grid folder -> File

  class NeedFolder extends Error {}

  function needsFolder() {
    return location.protocol === "file:" && folderFiles.size === 0;
  }

  async function loadBitmap(path) {
    const file = folderFiles.get(path);
    if (file) return createImageBitmap(file);
    if (location.protocol === "file:") throw new NeedFolder(path);
    const img = new Image();
    img.src = X.urlOf(path);
    await img.decode();
    return img;
  }

  async function readBytes(path) {
    const file = folderFiles.get(path);
    if (file) return new Uint8Array(await file.arrayBuffer());
    if (location.protocol === "file:") throw new NeedFolder(path);
    const response = await fetch(X.urlOf(path));
    if (!response.ok) throw new Error(`${path}: ${response.status}`);
    return new Uint8Array(await response.arrayBuffer());
  }

  /* Map the picked folder's files by their path inside the grid folder; returns how many images matched. */
  function grantFolder(files) {
    const list = [...files];
    const images = Object.values(X.data.cells).map((cell) => cell.image);
    const known = new Set(images);
    let prefix = null;
    for (const file of list) {
      const rel = file.webkitRelativePath || file.name;
      const hit = images.find((image) => rel === image || rel.endsWith("/" + image));
      if (hit) {
        prefix = rel.slice(0, rel.length - hit.length);
        break;
      }
    }
    if (prefix === null) return 0;
    let matched = 0;
    for (const file of list) {
      const rel = file.webkitRelativePath || file.name;
      if (!rel.startsWith(prefix)) continue;
      const path = rel.slice(prefix.length);
      folderFiles.set(path, file);
      if (known.has(path)) matched++;
    }
    return matched;
  }

  /* The one-time folder grant a file:// page needs to read its images; `ready` runs once granted. */
  function folderPrompt(ready) {
    const input = el("input", { type: "file", webkitdirectory: true, multiple: true, class: "folder-input" });
    const note = el("span", { class: "folder-status", role: "status" });
    const box = el(
      "div",
      { class: "folder-prompt" },
      el(
        "p",
        {},
        "This page was opened from disk, and browsers do not let such a page read its own images. " +
          "Choose this grid\u2019s folder (the one that holds index.html) once to allow it: the files " +
          "are read here and never uploaded. (Opened through ",
        el("code", {}, "gridgen serve"),
        " the page reads them directly.)",
      ),
      el("label", { class: "button" }, "Choose the grid folder\u2026 ", input),
      " ",
      note,
    );
    input.addEventListener("change", () => {
      const matched = grantFolder(input.files);
      if (!matched) {
        note.textContent = "That folder does not hold this grid\u2019s images: pick the folder of index.html.";
        return;
      }
      note.textContent = `${matched} images found.`;
      box.hidden = true;
      document.querySelectorAll(".folder-prompt").forEach((other) => (other.hidden = true));
      ready();
    });
    box.hidden = !needsFolder();
    return box;
  }

  async function pool(items, limit, work) {
    let next = 0;
    const runners = Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        await work(items[i], i);
      }
    });
    await Promise.all(runners);
  }

  /* ---------- drawing a view onto canvases ---------- */

  /*
   * The current view as canvas parts: labels A1111-style (column headers on top, row labels on
   * the left, super-axes as bands), one image per cell. options: {scale, source: "image"|"thumb",
   * override: {index, value} (one axis's value replaced in every cell), caption (text on top),
   * single (throw when one canvas cannot hold it)}.
   */
  async function drawView(options) {
    const view = X.view;
    if (!view || !view.rows.length || !view.cols.length) throw new Error("the view shows no cells");
    const source = options.source === "thumb" ? "thumb" : "image";
    const valuesAt = (row, col) => {
      const values = X.cellValues(row, col);
      if (options.override) values[options.override.index] = options.override.value;
      return values;
    };
    const first = firstDone(view, valuesAt);
    let natural = [view.cellW, view.cellH];
    if (first) {
      const bitmap = await loadBitmap(first[source] || first.image);
      natural = [bitmap.width, bitmap.height];
      if (bitmap.close) bitmap.close();
    }
    const cellW = Math.max(1, Math.round(natural[0] * options.scale));
    const cellH = Math.max(1, Math.round(natural[1] * options.scale));
    const fs = Math.max(11, Math.min(40, Math.round(Math.min(cellW, cellH) / 9)));
    const pad = Math.round(fs / 2);
    const lineH = Math.round(fs * 1.25);
    const measure = document.createElement("canvas").getContext("2d");
    measure.font = font(fs);
    const roleAxis = (role) => (view.roles[role] ? axes().find((a) => a.id === view.roles[role]) : null);
    const cornerLines = [
      roleAxis("xs") && `${X.titleOf(roleAxis("xs"))} \u21d2`,
      roleAxis("x") && `${X.titleOf(roleAxis("x"))} \u2192`,
      roleAxis("ys") && `${X.titleOf(roleAxis("ys"))} \u21d3`,
      roleAxis("y") && `${X.titleOf(roleAxis("y"))} \u2193`,
    ].filter(Boolean);
    const rowTitles = view.rows.map((row) => (row.inner ? X.titleOf(row.inner) : ""));
    const widest = Math.max(0, ...rowTitles.map((t) => measure.measureText(t).width), ...cornerLines.map((t) => measure.measureText(t).width));
    const labelW = Math.ceil(Math.min(Math.max(widest + 2 * pad, cellW * 0.6, 60), Math.max(cellW * 2, 240)));
    const captionH = options.caption ? lineH + 2 * pad : 0;
    const superH = view.roles.xs ? lineH * 2 + 2 * pad : 0;
    const colHeadH = view.roles.x ? lineH * 2 + 2 * pad : 0;
    const headH = Math.max(captionH + superH + colHeadH, captionH + cornerLines.length * lineH + 2 * pad);
    const bandH = lineH + 2 * pad; // a Y super-axis band
    const geometry = { cellW, cellH, fs, pad, lineH, labelW, captionH, superH, colHeadH, headH, bandH, cornerLines, source };
    const parts = splitView(view, geometry, options.single);
    const canvases = [];
    for (const part of parts) canvases.push(await drawPart(view, part, geometry, valuesAt, options));
    return canvases;
  }

  function font(size, bold) {
    return `${bold ? "600 " : ""}${size}px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif`;
  }

  function firstDone(view, valuesAt) {
    for (const row of view.rows) {
      for (const col of view.cols) {
        const info = X.describeCell(valuesAt(row, col));
        if (info.cell) return info.cell;
      }
    }
    return null;
  }

  /* Cut the view into parts (ranges of display rows and of columns) that fit the canvas limits. */
  function splitView(view, g, single) {
    const maxSide = limits.maxSide;
    const colsFit = Math.max(1, Math.floor((maxSide - g.labelW) / g.cellW));
    const areaCols = Math.max(1, Math.floor(Math.sqrt(limits.maxArea) / g.cellW));
    const perCols = Math.min(colsFit, areaCols);
    const colChunks = [];
    for (let c = 0; c < view.cols.length; c += perCols) colChunks.push([c, Math.min(view.cols.length, c + perCols)]);
    const rowChunks = [];
    let start = 0;
    let height = g.headH;
    const width = g.labelW + perCols * g.cellW;
    const maxHeight = Math.min(maxSide, Math.floor(limits.maxArea / width));
    view.display.forEach((item, d) => {
      const h = typeof item === "number" ? g.cellH : g.bandH;
      if (d > start && height + h > Math.max(maxHeight, g.headH + g.cellH + g.bandH)) {
        rowChunks.push([start, d]);
        start = d;
        height = g.headH;
      }
      height += h;
    });
    rowChunks.push([start, view.display.length]);
    if (single && (rowChunks.length > 1 || colChunks.length > 1)) {
      throw new Error("this view is too large for one image at this scale: pick a smaller scale or fewer values");
    }
    const parts = [];
    for (const [d0, d1] of rowChunks) for (const [c0, c1] of colChunks) parts.push({ d0, d1, c0, c1 });
    return parts;
  }

  /* Lines of `text` that fit `width`, at most `max` of them (the last one cut with an ellipsis). */
  function wrap(ctx, text, width, max) {
    const words = String(text).split(/\s+/).filter(Boolean);
    const lines = [];
    let line = "";
    for (const word of words) {
      const trial = line ? line + " " + word : word;
      if (ctx.measureText(trial).width <= width || !line) line = trial;
      else {
        lines.push(line);
        line = word;
      }
    }
    if (line) lines.push(line);
    const kept = lines.slice(0, max);
    if (lines.length > max) kept[max - 1] += " " + lines.slice(max).join(" ");
    return kept.map((l) => fit(ctx, l, width));
  }

  function fit(ctx, text, width) {
    if (ctx.measureText(text).width <= width) return text;
    let cut = text;
    while (cut.length > 1 && ctx.measureText(cut + "\u2026").width > width) cut = cut.slice(0, -1);
    return cut + "\u2026";
  }

  async function drawPart(view, part, g, valuesAt, options) {
    const rowsH = [];
    for (let d = part.d0; d < part.d1; d++) rowsH.push(typeof view.display[d] === "number" ? g.cellH : g.bandH);
    const width = g.labelW + (part.c1 - part.c0) * g.cellW;
    const height = g.headH + rowsH.reduce((a, b) => a + b, 0);
    const canvas = el("canvas", { width, height });
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, width, height);
    ctx.fillStyle = "#111111";
    ctx.textBaseline = "middle";
    ctx.font = font(g.fs, true);
    if (options.caption) {
      ctx.textAlign = "left";
      ctx.fillText(fit(ctx, options.caption, width - 2 * g.pad), g.pad, g.captionH / 2);
    }
    // the corner: the axes' names
    ctx.font = font(g.fs);
    ctx.fillStyle = "#555555";
    ctx.textAlign = "left";
    g.cornerLines.forEach((line, i) => {
      ctx.fillText(fit(ctx, line, g.labelW - 2 * g.pad), g.pad, g.headH - g.pad - (g.cornerLines.length - i - 0.5) * g.lineH);
    });
    ctx.fillStyle = "#111111";
    ctx.textAlign = "center";
    const colX = (c) => g.labelW + (c - part.c0) * g.cellW;
    // X super-axis bands, then column headers
    if (view.roles.xs) {
      ctx.font = font(g.fs, true);
      for (let c = part.c0; c < part.c1; ) {
        const outer = view.cols[c].outer;
        let end = c;
        while (end < part.c1 && view.cols[end].outer === outer) end++;
        const x0 = colX(c);
        const x1 = colX(end);
        const y = g.captionH;
        wrap(ctx, X.titleOf(outer), x1 - x0 - 2 * g.pad, 2).forEach((line, i, all) => {
          ctx.fillText(line, (x0 + x1) / 2, y + g.superH / 2 + (i - (all.length - 1) / 2) * g.lineH);
        });
        ctx.fillRect(x0 + g.pad, y + g.superH - 2, x1 - x0 - 2 * g.pad, 2);
        c = end;
      }
    }
    if (view.roles.x) {
      ctx.font = font(g.fs);
      const y = g.captionH + g.superH;
      for (let c = part.c0; c < part.c1; c++) {
        const lines = wrap(ctx, X.titleOf(view.cols[c].inner), g.cellW - 2 * g.pad, 2);
        lines.forEach((line, i) => {
          ctx.fillText(line, colX(c) + g.cellW / 2, y + g.colHeadH / 2 + (i - (lines.length - 1) / 2) * g.lineH);
        });
      }
    }
    // rows: Y super-axis bands, row labels and cells
    const jobs = [];
    let y = g.headH;
    for (let d = part.d0; d < part.d1; d++) {
      const item = view.display[d];
      if (typeof item !== "number") {
        ctx.font = font(g.fs, true);
        ctx.textAlign = "left";
        ctx.fillStyle = "#111111";
        ctx.fillText(fit(ctx, X.titleOf(item.value), width - 2 * g.pad), g.pad, y + g.bandH / 2);
        ctx.fillRect(g.pad, y + g.bandH - 2, width - 2 * g.pad, 2);
        y += g.bandH;
        continue;
      }
      const row = view.rows[item];
      ctx.font = font(g.fs);
      ctx.textAlign = "right";
      ctx.fillStyle = "#111111";
      const lines = wrap(ctx, row.inner ? X.titleOf(row.inner) : "", g.labelW - 2 * g.pad, Math.max(1, Math.floor(g.cellH / g.lineH)));
      lines.forEach((line, i) => {
        ctx.fillText(line, g.labelW - g.pad, y + g.cellH / 2 + (i - (lines.length - 1) / 2) * g.lineH);
      });
      for (let c = part.c0; c < part.c1; c++) {
        const info = X.describeCell(valuesAt(row, view.cols[c]));
        jobs.push({ info, x: colX(c), y });
      }
      y += g.cellH;
    }
    await pool(jobs, 6, async (job) => {
      const { info, x } = job;
      if (!info.cell) {
        drawPlaceholder(ctx, x, job.y, g, info.kind === "skipped" ? "skipped" : "not rendered");
        return;
      }
      const bitmap = await loadBitmap(info.cell[g.source] || info.cell.image);
      const fitScale = Math.min(g.cellW / bitmap.width, g.cellH / bitmap.height);
      const w = bitmap.width * fitScale;
      const h = bitmap.height * fitScale;
      ctx.imageSmoothingEnabled = fitScale < 1;
      ctx.drawImage(bitmap, x + (g.cellW - w) / 2, job.y + (g.cellH - h) / 2, w, h);
      if (bitmap.close) bitmap.close();
    });
    return canvas;
  }

  function drawPlaceholder(ctx, x, y, g, text) {
    ctx.fillStyle = "#e6e6ea";
    ctx.fillRect(x + 1, y + 1, g.cellW - 2, g.cellH - 2);
    ctx.fillStyle = "#6b6b70";
    ctx.font = font(Math.max(9, Math.round(g.fs * 0.8)));
    ctx.textAlign = "center";
    ctx.fillText(fit(ctx, text, g.cellW - 4), x + g.cellW / 2, y + g.cellH / 2);
  }

  /* ---------- save image of the current view ---------- */

  function saveDialog() {
    const dialog = toolDialog("save-dialog", "Save image of the current view");
    const body = dialog.querySelector(".tool-body");
    if (!body.childElementCount) {
      body.append(
        el(
          "div",
          { class: "fields" },
          field("Format", select("save-format", [["png", "PNG"], ["jpeg", "JPEG"]])),
          field("Scale", select("save-scale", SCALES.map((s) => [s, s === "1" ? "1 (full size)" : s]))),
          field("Images", select("save-source", [["image", "full images"], ["thumb", "thumbnails"]])),
        ),
        el("p", { class: "note" }, "Views too large for one image are saved as several files (-1, -2, \u2026)."),
        folderPrompt(() => {}),
        el("p", {}, el("button", { type: "button", id: "save-go", class: "primary" }, "Save")),
        status("save-status"),
      );
      $("save-go").addEventListener("click", saveView);
    }
    body.querySelector(".folder-prompt").hidden = !needsFolder();
    $("save-status").textContent = "";
    openDialog(dialog);
  }

  async function saveView() {
    const say = (text) => ($("save-status").textContent = text);
    const type = $("save-format").value === "jpeg" ? "image/jpeg" : "image/png";
    const ext = type === "image/jpeg" ? "jpg" : "png";
    try {
      say("Drawing\u2026");
      const canvases = await drawView({ scale: Number($("save-scale").value), source: $("save-source").value, caption: viewCaption() });
      const base = slug(X.data.title) + "-view";
      for (let i = 0; i < canvases.length; i++) {
        const blob = await canvasBlob(canvases[i], type, 0.92);
        download(blob, canvases.length > 1 ? `${base}-${i + 1}.${ext}` : `${base}.${ext}`);
      }
      const sizes = canvases.map((c) => `${c.width}\u00d7${c.height}`).join(", ");
      say(canvases.length > 1 ? `Saved ${canvases.length} files (${sizes}).` : `Saved ${sizes}.`);
    } catch (err) {
      fail(err, say, "save-dialog");
    }
  }

  /* The saved view's caption: the grid's title and the value each tab axis is fixed at (as `gridgen export`). */
  function viewCaption() {
    const roles = new Set(Object.values(X.view.roles).filter(Boolean));
    const fixed = axes()
      .filter((axis) => !roles.has(axis.id))
      .map((axis) => {
        const value = X.valueById(axis.id, X.state.sel[axis.id]);
        return value ? `${X.titleOf(axis)}: ${X.titleOf(value)}` : null;
      });
    return [X.data.title, ...fixed].filter(Boolean).join(" \u00b7 ");
  }

  function fail(err, say, dialogId) {
    if (err instanceof NeedFolder) {
      say("Choose the grid folder first (above).");
      const prompt = $(dialogId).querySelector(".folder-prompt");
      if (prompt) prompt.hidden = false;
    } else say("Failed: " + (err && err.message ? err.message : err));
  }

  /* ---------- animation along an axis ---------- */

  function animateDialog() {
    const dialog = toolDialog("animate-dialog", "Animation along an axis");
    const body = dialog.querySelector(".tool-body");
    if (!body.childElementCount) {
      body.append(
        el(
          "div",
          { class: "fields" },
          field("Show", select("anim-subject", [["view", "the current view"], ["cell", "one image"]])),
          field("Along", el("select", { id: "anim-axis" })),
          field("Frames per second", el("input", { id: "anim-fps", type: "number", min: 0.2, max: 30, step: "any", value: 2 })),
          field("Direction", select("anim-direction", [["forward", "forward"], ["back", "back"], ["pingpong", "forward, then back"]])),
          field("Format", select("anim-format", [["gif", "GIF"], ["webp", "animated WebP"]])),
          field("Scale", select("anim-scale", SCALES.map((s) => [s, s]), "1")),
        ),
        el("p", { class: "note", id: "anim-note" }),
        folderPrompt(() => {}),
        el("p", {}, el("button", { type: "button", id: "anim-go", class: "primary" }, "Make animation")),
        status("anim-status"),
        el("figure", { id: "anim-preview" }),
      );
      $("anim-go").addEventListener("click", makeAnimation);
      $("anim-subject").addEventListener("change", fillAnimAxes);
    }
    fillAnimAxes();
    body.querySelector(".folder-prompt").hidden = !needsFolder();
    $("anim-status").textContent = "";
    $("anim-preview").replaceChildren();
    openDialog(dialog);
  }

  /* The axes an animation can step: for the view, those not on the table's axes. */
  function fillAnimAxes() {
    const view = X.view;
    const used = new Set(Object.values(view ? view.roles : {}));
    const subject = $("anim-subject").value;
    const choices = axes().filter((axis) => X.visibleValues(axis.id).length > 1 && (subject === "cell" || !used.has(axis.id)));
    const current = $("anim-axis").value;
    $("anim-axis").replaceChildren(...choices.map((axis) => el("option", { value: axis.id }, X.titleOf(axis))));
    if (choices.some((a) => a.id === current)) $("anim-axis").value = current;
    $("anim-note").textContent = choices.length
      ? subject === "cell"
        ? `The image: ${X.cellLabel(subjectCell())}.`
        : "Each frame is the whole view with the next value of the chosen axis."
      : "No axis to step: every axis with two or more shown values is on the table (pick \u201cone image\u201d).";
    $("anim-go").disabled = !choices.length;
  }

  /* The cell the single-image tools start from: the last one in the popup, else the view's first. */
  function subjectCell() {
    if (lastCell) return lastCell.slice();
    const view = X.view;
    if (view && view.rows.length && view.cols.length) return X.cellValues(view.rows[0], view.cols[0]);
    return axes().map((axis) => X.valueById(axis.id, X.state.sel[axis.id]));
  }

  function frameOrder(values, direction) {
    if (direction === "back") return values.slice().reverse();
    if (direction === "pingpong") return values.concat(values.slice(1, -1).reverse());
    return values.slice();
  }

  async function makeAnimation() {
    const say = (text) => ($("anim-status").textContent = text);
    const axisId = $("anim-axis").value;
    const index = axes().findIndex((a) => a.id === axisId);
    const fps = Math.min(30, Math.max(0.2, Number($("anim-fps").value) || 2));
    const format = $("anim-format").value;
    const scale = Number($("anim-scale").value);
    const frames = frameOrder(X.visibleValues(axisId), $("anim-direction").value);
    const axisTitle = X.titleOf(axes()[index]);
    try {
      $("anim-go").disabled = true;
      const canvases = [];
      for (const [i, value] of frames.entries()) {
        say(`Drawing frame ${i + 1} of ${frames.length}\u2026`);
        const caption = `${axisTitle}: ${X.titleOf(value)}`;
        if ($("anim-subject").value === "cell") {
          const values = subjectCell();
          values[index] = value;
          canvases.push(await drawCell(values, scale, caption));
        } else {
          const [canvas] = await drawView({ scale, source: "image", override: { index, value }, caption, single: true });
          canvases.push(canvas);
        }
        await nextFrame();
      }
      const delayMs = 1000 / fps;
      let bytes;
      let type;
      if (format === "webp") {
        const stills = [];
        for (const canvas of canvases) {
          const blob = await canvasBlob(canvas, "image/webp", 0.9);
          if (blob.type !== "image/webp") throw new Error("this browser cannot encode WebP: choose GIF");
          stills.push({ bytes: new Uint8Array(await blob.arrayBuffer()), width: canvas.width, height: canvas.height });
        }
        bytes = C.muxAnimatedWebp(stills, { delayMs });
        type = "image/webp";
      } else {
        const images = canvases.map((c) => c.getContext("2d").getImageData(0, 0, c.width, c.height));
        bytes = await C.encodeGif(images, { delayMs, onProgress: (i, n) => say(`Encoding frame ${i} of ${n}\u2026`) });
        type = "image/gif";
      }
      const blob = new Blob([bytes], { type });
      const name = `${slug(X.data.title)}-${slug(axisId)}.${format === "webp" ? "webp" : "gif"}`;
      download(blob, name);
      $("anim-preview").replaceChildren(el("img", { src: URL.createObjectURL(blob), alt: "the animation" }));
      say(`Saved ${name}: ${frames.length} frames, ${canvases[0].width}\u00d7${canvases[0].height}, ${(bytes.length / 1024).toFixed(0)} KiB.`);
    } catch (err) {
      fail(err, say, "animate-dialog");
    } finally {
      $("anim-go").disabled = false;
    }
  }

  /* One cell's image at `scale` with a caption band on top. */
  async function drawCell(values, scale, caption) {
    const info = X.describeCell(values);
    let bitmap = null;
    let w = X.view ? X.view.cellW : 128;
    let h = X.view ? X.view.cellH : 128;
    if (info.cell) {
      bitmap = await loadBitmap(info.cell.image);
      w = bitmap.width;
      h = bitmap.height;
    }
    w = Math.max(1, Math.round(w * scale));
    h = Math.max(1, Math.round(h * scale));
    const fs = Math.max(11, Math.min(32, Math.round(w / 16)));
    const bandH = Math.round(fs * 1.25) + fs;
    const canvas = el("canvas", { width: w, height: h + bandH });
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, w, h + bandH);
    ctx.fillStyle = "#111111";
    ctx.font = font(fs, true);
    ctx.textBaseline = "middle";
    ctx.textAlign = "center";
    ctx.fillText(fit(ctx, caption, w - fs), w / 2, bandH / 2);
    if (bitmap) {
      ctx.imageSmoothingEnabled = scale < 1;
      ctx.drawImage(bitmap, 0, bandH, w, h);
      if (bitmap.close) bitmap.close();
    } else {
      drawPlaceholder(ctx, 0, bandH, { cellW: w, cellH: h, fs }, info.kind === "skipped" ? "skipped" : "not rendered");
    }
    return canvas;
  }

  /* ---------- compare two cells ---------- */

  const compare = { a: null, b: null, mode: "wipe", flickerTimer: 0, showingB: false };

  function compareDialog(start) {
    const dialog = toolDialog("compare-dialog", "Compare two images");
    const body = dialog.querySelector(".tool-body");
    if (!body.childElementCount) buildCompare(body);
    compare.a = (start || subjectCell()).slice();
    compare.b = neighbour(compare.a);
    fillCompareSelects();
    openDialog(dialog);
    renderCompare();
  }

  /* B starts as A with the next value of the first table axis that has more than one value. */
  function neighbour(values) {
    const view = X.view;
    const order = [view && view.roles.x, view && view.roles.y, view && view.roles.xs, view && view.roles.ys]
      .concat(axes().map((a) => a.id))
      .filter(Boolean);
    for (const axisId of order) {
      const shown = X.visibleValues(axisId);
      const index = axes().findIndex((a) => a.id === axisId);
      if (shown.length > 1) {
        const at = shown.findIndex((v) => v === values[index]);
        const result = values.slice();
        result[index] = shown[(at + 1) % shown.length];
        return result;
      }
    }
    return values.slice();
  }

  function buildCompare(body) {
    const modes = [
      ["wipe", "Wipe"],
      ["flicker", "Flicker"],
      ["side", "Side by side"],
      ["diff", "Difference"],
    ];
    body.append(
      el("div", { class: "compare-pick" }, el("div", { class: "pick-row", id: "compare-a" }), el("div", { class: "pick-row", id: "compare-b" })),
      el(
        "div",
        { class: "compare-bar" },
        el(
          "span",
          { class: "modes", role: "radiogroup", "aria-label": "Compare mode" },
          ...modes.map(([mode, label]) =>
            el("label", {}, el("input", { type: "radio", name: "compare-mode", value: mode, checked: mode === "wipe" }), " " + label),
          ),
        ),
        el("button", { type: "button", id: "compare-swap" }, "Swap A/B"),
        el("span", { class: "vary" }, "Vary one axis: ", el("select", { id: "compare-vary" })),
      ),
      el("div", { id: "compare-stage" }),
    );
    body.addEventListener("change", onCompareChange);
    body.addEventListener("input", onCompareInput);
    $("compare-swap").addEventListener("click", () => {
      [compare.a, compare.b] = [compare.b, compare.a];
      fillCompareSelects();
      renderCompare();
    });
  }

  function fillCompareSelects() {
    for (const side of ["a", "b"]) {
      const row = $("compare-" + side);
      row.replaceChildren(
        el("strong", {}, side.toUpperCase()),
        ...axes().map((axis, i) => {
          const node = el(
            "select",
            { "data-side": side, "data-index": i, "aria-label": `${side.toUpperCase()}: ${X.titleOf(axis)}` },
            ...axis.values.map((v) => el("option", { value: v.id }, X.titleOf(v))),
          );
          node.value = compare[side][i].id;
          return el("label", {}, X.titleOf(axis) + " ", node);
        }),
      );
    }
    $("compare-vary").replaceChildren(
      el("option", { value: "" }, "\u2014"),
      ...axes()
        .filter((axis) => axis.values.length > 1)
        .map((axis) => el("option", { value: axis.id }, X.titleOf(axis))),
    );
  }

  function onCompareChange(event) {
    const target = event.target;
    if (target.dataset.side) {
      const i = Number(target.dataset.index);
      compare[target.dataset.side][i] = X.valueById(axes()[i].id, target.value);
      renderCompare();
    } else if (target.name === "compare-mode") {
      compare.mode = target.value;
      renderCompare();
    } else if (target.id === "compare-vary" && target.value) {
      // A and B: the same cell, with two values of this axis
      compare.b = compare.a.slice();
      const i = axes().findIndex((a) => a.id === target.value);
      const shown = X.visibleValues(target.value);
      const values = shown.length > 1 ? shown : axes()[i].values;
      const at = values.indexOf(compare.a[i]);
      compare.b[i] = values[(at + 1) % values.length];
      fillCompareSelects();
      target.value = "";
      renderCompare();
    } else if (target.id === "compare-auto") {
      setFlickerAuto(target.checked);
    }
  }

  function onCompareInput(event) {
    if (event.target.id === "compare-wipe") setWipe(Number(event.target.value));
    if (event.target.id === "compare-amp") drawDifference();
  }

  function compareImage(values, side) {
    const info = X.describeCell(values);
    if (!info.cell) {
      return el("div", { class: "placeholder compare-img", "data-side": side }, info.kind === "skipped" ? "skipped" : "not rendered");
    }
    return el("img", { class: "compare-img", "data-side": side, "data-key": info.key, src: X.urlOf(info.cell.image), alt: X.cellLabel(values) });
  }

  function differing() {
    return axes()
      .map((axis, i) => [axis, compare.a[i], compare.b[i]])
      .filter(([, a, b]) => a !== b)
      .map(([axis, a, b]) => `${X.titleOf(axis)}: ${X.titleOf(a)} (A) vs ${X.titleOf(b)} (B)`)
      .join(" \u00b7 ");
  }

  function renderCompare() {
    setFlickerAuto(false);
    const stage = $("compare-stage");
    const caption = el("p", { class: "compare-caption" }, differing() || "A and B are the same cell.");
    const mode = compare.mode;
    stage.dataset.mode = mode;
    if (mode === "wipe") {
      const a = compareImage(compare.a, "a");
      const b = compareImage(compare.b, "b");
      stage.replaceChildren(
        caption,
        el("div", { class: "wipe", id: "compare-wipe-box" }, b, el("div", { class: "wipe-top" }, a), el("div", { class: "wipe-line" })),
        el("label", { class: "wipe-control" }, "A \u2190 ", el("input", { type: "range", id: "compare-wipe", min: 0, max: 100, value: 50, "aria-label": "Wipe position" }), " \u2192 B"),
      );
      setWipe(50);
      bindWipeDrag($("compare-wipe-box"));
    } else if (mode === "flicker") {
      compare.showingB = false;
      stage.replaceChildren(
        caption,
        el("div", { class: "flicker", id: "compare-flicker" }, compareImage(compare.a, "a"), compareImage(compare.b, "b")),
        el(
          "p",
          { class: "flicker-control" },
          el("button", { type: "button", id: "compare-flip" }, "Show B"),
          " ",
          el("label", {}, el("input", { type: "checkbox", id: "compare-auto" }), " flicker every "),
          el("select", { id: "compare-rate" }, ...[250, 500, 1000].map((ms) => el("option", { value: ms }, `${ms} ms`))),
          " ",
          el("span", { id: "compare-showing", class: "badge" }, "A"),
        ),
      );
      $("compare-rate").value = "500";
      $("compare-flip").addEventListener("click", flip);
      showFlicker();
    } else if (mode === "side") {
      stage.replaceChildren(
        caption,
        el(
          "div",
          { class: "side-by-side" },
          el("figure", {}, compareImage(compare.a, "a"), el("figcaption", {}, "A: " + X.cellLabel(compare.a))),
          el("figure", {}, compareImage(compare.b, "b"), el("figcaption", {}, "B: " + X.cellLabel(compare.b))),
        ),
      );
    } else {
      stage.replaceChildren(
        caption,
        folderPrompt(() => renderCompare()),
        el(
          "p",
          { class: "diff-control" },
          el("label", {}, "Amplify \u00d7", el("input", { type: "range", id: "compare-amp", min: 1, max: 64, value: 8 })),
          " ",
          el("span", { id: "compare-amp-value" }),
        ),
        el("canvas", { id: "compare-diff", width: 1, height: 1 }),
        el("p", { id: "compare-stats", class: "tool-status", role: "status" }),
      );
      drawDifference();
    }
  }

  function setWipe(percent) {
    const top = document.querySelector("#compare-wipe-box .wipe-top");
    const line = document.querySelector("#compare-wipe-box .wipe-line");
    if (!top) return;
    top.style.clipPath = `inset(0 ${100 - percent}% 0 0)`;
    line.style.left = percent + "%";
  }

  /* The wipe follows a pointer dragged (or a finger slid) across the images, as well as its slider. */
  function bindWipeDrag(box) {
    const follow = (event) => {
      const rect = box.getBoundingClientRect();
      const percent = Math.round(Math.min(100, Math.max(0, ((event.clientX - rect.left) / rect.width) * 100)));
      $("compare-wipe").value = String(percent);
      setWipe(percent);
    };
    box.addEventListener("pointerdown", (event) => {
      event.preventDefault();
      box.setPointerCapture(event.pointerId);
      follow(event);
    });
    box.addEventListener("pointermove", (event) => {
      if (box.hasPointerCapture(event.pointerId)) follow(event);
    });
  }

  function showFlicker() {
    const box = $("compare-flicker");
    if (!box) return;
    box.dataset.showing = compare.showingB ? "b" : "a";
    $("compare-showing").textContent = compare.showingB ? "B" : "A";
    $("compare-flip").textContent = compare.showingB ? "Show A" : "Show B";
  }

  function flip() {
    compare.showingB = !compare.showingB;
    showFlicker();
  }

  function setFlickerAuto(onOff) {
    clearInterval(compare.flickerTimer);
    compare.flickerTimer = 0;
    if (onOff) compare.flickerTimer = setInterval(flip, Number($("compare-rate").value) || 500);
  }

  /* |A - B| per channel, times the amplification, on a canvas of A's size. */
  async function drawDifference() {
    const canvas = $("compare-diff");
    const stats = $("compare-stats");
    if (!canvas) return;
    const amp = Number($("compare-amp").value);
    $("compare-amp-value").textContent = `\u00d7${amp}`;
    const a = X.describeCell(compare.a).cell;
    const b = X.describeCell(compare.b).cell;
    if (!a || !b) {
      stats.textContent = "Both A and B must be rendered images.";
      return;
    }
    try {
      const [ia, ib] = await Promise.all([loadBitmap(a.image), loadBitmap(b.image)]);
      const w = ia.width;
      const h = ia.height;
      const read = (image) => {
        const scratch = el("canvas", { width: w, height: h }).getContext("2d");
        scratch.drawImage(image, 0, 0, w, h);
        return scratch.getImageData(0, 0, w, h);
      };
      const pa = read(ia);
      const pb = read(ib);
      canvas.width = w;
      canvas.height = h;
      const ctx = canvas.getContext("2d");
      const out = ctx.createImageData(w, h);
      let max = 0;
      let sum = 0;
      let changed = 0;
      for (let i = 0; i < pa.data.length; i += 4) {
        let pixelMax = 0;
        for (let k = 0; k < 3; k++) {
          const d = Math.abs(pa.data[i + k] - pb.data[i + k]);
          out.data[i + k] = Math.min(255, d * amp);
          sum += d;
          if (d > pixelMax) pixelMax = d;
        }
        out.data[i + 3] = 255;
        if (pixelMax > max) max = pixelMax;
        if (pixelMax > 0) changed++;
      }
      ctx.putImageData(out, 0, 0);
      const n = w * h;
      stats.textContent =
        `max difference ${max} / 255 \u00b7 mean ${(sum / (3 * n)).toFixed(2)} \u00b7 ` +
        `${((100 * changed) / n).toFixed(1)}% of pixels differ` +
        (ib.width !== w || ib.height !== h ? " \u00b7 B was resized to A\u2019s size" : "");
      canvas.dataset.max = String(max);
      for (const image of [ia, ib]) if (image.close) image.close();
    } catch (err) {
      if (err instanceof NeedFolder) {
        stats.textContent = "Choose the grid folder (above) to compute the difference.";
        const prompt = $("compare-stage").querySelector(".folder-prompt");
        if (prompt) prompt.hidden = false;
      } else stats.textContent = "Failed: " + err.message;
    }
  }

  /* ---------- flipbook: one large image, a slider per axis ---------- */

  let flip_values = null;

  function flipbookDialog(start) {
    const dialog = toolDialog("flipbook-dialog", "Flipbook");
    const body = dialog.querySelector(".tool-body");
    if (!body.childElementCount) {
      body.append(
        el(
          "div",
          { class: "flipbook" },
          el("figure", { id: "flipbook-figure" }),
          el(
            "div",
            { class: "flipbook-side" },
            el("div", { id: "flipbook-sliders" }),
            el("p", {}, el("button", { type: "button", id: "flipbook-star", "aria-pressed": "false" }, "\u2606 Star")),
            el("p", { id: "flipbook-caption", class: "note" }),
          ),
        ),
      );
      $("flipbook-sliders").addEventListener("input", onFlipInput);
      $("flipbook-star").addEventListener("click", () => {
        const info = X.describeCell(flip_values);
        if (info.cell) X.favourites.toggle(info.key);
      });
    }
    flip_values = (start || subjectCell()).slice();
    $("flipbook-sliders").replaceChildren(
      ...axes().map((axis, i) => {
        const shown = shownOrAll(axis);
        const at = Math.max(0, shown.indexOf(flip_values[i]));
        flip_values[i] = shown[at];
        return el(
          "div",
          { class: "flip-axis", "data-axis": axis.id },
          el("label", { for: "flip-" + axis.id }, X.titleOf(axis), ": ", el("output", { class: "flip-value" }, X.titleOf(shown[at]))),
          el("input", { type: "range", id: "flip-" + axis.id, min: 0, max: shown.length - 1, step: 1, value: at, "data-index": i, disabled: shown.length < 2 }),
        );
      }),
    );
    openDialog(dialog);
    renderFlip();
    const firstSlider = $("flipbook-sliders").querySelector("input:not([disabled])");
    if (firstSlider) firstSlider.focus();
  }

  function shownOrAll(axis) {
    const shown = X.visibleValues(axis.id);
    return shown.length ? shown : axis.values;
  }

  function onFlipInput(event) {
    const input = event.target;
    if (input.type !== "range") return;
    const i = Number(input.dataset.index);
    const axis = axes()[i];
    flip_values[i] = shownOrAll(axis)[Number(input.value)];
    input.closest(".flip-axis").querySelector(".flip-value").textContent = X.titleOf(flip_values[i]);
    renderFlip();
  }

  function renderFlip() {
    const info = X.describeCell(flip_values);
    const figure = $("flipbook-figure");
    figure.dataset.key = info.key;
    let img = figure.querySelector("img");
    if (info.cell) {
      if (!img) {
        img = el("img", { alt: "" });
        figure.replaceChildren(img);
      }
      img.src = X.urlOf(info.cell.image);
      img.alt = X.cellLabel(flip_values);
    } else {
      figure.replaceChildren(el("div", { class: "placeholder" }, info.kind === "skipped" ? "skipped" : "not rendered"));
    }
    $("flipbook-caption").textContent = X.cellLabel(flip_values);
    syncFlipStar();
  }

  function syncFlipStar() {
    const button = $("flipbook-star");
    if (!button || !flip_values) return;
    const info = X.describeCell(flip_values);
    const starred = Boolean(info.cell) && X.favourites.has(info.key);
    button.hidden = !info.cell;
    button.setAttribute("aria-pressed", String(starred));
    button.textContent = starred ? "\u2605 Starred" : "\u2606 Star";
  }

  /* ---------- favourites panel ---------- */

  function favouritesDialog() {
    const dialog = toolDialog("favourites-dialog", "Favourites");
    const body = dialog.querySelector(".tool-body");
    if (!body.childElementCount) {
      body.append(
        el(
          "p",
          { class: "fav-actions" },
          el("button", { type: "button", id: "fav-export" }, "Export list (JSON)"),
          " ",
          el("button", { type: "button", id: "fav-download" }, "Download starred images (ZIP)"),
          " ",
          el("button", { type: "button", id: "fav-clear" }, "Unstar all"),
        ),
        folderPrompt(() => downloadFavourites()),
        status("fav-status"),
        el("ul", { id: "fav-list" }),
      );
      $("fav-export").addEventListener("click", exportFavourites);
      $("fav-download").addEventListener("click", downloadFavourites);
      $("fav-clear").addEventListener("click", () => {
        for (const key of X.favourites.keys()) X.favourites.set(key, false);
      });
      $("fav-list").addEventListener("click", onFavListClick);
    }
    body.querySelector(".folder-prompt").hidden = true;
    $("fav-status").textContent = "";
    renderFavourites();
    openDialog(dialog);
  }

  function renderFavourites() {
    const list = $("fav-list");
    if (!list) return;
    const keys = X.favourites.keys();
    $("fav-export").disabled = $("fav-download").disabled = $("fav-clear").disabled = !keys.length;
    if (!keys.length) {
      list.replaceChildren(el("li", { class: "empty" }, "No stars yet: click \u2606 on an image (or press S in its popup)."));
      return;
    }
    list.replaceChildren(
      ...keys.map((key) => {
        const values = X.valuesOfKey(key);
        const info = values ? X.describeCell(values) : { cell: null };
        return el(
          "li",
          { "data-key": key },
          info.cell ? el("img", { src: X.urlOf(info.cell.thumb || info.cell.image), alt: "", width: 64, height: 64, loading: "lazy" }) : el("span", { class: "fav-missing" }, "?"),
          el("span", { class: "fav-label" }, values ? X.cellLabel(values) : `${key} (not in this grid)`),
          values ? el("button", { type: "button", class: "fav-flip", title: "Open in the flipbook" }, "Flipbook") : null,
          el("button", { type: "button", class: "fav-remove", title: "Unstar" }, "\u2605 Unstar"),
        );
      }),
    );
  }

  function onFavListClick(event) {
    const item = event.target.closest("li[data-key]");
    if (!item) return;
    if (event.target.closest(".fav-remove")) X.favourites.set(item.dataset.key, false);
    else if (event.target.closest(".fav-flip")) {
      $("favourites-dialog").close();
      flipbookDialog(X.valuesOfKey(item.dataset.key));
    }
  }

  function favouriteRecords() {
    return X.favourites.keys().map((key) => {
      const values = X.valuesOfKey(key);
      const info = values ? X.describeCell(values) : { cell: null };
      const record = { key, coords: {}, titles: {} };
      if (values) {
        axes().forEach((axis, i) => {
          record.coords[axis.id] = values[i].id;
          record.titles[X.titleOf(axis)] = X.titleOf(values[i]);
        });
      }
      if (info.cell) {
        Object.assign(record, {
          image: info.cell.image,
          seed: info.cell.seed,
          params: info.cell.params,
          parameters: info.cell.parameters,
          time: info.cell.time,
          hash: info.cell.hash,
        });
      }
      return record;
    });
  }

  function favouritesJson() {
    return JSON.stringify({ grid: X.data.title || "", exported: new Date().toISOString(), favourites: favouriteRecords() }, null, 2);
  }

  function exportFavourites() {
    download(favouritesJson(), `${slug(X.data.title)}-favourites.json`, "application/json");
    $("fav-status").textContent = `Exported ${X.favourites.keys().length} favourites.`;
  }

  async function downloadFavourites() {
    const say = (text) => ($("fav-status").textContent = text);
    const records = favouriteRecords().filter((r) => r.image);
    if (!records.length) return say("None of the starred cells has an image.");
    try {
      const files = [];
      for (const [i, record] of records.entries()) {
        say(`Reading image ${i + 1} of ${records.length}\u2026`);
        files.push({ name: record.image, bytes: await readBytes(record.image) });
      }
      files.push({ name: "favourites.json", bytes: new TextEncoder().encode(favouritesJson()) });
      download(C.zipStore(files), `${slug(X.data.title)}-favourites.zip`, "application/zip");
      say(`Saved ${records.length} images and favourites.json in one ZIP.`);
    } catch (err) {
      fail(err, say, "favourites-dialog");
    }
  }

  /* ---------- wiring ---------- */

  function popupTools() {
    const box = $("popup-tools");
    if (!box) return;
    box.replaceChildren(
      el("button", { type: "button", id: "popup-compare" }, "Compare\u2026"),
      " ",
      el("button", { type: "button", id: "popup-flipbook" }, "Flipbook\u2026"),
    );
    $("popup-compare").addEventListener("click", () => compareDialog(lastCell));
    $("popup-flipbook").addEventListener("click", () => flipbookDialog(lastCell));
  }

  function bind() {
    const buttons = {
      "tool-compare": () => compareDialog(),
      "tool-flipbook": () => flipbookDialog(),
      "tool-favourites": favouritesDialog,
      "tool-save": saveDialog,
      "tool-animate": animateDialog,
    };
    for (const [id, open] of Object.entries(buttons)) if ($(id)) $(id).addEventListener("click", open);
    popupTools();
    X.on("popup", (current) => (lastCell = current.values.slice()));
    X.on("favourites", () => {
      renderFavourites();
      syncFlipStar();
    });
    X.on("data", () => {
      if ($("favourites-dialog") && $("favourites-dialog").open) renderFavourites();
    });
    document.addEventListener("close", () => setFlickerAuto(false), true);
  }

  window.GridgenTools = { limits, drawView, grantFolder, folderFiles, viewCaption };
  bind();
})();
