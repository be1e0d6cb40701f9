"""Which change-map params fit together, checked at validation from the params alone (no image is read here).

A `change_map` (or a `mask` made soft by `soft_mask`) turns img2img into differential diffusion
(`denoise.change_map`); it needs the image it applies to and replaces the hard mask and its crop.
"""

from __future__ import annotations

from typing import Any

from gridgen.backends.base import ParamProblem


def problems(params: dict[str, Any]) -> list[ParamProblem]:
    """Change-map params that do not fit with the cell's other image params."""
    found = []
    if params.get("sam_prompt"):
        return found
    if params.get("change_map") and not params.get("init_image"):
        found.append(ParamProblem("change_map", "change_map is set but init_image is not; the map says how much of "
                                                "init_image may change, so give init_image too"))
    if params.get("change_map") and params.get("mask"):
        found.append(ParamProblem("change_map", "change_map and mask both set; give one (a mask with soft_mask: on "
                                                "is itself used as a change map)"))
    if params.get("soft_mask") and not params.get("mask") and not params.get("change_map"):
        found.append(ParamProblem("soft_mask", "soft_mask is on but no mask is set; soft_mask turns a mask blurred "
                                               "by mask_blur into a change map"))
    if params.get("change_map") and (params.get("inpaint_full_res") or params.get("padding_mask_crop") is not None):
        found.append(ParamProblem("change_map", "change_map redraws the whole image, so inpaint_full_res and "
                                                "padding_mask_crop do not apply; drop them or use mask"))
    return found
