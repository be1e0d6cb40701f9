"""Image metrics per cell and the influence of each axis: what the explorer needs to say which setting matters.

Everything here runs once per cell, on the thumbnail the store already made, as the cell lands:

- **metrics**: mean luminance (CIELAB L*, 0-100), clipped shadows and highlights (% of pixels whose every
  channel is at most 2 / at least 253), colourfulness (Hasler and Suesstrunk 2003, on 0-255 RGB) and
  sharpness (variance of the Laplacian of the grey image);
- **a signature**: the image shrunk to `SIGNATURE_SIDE` px square in CIELAB, plus the local means and
  variances SSIM needs, so comparing two cells costs one small subtraction and one blur.

`Influence` keeps running sums over every pair of cells that differ in one axis alone: a new cell is
compared with the cells of its row along each axis, once, so republishing the page costs nothing more.
An axis's influence is the mean distance of its pairs (mean CIE76 delta E, the perceptual-ish colour
difference) and their mean SSIM (on L*); a value's distance is the mean over its pairs with the axis's
other values; a value whose pairs with its neighbour are almost identical is flagged a near-duplicate.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

SIGNATURE_SIDE = 32
METRICS = ("luminance", "shadows", "highlights", "colourfulness", "sharpness")
# A value is a near-duplicate of its neighbour when their images differ by less than a just noticeable
# colour difference on average and keep their structure.
DUPLICATE_DELTA_E = 1.0
DUPLICATE_SSIM = 0.98
_SSIM_C1 = (0.01 * 100) ** 2  # L* spans 0-100
_SSIM_C2 = (0.03 * 100) ** 2
_SSIM_SIGMA = 1.5
# Each call works on a thumbnail or smaller: OpenCV's own thread pool would only contend with torch's for the
# cores of a run.
cv2.setNumThreads(1)


@dataclass(frozen=True)
class Signature:
    lab: np.ndarray  # (side, side, 3) float32
    mean: np.ndarray  # Gaussian-weighted local mean of L*, (side, side)
    var: np.ndarray  # local variance of L*


def _blur(array: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(array, (0, 0), _SSIM_SIGMA, borderType=cv2.BORDER_REFLECT)


def _rgb(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def image_metrics(image: Image.Image) -> dict[str, float]:
    """The page's per-cell numbers, from a (thumbnail-sized) image."""
    rgb = _rgb(image)
    lab = cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    r, g, b = (rgb[..., i].astype(np.float32) for i in range(3))
    rg = r - g
    yb = 0.5 * (r + g) - b
    colourfulness = np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return {
        "luminance": round(float(lab[..., 0].mean()), 2),
        "shadows": round(float((rgb.max(axis=2) <= 2).mean() * 100), 2),
        "highlights": round(float((rgb.min(axis=2) >= 253).mean() * 100), 2),
        "colourfulness": round(float(colourfulness), 2),
        "sharpness": round(float(cv2.Laplacian(grey, cv2.CV_64F).var()), 2),
    }


def signature(image: Image.Image) -> Signature:
    small = cv2.resize(_rgb(image), (SIGNATURE_SIDE, SIGNATURE_SIDE), interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(small.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    light = np.ascontiguousarray(lab[..., 0])
    mean = _blur(light)
    return Signature(lab, mean, _blur(light * light) - mean * mean)


def delta_e(a: Signature, b: Signature) -> float:
    """Mean CIE76 colour difference between two signatures (0: the same image)."""
    return float(np.sqrt(((a.lab - b.lab) ** 2).sum(axis=2)).mean())


def ssim(a: Signature, b: Signature) -> float:
    """Mean structural similarity of the L* channels (1: the same image)."""
    cross = _blur(np.ascontiguousarray(a.lab[..., 0] * b.lab[..., 0])) - a.mean * b.mean
    numerator = (2 * a.mean * b.mean + _SSIM_C1) * (2 * cross + _SSIM_C2)
    denominator = (a.mean**2 + b.mean**2 + _SSIM_C1) * (a.var + b.var + _SSIM_C2)
    return float((numerator / denominator).mean())


@dataclass
class _Sums:
    distance: float = 0.0
    similarity: float = 0.0
    pairs: int = 0

    def add(self, distance: float, similarity: float, weight: int) -> None:
        self.distance += weight * distance
        self.similarity += weight * similarity
        self.pairs += weight


@dataclass
class _AxisSums:
    total: _Sums = field(default_factory=_Sums)
    values: dict[int, _Sums] = field(default_factory=lambda: defaultdict(_Sums))
    neighbours: dict[int, _Sums] = field(default_factory=lambda: defaultdict(_Sums))  # value i with i + 1


class Influence:
    """Per-cell metrics and per-axis influence of one grid, updated one cell at a time; thread-safe."""

    def __init__(self, axes: Sequence[tuple[str, Sequence[str]]]):
        """`axes`: (axis id, value ids in order) per axis, in the order of the ids in a cell key."""
        self.axes = [(axis_id, list(values)) for axis_id, values in axes]
        self._index = [{value: i for i, value in enumerate(values)} for _, values in self.axes]
        self.metrics: dict[str, dict[str, float]] = {}
        self._cells: dict[tuple[int, ...], tuple[str, Signature]] = {}  # value indices -> (key, signature)
        self._coords: dict[str, tuple[int, ...]] = {}
        self._lines: list[dict[tuple, dict[int, tuple[int, ...]]]] = [defaultdict(dict) for _ in self.axes]
        self._sums = [_AxisSums() for _ in self.axes]
        self._lock = threading.Lock()

    def __contains__(self, key: str) -> bool:
        return key in self._coords

    def add(self, key: str, image: Image.Image) -> None:
        """Take a finished cell's image (its thumbnail will do); a key seen before is replaced."""
        ids = key.split("/")
        if len(ids) != len(self.axes) or any(v not in index for v, index in zip(ids, self._index, strict=True)):
            return  # not a cell of this grid's axes (the spec changed under an old folder)
        coords = tuple(index[v] for v, index in zip(ids, self._index, strict=True))
        metrics, sign = image_metrics(image), signature(image)  # the costly part, outside the lock
        with self._lock:
            if key in self._coords:
                self._remove(key)
            self.metrics[key] = metrics
            self._pair_up(coords, sign, weight=1)
            self._cells[coords] = (key, sign)
            self._coords[key] = coords
            for axis, line in enumerate(self._lines):
                line[_without(coords, axis)][coords[axis]] = coords

    def catch_up(self, folder: Path, thumbs: dict[str, str]) -> None:
        """Add the cells (key -> thumbnail path under `folder`) not seen yet: those of an earlier run."""
        for key, path in thumbs.items():
            if key in self:
                continue
            try:
                with Image.open(folder / path) as image:
                    self.add(key, image)
            except OSError:
                continue  # a thumbnail gone missing: that cell just has no numbers

    def _remove(self, key: str) -> None:
        coords = self._coords.pop(key)
        _, sign = self._cells.pop(coords)
        del self.metrics[key]
        for axis, line in enumerate(self._lines):
            del line[_without(coords, axis)][coords[axis]]
        self._pair_up(coords, sign, weight=-1)

    def _pair_up(self, coords: tuple[int, ...], sign: Signature, weight: int) -> None:
        """Add (or with weight -1 take back) the pairs of this cell with the cells of its lines."""
        for axis, line in enumerate(self._lines):
            mine = coords[axis]
            sums = self._sums[axis]
            for other_value, other in line.get(_without(coords, axis), {}).items():
                other_sign = self._cells[other][1]
                distance, similarity = delta_e(sign, other_sign), ssim(sign, other_sign)
                sums.total.add(distance, similarity, weight)
                sums.values[mine].add(distance, similarity, weight)
                sums.values[other_value].add(distance, similarity, weight)
                if abs(mine - other_value) == 1:
                    sums.neighbours[min(mine, other_value)].add(distance, similarity, weight)

    def summary(self) -> list[dict[str, Any]]:
        """Per axis, in order: its influence and its values' distances.

        `distance` is the mean delta E over the axis's pairs, `ssim` their mean SSIM, `pairs` how many
        there were (0: nothing to compare yet, so both are None); `values` maps a value id to its mean
        distance from the axis's other values; `duplicates` maps a value id to the neighbour it nearly
        duplicates (the value before it in the axis's order)."""
        result = []
        with self._lock:
            sums_by_axis = [(axis_id, ids, _copy(sums))
                            for (axis_id, ids), sums in zip(self.axes, self._sums, strict=True)]
        for axis_id, ids, sums in sums_by_axis:
            values = {ids[i]: _mean(s.distance, s.pairs) for i, s in sorted(sums.values.items()) if s.pairs}
            duplicates = {
                ids[i + 1]: ids[i]
                for i, s in sorted(sums.neighbours.items())
                if s.pairs and s.distance / s.pairs < DUPLICATE_DELTA_E and s.similarity / s.pairs > DUPLICATE_SSIM
            }
            result.append({
                "axis": axis_id,
                "distance": _mean(sums.total.distance, sums.total.pairs) if sums.total.pairs else None,
                "ssim": round(sums.total.similarity / sums.total.pairs, 4) if sums.total.pairs else None,
                "pairs": sums.total.pairs,
                "values": values,
                "duplicates": duplicates,
            })
        return result


def numeric_fields(metadata: dict[str, Any] | None, params: dict[str, Any] | None = None) -> dict[str, float]:
    """The numbers among a backend's metadata of a cell (an aesthetic scorer's score, say): the page's scores.
    A number that only repeats the cell's param of the same name is left out."""
    params = params or {}
    return {name: value for name, value in (metadata or {}).items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)
            and params.get(name) != value}


def _without(coords: tuple[int, ...], axis: int) -> tuple[int, ...]:
    return coords[:axis] + coords[axis + 1:]


def _mean(total: float, count: int) -> float:
    return round(max(0.0, total / count), 3)


def _copy(sums: _AxisSums) -> _AxisSums:
    copy = _AxisSums(total=replace(sums.total))
    copy.values.update({i: replace(s) for i, s in sums.values.items()})
    copy.neighbours.update({i: replace(s) for i, s in sums.neighbours.items()})
    return copy
