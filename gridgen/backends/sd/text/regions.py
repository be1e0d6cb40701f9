"""Regional Prompter's matrix and mask modes, read as that extension reads them: the layout and the prompt's regions.

`regions` names the layout: `Columns` or `Rows` (equal strips, one per region prompt) or a divide ratio:
`1,2,1` is three columns of widths 1:2:1; with `;` each group is a row whose first number is its height and
the rest its columns' widths (`2,1,1;3,1,1`: a row of height 2 over one of height 3, each split in halves).
`Mask` takes the regions from the colours of a `region_mask` image instead (`images/region_masks.py`).

The prompt is split the extension's way: text before `ADDCOMM` is common to every region (prepended to each),
text before `ADDBASE` is the base prompt applied everywhere at `base_ratio`, and the regions are separated by
`BREAK`, `ADDCOL` or `ADDROW`, in reading order (left to right, then top to bottom). With `regions` on, BREAK
separates regions instead of CLIP chunks. A negative prompt with BREAKs is split the same way, one part per
region and the base's first (`negatives`); without them it is every region's.

A region's area is a box in fractions of the canvas (x0, y0, x1, y1), so it applies at any latent size, or a region
mask's per-pixel weights, stretched to the canvas. Nothing here needs torch.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gridgen import prompt_tags
from gridgen.backends.base import ParamProblem
from gridgen.backends.sd.images import region_masks
from gridgen.errors import GridError

OFF = "off"
PROMPT, PROMPT_EX = "Prompt", "Prompt-Ex"
# The metadata key under which a prompt-mode cell's found region masks go from its denoising to the drawing of its
# layout; the backend takes it out before the metadata is written.
FOUND = "_found_regions"
CALCS = ("latent", "attention")
Box = tuple[float, float, float, float]
# A box of the canvas, or per-pixel weights of any size, stretched to the canvas.
Area = Box | np.ndarray
LoadImage = Callable[[str, str], Any]  # (param, path) -> the PIL image
_SEPARATOR = re.compile(r"\bBREAK\b|\bADDCOL\b|\bADDROW\b")
_NEGATIVE_SEPARATOR = re.compile(r"\bBREAK\b|\bADDBASE\b|\bADDCOL\b|\bADDROW\b")


def canonical(raw: Any) -> str:
    """The layout written one way (`off`, `Columns`, `Rows` or a ratio string); ValueError when it does not read."""
    text = str(raw).strip()
    if text.lower() in ("", "off", "false", "none"):
        return OFF
    if text.lower() in ("columns", "rows", "mask", "prompt"):
        return text.capitalize()
    if re.fullmatch(r"prompt[-_ ]?ex", text.lower()):
        return PROMPT_EX
    groups = [group.strip() for group in text.split(";")]
    try:
        numbers = [[float(value) for value in group.split(",")] for group in groups]
    except ValueError:
        raise ValueError(f"regions {text!r} does not read; use Columns, Rows, Mask, Prompt, Prompt-Ex, or a "
                         f"ratio string such as "
                         f"`1,2,1` or `2,1,1;3,1,1` (rows: height, then column widths)") from None
    if any(value <= 0 for row in numbers for value in row):
        raise ValueError(f"regions {text!r}: ratios must be positive")
    return ";".join(",".join(f"{value:g}" for value in row) for row in numbers)


@dataclass(frozen=True)
class RegionPrompts:
    """A prompt split for regional prompting: each region's full prompt and the base prompt (or None)."""

    regions: tuple[str, ...]
    base: str | None


def _common_joiner(common: str) -> Callable[[str], str]:
    return (lambda text: f"{common.strip()} {text.strip()}".strip()) if common.strip() else str.strip


def split_prompt(prompt: str) -> RegionPrompts:
    common, _, rest = prompt.rpartition("ADDCOMM")
    base, found, rest = rest.rpartition("ADDBASE")
    join = _common_joiner(common)
    regions = tuple(join(part) for part in _SEPARATOR.split(rest))
    return RegionPrompts(regions, join(base) if found else None)


@dataclass(frozen=True)
class PromptRegions:
    """Prompt mode's reading of a prompt: the main prompt (drawn wherever no region is found, and at `base_ratio`
    inside them when it is an ADDBASE base), the region prompts and each one's target: the text after its last
    comma, whose cross-attention in the main prompt finds the region."""

    main: str
    regions: tuple[str, ...]
    targets: tuple[str, ...]
    based: bool


def prompt_mode(params: dict[str, Any]) -> bool:
    return str(params.get("regions") or OFF) in (PROMPT, PROMPT_EX)


def prompt_regions(prompt: str) -> PromptRegions:
    """The first part (or the ADDBASE base) is the main prompt, the other parts the regions."""
    split = split_prompt(prompt)
    main, found = (split.base, split.regions) if split.base is not None else (split.regions[0], split.regions[1:])
    targets = tuple(prompt_tags.take_loras(region)[0].rpartition(",")[2].strip() for region in found)
    return PromptRegions(main, found, targets, split.base is not None)


def thresholds(params: dict[str, Any], count: int) -> list[float]:
    """`region_threshold` per region: comma-separated values in region order, the first repeated for the rest;
    raises ValueError when one does not read."""
    values = [float(value) for value in str(params.get("region_threshold") or 0.4).split(",") if value.strip()]
    return (values + values[:1] * count)[:count]


def has_base_part(params: dict[str, Any]) -> bool:
    """Whether `layout` ends with a prompt that counts everywhere: an ADDBASE base, or prompt mode's main prompt."""
    return prompt_mode(params) or split_prompt(str(params.get("prompt") or "")).base is not None


def negatives(params: dict[str, Any]) -> list[str]:
    """The negative prompt of each prompt `layout` gives (the regions', then the base's), split as Regional
    Prompter splits it in attention mode: parts separated by BREAK (ADDBASE, ADDCOL, ADDROW), text before ADDCOMM
    common to every part, the first part the base's (the main prompt's in prompt mode) when the prompt has one. A
    negative prompt without a separator is one part, every prompt's."""
    negative = str(params.get("negative_prompt") or "")
    common, found, rest = negative.rpartition("ADDCOMM")
    if not found and not _NEGATIVE_SEPARATOR.search(negative):
        return [negative]
    join = _common_joiner(common)
    parts = [join(part) for part in _NEGATIVE_SEPARATOR.split(rest)]
    if len(parts) > 1 and has_base_part(params):
        parts = parts[1:] + parts[:1]
    return parts


def _spans(ratios: list[float]) -> list[tuple[float, float]]:
    total, edges = sum(ratios), [0.0]
    for ratio in ratios:
        edges.append(edges[-1] + ratio / total)
    edges[-1] = 1.0
    return list(zip(edges, edges[1:], strict=False))


def boxes(layout: str, count: int) -> list[Box]:
    """The layout's boxes in reading order; `count` (the number of region prompts) sizes Columns and Rows."""
    if layout == "Columns":
        return [(x0, 0.0, x1, 1.0) for x0, x1 in _spans([1.0] * count)]
    if layout == "Rows":
        return [(0.0, y0, 1.0, y1) for y0, y1 in _spans([1.0] * count)]
    rows = [[float(v) for v in group.split(",")] for group in layout.split(";")]
    if len(rows) == 1:
        return [(x0, 0.0, x1, 1.0) for x0, x1 in _spans(rows[0])]
    found = []
    for (y0, y1), row in zip(_spans([row[0] for row in rows]), rows, strict=True):
        found += [(x0, y0, x1, y1) for x0, x1 in _spans(row[1:] or [1.0])]
    return found


def active(params: dict[str, Any]) -> bool:
    return str(params.get("regions") or OFF) != OFF


def calc(params: dict[str, Any]) -> str:
    """How a regional cell's regions are combined: `latent` (predictions blended) or `attention` (cross-attention
    outputs blended inside the UNet); None for a cell without regions."""
    return str(params.get("region_calc") or "attention") if active(params) else None


def loras_by_region(params: dict[str, Any]) -> bool:
    """Whether each region applies the LoRA tags written in its own prompt: in latent calculation, where every
    region is a UNet pass of its own, as in Regional Prompter's latent mode. In attention calculation one UNet
    pass draws every region, so a cell's tags apply to all of it."""
    return calc(params) == "latent"


def problems(params: dict[str, Any], load: Callable[[str, str], Any] | None = None) -> list[ParamProblem]:
    """A layout whose number of regions differs from the prompt's (a region mask's, read by `load`, too);
    attention calc where the UNet's cross-attention is not the model's plain one."""
    if not active(params):
        return []
    prompts = split_prompt(str(params.get("prompt") or ""))
    layout = str(params["regions"])
    found = []
    parts, negative_parts = len(prompts.regions) + (prompts.base is not None), len(negatives(params))
    if negative_parts not in (1, parts):
        found.append(ParamProblem("negative_prompt", f"the negative prompt has {negative_parts} parts "
                                                     f"(separated by BREAK) but the prompt has {parts} (its regions"
                                                     f"{' and base' if prompts.base is not None else ''}); give one "
                                                     "negative part per prompt part, the base's first, or one "
                                                     "negative prompt without BREAK for all"))
    if params.get("tile_diffusion") and calc(params) == "attention":
        found.append(ParamProblem("region_calc", "region_calc attention splits the whole canvas's cross-attention "
                                                 "and tile_diffusion denoises tiles; turn tile_diffusion off for "
                                                 "regional cells"))
    elif params.get("tile_diffusion"):
        found.append(ParamProblem("regions", "regions lay their prompts out over the whole canvas and tile_diffusion "
                                             "denoises it window by window, which regional guidance does not follow; "
                                             "turn tile_diffusion off for regional cells"))
    if prompt_mode(params):
        return found + _prompt_mode_problems(params)
    if layout == "Mask":
        if not params.get("region_mask"):
            return found + [ParamProblem("region_mask", "regions: Mask takes its regions from a region_mask image; "
                                                        "give one (its colours, in Regional Prompter's colour "
                                                        "order, are the regions)")]
        try:
            image = load("region_mask", str(params["region_mask"])) if load else None
        except ValueError:
            return found  # the image checks report an unreadable file
        problem = image and region_masks.count_problem(image, len(prompts.regions))
        return found + ([ParamProblem("region_mask", f"region_mask {params['region_mask']!r}: {problem}")]
                        if problem else [])
    wanted = len(boxes(layout, len(prompts.regions)))
    if wanted != len(prompts.regions):
        return found + [ParamProblem("regions", f"regions {layout!r} has {wanted} regions but the prompt has "
                                                f"{len(prompts.regions)} (separated by BREAK, ADDCOL or ADDROW); "
                                                f"give one region prompt per region")]
    return found


def _prompt_mode_problems(params: dict[str, Any]) -> list[ParamProblem]:
    found = []
    split = prompt_regions(str(params.get("prompt") or ""))
    example = "`a red circle on a white background BREAK blue, circle`"
    if not split.regions:
        found.append(ParamProblem("regions", f"regions {params['regions']} takes the first part of the prompt as the "
                                             f"main prompt and each further part (after BREAK) as a region found by "
                                             f"its last word; give at least one region, as in {example}"))
    elif not all(split.targets):
        found.append(ParamProblem("prompt", f"regions {params['regions']}: each region prompt ends with its target "
                                            f"word after a comma (the word of the main prompt whose attention finds "
                                            f"the region), as in {example}"))
    else:
        words = set(re.findall(r"\w+", split.main.lower()))
        found += [ParamProblem("prompt", f"regions {params['regions']}: the target {target!r} is not in the main "
                                         f"prompt, so its region will be empty; write it in the main prompt too",
                               "warning")
                  for target in split.targets if not set(re.findall(r"\w+", target.lower())) <= words]
    try:
        values = thresholds(params, max(1, len(split.regions)))
    except ValueError:
        values = [-1.0]
    if not all(0 <= value <= 1 for value in values):
        found.append(ParamProblem("region_threshold", f"region_threshold {params.get('region_threshold')!r}: give "
                                                      "numbers from 0 to 1, one per region, separated by commas"))
    return found


def combined(masks: Sequence[np.ndarray], exclusive: bool) -> list[np.ndarray]:
    """Prompt mode's region masks as weights that add up to at most 1: where masks overlap, `exclusive`
    (Prompt-Ex) gives the pixel to the region written last, otherwise the overlapping regions share it."""
    if exclusive:
        later = np.zeros_like(masks[-1], dtype=np.float32)
        found = []
        for mask in reversed(masks):
            found.append(mask * (1 - later))
            later = np.maximum(later, mask)
        return found[::-1]
    total = np.maximum(np.sum(masks, axis=0), 1.0)
    return [mask / total for mask in masks]


def layout(params: dict[str, Any], load: LoadImage, found: Sequence[np.ndarray] | None = None
           ) -> list[tuple[str, Area | None, float]]:
    """A regional cell's (prompt, area, weight) per region, then its base prompt's (prompt mode: its main prompt's,
    over what no region covers); raises GridError when a region mask does not fit the prompt. `found` are prompt
    mode's region masks, as the denoising pass found them (`prompt_regions`)."""
    if prompt_mode(params):
        split = prompt_regions(str(params["prompt"]))
        if found is None:
            raise GridError(f"regions {params['regions']}: the regions are found while the cell denoises")
        ratio = float(params["base_ratio"]) if split.based else 0.0
        areas = combined(found, str(params["regions"]) == PROMPT_EX)
        rest = 1.0 - np.sum(areas, axis=0)
        return ([(prompt, area, 1.0 - ratio) for prompt, area in zip(split.regions, areas, strict=True)]
                + [(split.main, ratio + (1.0 - ratio) * rest, 1.0)])
    prompts = split_prompt(str(params["prompt"]))
    ratio = float(params["base_ratio"]) if prompts.base is not None else 0.0
    base = [(prompts.base, None, ratio)] if prompts.base is not None else []
    if str(params["regions"]) != "Mask":
        found = boxes(str(params["regions"]), len(prompts.regions))
        return [(prompt, box, 1.0 - ratio) for prompt, box in zip(prompts.regions, found, strict=True)] + base
    image = load("region_mask", str(params["region_mask"]))
    problem = region_masks.count_problem(image, len(prompts.regions))
    if problem:
        raise GridError(f"region_mask {params['region_mask']!r}: {problem}")
    areas, rest = region_masks.areas(image)
    if prompts.base is None:  # the unpainted pixels follow the first region, as in Regional Prompter
        areas[0] = areas[0] + rest
        return [(prompt, area, 1.0) for prompt, area in zip(prompts.regions, areas, strict=True)]
    # With a base prompt, the unpainted pixels get the base prompt alone.
    return ([(prompt, area, 1.0 - ratio) for prompt, area in zip(prompts.regions, areas, strict=True)]
            + [(prompts.base, ratio + (1.0 - ratio) * rest, 1.0)])
