"""`gridgen export`: one labelled grid image of an output folder, A1111-style, for sharing and scripts.

Reads the folder's grid.json, lays the values of one axis out as columns (`--x`) and of another as
rows (`--y`, optional), fixes every other axis at its default value or at the value `--fix` names,
and draws one image: column headers on top, row labels on the left, the axes' titles in the corner
and the fixed values in a caption. Text is drawn with PIL's default font at a size that follows the
images' size. A grid over the pixel limit is cut into parts (`grid-1.png`, `grid-2.png`, ...), each
with its own headers and labels. Axes and values are named by id or title, case-insensitively;
anything unknown raises a GridError with the closest names.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from gridgen.errors import GridError
from gridgen.explorer import read_grid_json

MAX_PIXELS = 60_000_000  # per output file
MAX_SIDE = 30_000  # px, per output file
BACKGROUND = (255, 255, 255)
INK = (17, 17, 17)
MUTED = (90, 90, 96)
PLACEHOLDER = (230, 230, 234)
FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


@dataclass
class Layout:
    cell_w: int
    cell_h: int
    font_size: int
    pad: int
    line_h: int
    label_w: int
    caption_h: int
    caption_lines: int
    head_h: int


def _title(item: dict[str, Any]) -> str:
    return str(item.get("title") or item.get("id"))


def _norm(text: str) -> str:
    return str(text).strip().lower()


def _did_you_mean(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    if not close:
        close = difflib.get_close_matches(_norm(name), [_norm(c) for c in choices], n=3, cutoff=0.5)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


def find_axis(data: dict[str, Any], name: str) -> dict[str, Any]:
    """The axis whose id or title is `name` (case-insensitive)."""
    for axis in data["axes"]:
        if _norm(name) in (_norm(axis["id"]), _norm(_title(axis))):
            return axis
    names = [axis["id"] for axis in data["axes"]] + [_title(axis) for axis in data["axes"]]
    listed = ", ".join(axis["id"] for axis in data["axes"]) or "none"
    raise GridError(f"unknown axis {name!r}{_did_you_mean(name, names)}; the axes are: {listed}")


def find_value(axis: dict[str, Any], name: str) -> dict[str, Any]:
    """The value of `axis` whose id or title is `name` (case-insensitive)."""
    for value in axis["values"]:
        if _norm(name) in (_norm(value["id"]), _norm(_title(value))):
            return value
    names = [v["id"] for v in axis["values"]] + [_title(v) for v in axis["values"]]
    listed = ", ".join(v["id"] for v in axis["values"])
    raise GridError(
        f"axis {axis['id']!r} has no value {name!r}{_did_you_mean(name, names)}; its values are: {listed}"
    )


def parse_fixes(data: dict[str, Any], pairs: list[str]) -> dict[str, dict[str, Any]]:
    """`axis=value` pairs -> {axis id: value}."""
    fixes: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise GridError(f"--fix expects axis=value, got {pair!r}")
        axis = find_axis(data, name.strip())
        fixes[axis["id"]] = find_value(axis, value.strip())
    return fixes


def _default_value(axis: dict[str, Any]) -> dict[str, Any] | None:
    by_id = {v["id"]: v for v in axis["values"]}
    if axis.get("default") in by_id:
        return by_id[axis["default"]]
    return next((v for v in axis["values"] if not v.get("skip")), axis["values"][0] if axis["values"] else None)


def _shown(axis: dict[str, Any] | None) -> list[dict[str, Any] | None]:
    if axis is None:
        return [None]
    values = [v for v in axis["values"] if not v.get("skip") and v.get("show", True) is not False]
    return values or list(axis["values"])


def export_grid(out_dir: Path, x: str, y: str | None, output: Path, fixes: list[str] | None = None,
                thumbs: bool = False, max_pixels: int = MAX_PIXELS, max_side: int = MAX_SIDE) -> list[Path]:
    """Draw the grid of `out_dir` with axis `x` as columns and `y` as rows; returns the files written."""
    out_dir = Path(out_dir)
    output = Path(output)
    fmt = FORMATS.get(output.suffix.lower())
    if fmt is None:
        raise GridError(f"{output}: the output must end in .png, .jpg or .webp")
    data = read_grid_json(out_dir)
    x_axis = find_axis(data, x)
    y_axis = find_axis(data, y) if y else None
    if y_axis is not None and y_axis["id"] == x_axis["id"]:
        raise GridError(f"--x and --y both name the axis {x_axis['id']!r}: pick two different axes")
    fixed = parse_fixes(data, fixes or [])
    for axis in (x_axis, y_axis):
        if axis is not None and axis["id"] in fixed:
            raise GridError(f"--fix {axis['id']}=... names an axis already on the grid (--x/--y)")
    chosen = {axis["id"]: fixed.get(axis["id"]) or _default_value(axis) for axis in data["axes"]}
    cols = _shown(x_axis)
    rows = _shown(y_axis)
    cells = data.get("cells") or {}

    def cell_at(row: dict | None, col: dict | None) -> tuple[str, dict[str, Any] | None]:
        picked = dict(chosen)
        picked[x_axis["id"]] = col
        if y_axis is not None:
            picked[y_axis["id"]] = row
        values = [picked[axis["id"]] for axis in data["axes"]]
        if any(v is None for v in values):
            return "not rendered", None
        if any(v.get("skip") for v in values):
            return "skipped", None
        cell = cells.get("/".join(v["id"] for v in values))
        return ("done", cell) if cell else ("not rendered", None)

    grid = [[cell_at(row, col) for col in cols] for row in rows]
    size = _cell_size(out_dir, grid, thumbs)
    # PIL's default font has no arrows or dashes: the labels keep to characters it draws
    caption = " \u00b7 ".join(
        [str(data["title"])] * bool(data.get("title"))
        + [f"{_title(axis)}: {_title(chosen[axis['id']])}"
           for axis in data["axes"]
           if axis["id"] not in {x_axis["id"], (y_axis or {}).get("id")} and chosen[axis["id"]] is not None]
    )
    corner = [f"X: {_title(x_axis)}"] + ([f"Y: {_title(y_axis)}"] if y_axis else [])
    row_titles = [_title(r) if r else "" for r in rows]
    layout = _layout(size, caption, corner, row_titles, min(len(cols), max_side))
    parts = _split(len(rows), len(cols), layout, max_pixels, max_side)
    paths = []
    for n, (r0, r1, c0, c1) in enumerate(parts, start=1):
        image = _draw(out_dir, layout, grid, rows, cols, (r0, r1, c0, c1), caption, corner, thumbs)
        path = output if len(parts) == 1 else output.with_name(f"{output.stem}-{n}{output.suffix}")
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, fmt, **({"quality": 92} if fmt in ("JPEG", "WEBP") else {}))
        paths.append(path)
    return paths


def _cell_size(out_dir: Path, grid: list[list[tuple[str, Any]]], thumbs: bool) -> tuple[int, int]:
    for line in grid:
        for state, cell in line:
            if state == "done":
                try:
                    with Image.open(out_dir / _path(cell, thumbs)) as image:
                        return image.size
                except OSError:
                    continue
    return (256, 256)


def _path(cell: dict[str, Any], thumbs: bool) -> str:
    return (cell.get("thumb") if thumbs else None) or cell["image"]


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _layout(size: tuple[int, int], caption: str, corner: list[str], row_titles: list[str], n_cols: int) -> Layout:
    cell_w, cell_h = size
    font_size = max(12, min(48, (cell_w + cell_h) // 25))
    font = _font(font_size)
    pad = max(4, font_size // 2)
    line_h = round(font_size * 1.25)
    widest = max([font.getlength(t) for t in row_titles + corner] + [0])
    label_w = int(min(max(widest + 2 * pad, cell_w * 0.5, 60), max(cell_w * 2, 240)))
    width = min(label_w + n_cols * cell_w, MAX_SIDE)
    caption_lines = len(_wrap(caption, font, width - 2 * pad, 4)) if caption else 0
    caption_h = caption_lines * line_h + 2 * pad if caption else 0
    head_h = caption_h + max(2 * line_h, len(corner) * line_h) + 2 * pad
    return Layout(cell_w, cell_h, font_size, pad, line_h, label_w, caption_h, caption_lines, head_h)


def _split(n_rows: int, n_cols: int, lay: Layout, max_pixels: int, max_side: int) -> list[tuple[int, int, int, int]]:
    """Ranges of rows and columns per output file, each file within the side and pixel limits."""
    cols_fit = max(1, (max_side - lay.label_w) // lay.cell_w)
    cols_area = max(1, int((math.sqrt(max_pixels) - lay.label_w) // lay.cell_w))
    per_cols = min(n_cols, cols_fit, cols_area)
    width = lay.label_w + per_cols * lay.cell_w
    rows_fit = max(1, (max_side - lay.head_h) // lay.cell_h)
    rows_area = max(1, (max_pixels // width - lay.head_h) // lay.cell_h)
    per_rows = min(n_rows, rows_fit, rows_area)
    return [
        (r, min(n_rows, r + per_rows), c, min(n_cols, c + per_cols))
        for r in range(0, n_rows, per_rows)
        for c in range(0, n_cols, per_cols)
    ]


def _wrap(text: str, font, width: float, max_lines: int) -> list[str]:
    words = text.split()
    lines: list[str] = []
    for word in words:
        if lines and font.getlength(lines[-1] + " " + word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    if len(lines) > max_lines:
        lines = lines[: max_lines - 1] + [" ".join(lines[max_lines - 1:])]
    return [_fit(line, font, width) for line in lines]


def _fit(text: str, font, width: float) -> str:
    if font.getlength(text) <= width:
        return text
    while len(text) > 1 and font.getlength(text + "...") > width:
        text = text[:-1]
    return text + "..."


def _draw(out_dir: Path, lay: Layout, grid, rows, cols, part, caption: str, corner: list[str],
          thumbs: bool) -> Image.Image:
    r0, r1, c0, c1 = part
    width = lay.label_w + (c1 - c0) * lay.cell_w
    height = lay.head_h + (r1 - r0) * lay.cell_h
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = _font(lay.font_size)
    small = _font(max(10, round(lay.font_size * 0.8)))
    if caption:
        for i, line in enumerate(_wrap(caption, font, width - 2 * lay.pad, lay.caption_lines)):
            draw.text((lay.pad, lay.pad + (i + 0.5) * lay.line_h), line, font=font, fill=INK, anchor="lm")
    # the corner: which axis runs which way
    for i, line in enumerate(corner):
        y = lay.head_h - lay.pad - (len(corner) - i - 0.5) * lay.line_h
        draw.text((lay.pad, y), _fit(line, small, lay.label_w - 2 * lay.pad), font=small, fill=MUTED, anchor="lm")
    # column headers
    band_top = lay.caption_h
    band_h = lay.head_h - lay.caption_h
    for c in range(c0, c1):
        x = lay.label_w + (c - c0) * lay.cell_w + lay.cell_w / 2
        lines = _wrap(_title(cols[c]) if cols[c] else "", font, lay.cell_w - 2 * lay.pad, 2)
        for i, line in enumerate(lines):
            y = band_top + band_h / 2 + (i - (len(lines) - 1) / 2) * lay.line_h
            draw.text((x, y), line, font=font, fill=INK, anchor="mm")
    # rows: label, then the cells
    for r in range(r0, r1):
        top = lay.head_h + (r - r0) * lay.cell_h
        max_lines = max(1, lay.cell_h // lay.line_h)
        lines = _wrap(_title(rows[r]) if rows[r] else "", font, lay.label_w - 2 * lay.pad, max_lines)
        for i, line in enumerate(lines):
            y = top + lay.cell_h / 2 + (i - (len(lines) - 1) / 2) * lay.line_h
            draw.text((lay.label_w - lay.pad, y), line, font=font, fill=INK, anchor="rm")
        for c in range(c0, c1):
            left = lay.label_w + (c - c0) * lay.cell_w
            state, cell = grid[r][c]
            if state != "done":
                draw.rectangle([left + 1, top + 1, left + lay.cell_w - 2, top + lay.cell_h - 2], fill=PLACEHOLDER)
                draw.text((left + lay.cell_w / 2, top + lay.cell_h / 2), _fit(state, small, lay.cell_w - 4),
                          font=small, fill=MUTED, anchor="mm")
                continue
            try:
                with Image.open(out_dir / _path(cell, thumbs)) as image:
                    picture = image.convert("RGB")
            except OSError:
                draw.rectangle([left + 1, top + 1, left + lay.cell_w - 2, top + lay.cell_h - 2], fill=PLACEHOLDER)
                draw.text((left + lay.cell_w / 2, top + lay.cell_h / 2), "missing", font=small, fill=MUTED,
                          anchor="mm")
                continue
            if picture.size != (lay.cell_w, lay.cell_h):
                picture.thumbnail((lay.cell_w, lay.cell_h))
            canvas.paste(picture, (left + (lay.cell_w - picture.width) // 2, top + (lay.cell_h - picture.height) // 2))
    return canvas
