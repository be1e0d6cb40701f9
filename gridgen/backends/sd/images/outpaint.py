"""Outpainting's canvas: the init image extended by pixels per side, the new area filled, and what to redraw.

`outpaint: left 64, right 64` (or `outpaint_left` ... `outpaint_down`, which win over it) names the sides.
The new area is first filled (`outpaint_fill`) so the model starts from something that continues the picture:
OpenCV's Telea (filled inward from the image), the edge pixels stretched outward, a LaMa model file
(`lama:<file>`, through spandrel), or `latent_noise` (A1111's masked content "latent noise": the edge stretch in
pixels, its latents replaced by fresh noise before denoising). Then one of three methods redraws it:

- `gradient`: differential diffusion under a change map that is 0 on the original, ramps to 1 over
  `outpaint_feather` pixels past the old border and is 1 beyond, so the redrawn part grows out of the fill
  with no seam; the result is pasted back through the same map, so the original stays exact.
- `poor_man`: A1111's "poor man's outpainting": an ordinary inpaint of the new area with a hard mask
  (softened by `mask_blur`), the baseline the gradient method is compared with.
- `mk2`: A1111's "outpainting mk2": the new area filled with noise matched to the image's spectrum and colours
  (`images.matched_noise` under `outpaint_falloff` and `outpaint_color_variation`, whatever `outpaint_fill`
  says), then inpainted under the new area's mask grown `mask_blur` pixels into the original and blurred by as
  much, so the old border is redrawn too. As in the script, the sides are done one after another (left, right,
  up, down), each pass extending the previous pass's result (`passes`).

Parsing and sizes need no image, so validation and planning use them; the canvas itself is built from PIL images.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from gridgen.backends.base import ParamProblem
from gridgen.errors import ModelError

SIDES = ("left", "right", "up", "down")
FILLS = ("opencv-telea", "edge", "latent_noise")  # and `lama:<file>`
METHODS = ("gradient", "poor_man", "mk2")
LAMA = "lama:"
MAX_EXTENT = 4096
_SIDE = re.compile(r"^(left|right|up|down|top|bottom)\s*[:=]?\s*(\d+)(?:\s*px)?$")
_SYNONYMS = {"top": "up", "bottom": "down"}


def parse(raw: Any) -> dict[str, int]:
    """`left 64, right 64` as {side: pixels}; raises ValueError saying the form when it does not read."""
    extents: dict[str, int] = {}
    for part in filter(None, (item.strip() for item in str(raw).lower().split(","))):
        found = _SIDE.match(part)
        if not found:
            raise ValueError(f"outpaint part {part!r} does not read; write sides and pixels like "
                             f"`left 64, right 64` (sides: left, right, up, down)")
        side, pixels = _SYNONYMS.get(found[1], found[1]), int(found[2])
        if pixels > MAX_EXTENT:
            raise ValueError(f"outpaint {side} {pixels} is over {MAX_EXTENT} px")
        extents[side] = extents.get(side, 0) + pixels
    return extents


def canonical(raw: Any) -> str:
    """The `outpaint` value written one way (sides in a fixed order), so equal specs give equal cells."""
    extents = parse(raw)
    return ", ".join(f"{side} {extents[side]}" for side in SIDES if extents.get(side))


def extents(params: dict[str, Any]) -> dict[str, int]:
    """Pixels added per side: `outpaint_<side>` where set, else what `outpaint` says."""
    given = parse(params.get("outpaint") or "")
    for side in SIDES:
        if params.get(f"outpaint_{side}") is not None:
            given[side] = int(params[f"outpaint_{side}"])
    return {side: given.get(side, 0) for side in SIDES}


def active(params: dict[str, Any]) -> bool:
    return bool(params.get("init_image")) and any(extents(params).values())


def method(params: dict[str, Any]) -> str:
    return str(params.get("outpaint_method") or METHODS[0])


def canonical_fill(raw: Any) -> str:
    """`outpaint_fill` written one way: a name of FILLS, or `lama:<file>` with the file as given; raises
    ValueError saying what to write."""
    text = str(raw).strip()
    family, colon, rest = text.partition(":")
    if colon and family.strip().lower() == "lama":
        if not rest.strip():
            raise ValueError("outpaint_fill 'lama:' needs a model file after the colon, e.g. lama:big-lama.pt")
        return LAMA + rest.strip()
    value = text.lower().replace(" ", "_")
    value = {"telea": "opencv-telea", "opencv": "opencv-telea", "latent-noise": "latent_noise"}.get(value, value)
    if value not in FILLS:
        raise ValueError(f"outpaint_fill {text!r} is none of {', '.join(FILLS)} or lama:<file>")
    return value


def fill(params: dict[str, Any]) -> str:
    """The cell's fill as it is used: mk2 fills with its matched noise whatever `outpaint_fill` says."""
    return "matched_noise" if method(params) == "mk2" else canonical_fill(params.get("outpaint_fill") or FILLS[0])


def as_read(params: dict[str, Any]) -> dict[str, Any]:
    """The params with the outpaint settings the cell's method does not read set to None, so cells that differ
    only in those share one render: mk2 fills with its own noise; only mk2 reads the noise's two settings."""
    if active(params) and method(params) == "mk2":
        return {**params, "outpaint_fill": None}
    return {**params, "outpaint_falloff": None, "outpaint_color_variation": None}


def passes(params: dict[str, Any]) -> list[dict[str, int]]:
    """The pixels each pass adds per side: for mk2 one side a pass, in the script's order (left, right, up,
    down), each pass extending the result of the one before; for the other methods every side in one pass."""
    sides = extents(params)
    if method(params) != "mk2":
        return [sides]
    return [{other: sides[side] if other == side else 0 for other in SIDES} for side in SIDES if sides[side]]


def for_pass(params: dict[str, Any], sides: dict[str, int]) -> dict[str, Any]:
    """The cell's params as one of its passes reads them: that pass's sides alone."""
    return {**params, "outpaint": None, **{f"outpaint_{side}": sides[side] for side in SIDES}}


def still_to_come(params: dict[str, Any]) -> tuple[tuple[int, int], ...]:
    """Per pass, the pixels across and down that the passes after it add: what that pass's canvas lacks of the
    final one. Cells with equal answers run their passes in step, at equal sizes, so it is part of mk2's batch
    key; () when the cell is not outpainted."""
    if not active(params):
        return ()
    plan = passes(params)
    return tuple((sum(later["left"] + later["right"] for later in plan[index + 1:]),
                  sum(later["up"] + later["down"] for later in plan[index + 1:])) for index in range(len(plan)))


def pass_size(size: tuple[int, int], rest: tuple[int, int], factor: int) -> tuple[int, int]:
    """The working size of a pass whose canvas lacks `rest` (across, down) of the final working `size`, to the
    VAE's multiple `factor`."""
    return tuple(max(factor, round((side - missing) / factor) * factor) for side, missing in zip(size, rest,
                                                                                              strict=True))


def lama_file(params: dict[str, Any]) -> str | None:
    """The LaMa model file the cell's fill reads, or None."""
    chosen = fill(params)
    return chosen.removeprefix(LAMA) if chosen.startswith(LAMA) else None


def extended_size(size: tuple[int, int], params: dict[str, Any]) -> tuple[int, int]:
    """The canvas size of an image of `size` once extended."""
    sides = extents(params)
    return size[0] + sides["left"] + sides["right"], size[1] + sides["up"] + sides["down"]


@dataclass
class Canvas:
    """The extended, filled image; the mask of what to redraw (the gradient change map, or the mask of the new
    area, hard for poor_man and grown and blurred for mk2); the new area itself (white)."""

    image: Image.Image
    mask: Image.Image
    new_area: Image.Image


# Fills the white part of a mask from the rest of the image: how a caller gives a LaMa model to `canvas`.
Inpaint = Callable[[Image.Image, Image.Image], Image.Image]


def canvas(image: Image.Image, params: dict[str, Any], lama: Inpaint | None = None) -> Canvas:
    """The cell's canvas; `lama` runs the cell's LaMa file when its fill is `lama:<file>`."""
    import numpy as np

    from gridgen.backends.sd.images import masks as mask_ops

    sides = extents(params)
    pixels = np.asarray(image.convert("RGB"))
    pad = ((sides["up"], sides["down"]), (sides["left"], sides["right"]), (0, 0))
    new_area = Image.fromarray(np.pad(np.zeros(pixels.shape[:2], dtype=np.uint8), pad[:2], constant_values=255),
                               "L")
    filled = Image.fromarray(np.pad(pixels, pad, mode="edge"), "RGB")
    chosen = fill(params)
    if chosen == "opencv-telea":
        from gridgen.backends.sd.images.inpainters import telea

        filled = telea(filled, new_area)
    elif chosen.startswith(LAMA):
        if lama is None:
            raise ValueError("outpaint_fill lama:<file> needs its model; the caller passes `lama`")
        filled = mask_ops.paste_back(filled, lama(filled, new_area), new_area)
    elif chosen == "matched_noise":
        from gridgen.backends.sd.images.matched_noise import matched_noise

        noise = matched_noise(np.asarray(filled) / 255, np.asarray(new_area) > 0, *noise_settings(params))
        filled = Image.fromarray((noise * 255).round().astype(np.uint8), "RGB")
    if method(params) == "poor_man":
        mask = new_area
    elif method(params) == "mk2":
        blur = int(params.get("mask_blur") or 0)
        mask = mask_ops.blur(mask_ops.dilate(new_area, blur), blur)
    else:
        mask = change_map(image.size, params)
    return Canvas(filled, mask, new_area)


def noise_settings(params: dict[str, Any]) -> tuple[float, float]:
    """mk2's fall-off exponent and colour variation, the script's defaults where the cell sets none."""
    from gridgen.backends.sd.images.matched_noise import COLOUR_VARIATION, FALLOFF

    falloff, variation = params.get("outpaint_falloff"), params.get("outpaint_color_variation")
    return (FALLOFF if falloff is None else float(falloff),
            COLOUR_VARIATION if variation is None else float(variation))


def change_map(size: tuple[int, int], params: dict[str, Any]) -> Image.Image:
    """The gradient method's change map for an image of `size`, at the canvas size."""
    return _gradient(*size, extents(params), int(params.get("outpaint_feather") or 1))


def _gradient(width: int, height: int, sides: dict[str, int], feather: int) -> Image.Image:
    """0 over the original, rising linearly to 1 over `feather` px past each extended border, 1 beyond."""
    import numpy as np

    rows = np.arange(sides["up"] + height + sides["down"], dtype=np.float32)[:, None]
    columns = np.arange(sides["left"] + width + sides["right"], dtype=np.float32)[None, :]
    # Distance past the old border on each side (0 inside), only for the sides that were extended.
    past = [(sides["left"] - columns) * (sides["left"] > 0), (columns - (sides["left"] + width - 1)) *
            (sides["right"] > 0), (sides["up"] - rows) * (sides["up"] > 0),
            (rows - (sides["up"] + height - 1)) * (sides["down"] > 0)]
    distance = np.maximum.reduce([np.broadcast_to(np.clip(d, 0, None), (rows.size, columns.size)) for d in past])
    change = np.clip(distance / max(1, feather), 0, 1)
    return Image.fromarray((change * 255).round().astype(np.uint8), "L")


def resolve_lama_fill(name: str, spec_dir: Path, models_dir: Path | None) -> Path:
    """Where a fill `lama:<name>` is, found as the SAM edit's LaMa inpainter finds its file."""
    from gridgen.backends.sd.images.inpainters import resolve_lama

    return resolve_lama(name, spec_dir, models_dir, "outpaint_fill")


def lama_fill(params: dict[str, Any], lama_path: Callable[[str], Path] | None, device) -> Inpaint | None:
    """The cell's LaMa model as `canvas` takes it, on `device`; None when its fill is no `lama:<file>`.
    `lama_path` finds the file (`resolve_lama_fill` with the run's folders)."""
    from functools import partial

    from gridgen.backends.sd.images import inpainters

    name = lama_file(params)
    if name is None or lama_path is None:
        return None
    return partial(inpainters.lama, inpainters.load_lama(lama_path(name), "outpaint_fill"), device=device)


def lama_problems(params: dict[str, Any], resolve: Callable) -> list[ParamProblem]:
    """A fill `lama:<file>` must name a LaMa file spandrel reads; `resolve(resolver, name)` runs a resolver with
    the run's folders (the backend's `_resolve`, which remembers answers)."""
    from gridgen.backends.sd.images import inpainters

    name = lama_file(params) if active(params) else None
    if name is None:
        return []
    try:
        inpainters.load_lama(resolve(resolve_lama_fill, name), "outpaint_fill")
    except ModelError as exc:
        return [ParamProblem("outpaint_fill", str(exc))]
    return []


def problems(params: dict[str, Any]) -> list[tuple[str, str]]:
    """(param, message) for outpaint params that do not fit the cell."""
    if not any(extents(params).values()):
        return []
    if not params.get("init_image"):
        return [("outpaint", "outpaint extends init_image, which is not set; give the image to extend")]
    if params.get("mask") or params.get("change_map"):
        return [("outpaint", "outpaint makes its own mask of the new area; drop mask and change_map")]
    if params.get("inpaint_full_res") or params.get("padding_mask_crop") is not None:
        return [("outpaint", "outpaint redraws the whole extended canvas; drop inpaint_full_res and "
                             "padding_mask_crop")]
    from gridgen.backends.sd.text import regions

    if regions.calc(params) == "attention" and len(passes(params)) > 1:
        return [("outpaint_method", "mk2 draws one side per pass, each at its own size, and attention-calc regions "
                                    "are laid out at one size; use region_calc latent, another outpaint_method, "
                                    "or outpaint one side")]
    return []
