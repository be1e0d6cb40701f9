"""What the SAM axis values say, parsed without torch so spec validation can check them early.

`sam_prompt` is one Segment Anything prompt in pixels of the input image: points with labels
(1 marks the object, 0 the background) and/or one box. It is written as a mapping
(`{points: [[320, 240]], labels: [1], box: [x1, y1, x2, y2]}`) or as short text
(`point 320 240`, `point 40 50 0`, `box 10 10 200 180`, parts joined by `;`). Either way it is
stored in one canonical text spelling, which is what cache keys, file names and the journal see.

`inpainter` names what fills the mask: `opencv-telea` (weight-free), `lama:<file>` (a LaMa model
file loaded through spandrel), or anything else as a Stable Diffusion inpainting model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

INPAINT_MODES = ("remove", "fill", "replace")
# Inpaint Anything's scripts dilate 15 px before removing and 50 px before filling; replace keeps the mask.
DEFAULT_DILATE = {"remove": 15, "fill": 50, "replace": 0}
TELEA = "opencv-telea"


@dataclass(frozen=True)
class SamPrompt:
    points: tuple[tuple[float, float], ...] = ()
    labels: tuple[int, ...] = ()
    box: tuple[float, float, float, float] | None = None

    @property
    def text(self) -> str:
        parts = [f"point {_num(x)} {_num(y)}" + ("" if label == 1 else f" {label}")
                 for (x, y), label in zip(self.points, self.labels, strict=True)]
        if self.box is not None:
            parts.append("box " + " ".join(_num(v) for v in self.box))
        return "; ".join(parts)

    def outside(self, width: int, height: int) -> str | None:
        """Why this prompt does not fit a `width` x `height` image, or None."""
        for x, y in self.points:
            if not (0 <= x < width and 0 <= y < height):
                return f"point ({_num(x)}, {_num(y)}) is outside the {width}x{height} input image"
        if self.box is not None:
            x1, y1, x2, y2 = self.box
            if min(x1, y1) < 0 or x2 > width or y2 > height:
                return f"box {self.text.split('box ')[-1]} reaches outside the {width}x{height} input image"
        return None


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _numbers(what: str, raw: Any, count: int) -> tuple[float, ...]:
    items = raw.replace(",", " ").split() if isinstance(raw, str) else raw
    try:
        values = tuple(float(v) for v in items)
    except (TypeError, ValueError):
        raise ValueError(f"sam_prompt: {what} must be {count} numbers (pixels), got {raw!r}") from None
    if len(values) != count:
        raise ValueError(f"sam_prompt: {what} must be {count} numbers (pixels), got {raw!r}")
    return values


def _checked(points: list, labels: list, box: tuple | None) -> SamPrompt:
    if not points and box is None:
        raise ValueError("sam_prompt needs at least one point or a box, e.g. `point 320 240` or `box 10 10 200 180`")
    if box is not None and (box[2] <= box[0] or box[3] <= box[1]):
        raise ValueError(f"sam_prompt: box {' '.join(map(_num, box))} must be x1 y1 x2 y2 with x2 > x1 and y2 > y1")
    for label in labels:
        if label not in (0, 1):
            raise ValueError(f"sam_prompt: point labels are 1 (on the object) or 0 (background), got {label!r}")
    return SamPrompt(tuple(points), tuple(labels), box)


def _from_mapping(raw: dict) -> SamPrompt:
    unknown = set(raw) - {"points", "labels", "box", "point"}
    if unknown:
        raise ValueError(f"sam_prompt: unknown key(s) {', '.join(sorted(map(str, unknown)))}; use points, labels, box")
    points_raw = raw.get("points") or ([raw["point"]] if raw.get("point") is not None else [])
    if not isinstance(points_raw, list):
        raise ValueError(f"sam_prompt: points must be a list of [x, y] pairs, got {points_raw!r}")
    points = [_numbers("a point", p, 2) for p in points_raw]
    labels_raw = raw.get("labels", [1] * len(points))
    labels_raw = labels_raw if isinstance(labels_raw, list) else [labels_raw]
    if len(labels_raw) != len(points):
        raise ValueError(f"sam_prompt: {len(points)} point(s) but {len(labels_raw)} label(s); give one label each")
    try:
        labels = [int(label) for label in labels_raw]
    except (TypeError, ValueError):
        raise ValueError(f"sam_prompt: labels must be 1 or 0, got {labels_raw!r}") from None
    box = _numbers("box", raw["box"], 4) if raw.get("box") is not None else None
    return _checked(points, labels, box)


def _from_text(text: str) -> SamPrompt:
    points, labels, box = [], [], None
    for part in filter(None, (p.strip() for p in text.split(";"))):
        word, _, rest = part.partition(" ")
        word = word.lower()
        if word == "point":
            numbers = rest.replace(",", " ").split()
            if len(numbers) == 3:
                labels.append(_numbers("a point's label", numbers[2:], 1)[0])
                numbers = numbers[:2]
            else:
                labels.append(1)
            points.append(_numbers(f"point {rest!r}", numbers, 2))
        elif word == "box":
            if box is not None:
                raise ValueError(f"sam_prompt {text!r}: one box per prompt")
            box = _numbers("box", rest, 4)
        else:
            raise ValueError(f"sam_prompt {text!r}: write `point X Y` (optionally a label 0/1 after), "
                             f"`box X1 Y1 X2 Y2`, or several parts joined by `;`")
    return _checked(points, [int(v) for v in labels], box)


def parse_sam_prompt(raw: Any) -> SamPrompt:
    """A `sam_prompt` value as a mapping, a list of points, or text; raises ValueError saying what to write."""
    if isinstance(raw, SamPrompt):
        return raw
    if isinstance(raw, dict):
        return _from_mapping(raw)
    if isinstance(raw, list):  # a bare list of [x, y] points, all on the object
        return _from_mapping({"points": raw})
    return _from_text(str(raw))


def canonical_sam_prompt(raw: Any) -> str:
    return parse_sam_prompt(raw).text


@dataclass(frozen=True)
class Inpainter:
    family: str  # telea, lama or sd
    name: str  # the file (lama) or model (sd) as written


def parse_inpainter(value: str) -> Inpainter:
    text = str(value).strip()
    if text.lower() in (TELEA, "telea", "opencv"):
        return Inpainter("telea", TELEA)
    family, colon, rest = text.partition(":")
    if colon and family.strip().lower() == "lama":
        if not rest.strip():
            raise ValueError("inpainter 'lama:' needs a model file after the colon, e.g. lama:models/big-lama.pt")
        return Inpainter("lama", rest.strip())
    if not text:
        raise ValueError("inpainter is empty; use opencv-telea, lama:<file> or an SD inpainting model")
    return Inpainter("sd", text)


def canonical_inpainter(value: str) -> str:
    parsed = parse_inpainter(value)
    return f"lama:{parsed.name}" if parsed.family == "lama" else parsed.name
