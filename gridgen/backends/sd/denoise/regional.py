"""Regional prompting: where each region prompt of a cell counts, and its latent calculation.

A batch with regional cells is widened before its text is encoded: each regional cell gets one text row per region
prompt (and one for its base prompt), each with the cell's negative prompt and CFG scale. Then:

- `region_calc: latent`: each text row is a guidance row. At every step the cell's latents go to all its rows, and
  the cell's prediction is the sum of its rows' predictions weighted per latent pixel: a region's area times
  (1 - base_ratio), the base's base_ratio everywhere. CFG is linear, so this equals blending the conditional
  predictions and guiding once.
- `region_calc: attention`: the cell keeps one guidance row, and its rows' texts are blended inside the UNet's
  cross-attention by the same weights (`regional_attention`).

Cells without regions keep one row of weight 1, so they render as they would alone and share the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from gridgen import prompt_tags
from gridgen.backends.sd.text import regions

if TYPE_CHECKING:
    import torch

    from gridgen.backends.sd.denoise.guidance import Context, Denoiser, Guide



@dataclass(frozen=True)
class Part:
    """One prompt of a cell: its text row, where it counts (None: everywhere) and its weight there."""

    text: int
    area: regions.Area | None
    weight: float


@dataclass(frozen=True)
class Row:
    """One guidance row: its cell and the parts its prediction is made of. A plain or latent-calc row has one
    part, whose area and weight blend the row into its cell's prediction; an attention-calc row has all its
    cell's parts, blended in the UNet's cross-attention, and counts everywhere."""

    cell: int
    parts: tuple[Part, ...]
    attention: bool = False
    split_negative: bool = False  # each part's text row has a negative prompt of its own

    @property
    def blend(self) -> Part:
        return Part(self.parts[0].text, None, 1.0) if self.attention else self.parts[0]


def expand(batch: Sequence[dict[str, Any]], load: regions.LoadImage, found: dict[int, list[np.ndarray]] | None = None
           ) -> tuple[list[dict[str, Any]], list[Row]]:
    """The params each text row is encoded from, and the batch's guidance rows. A region's text row carries its
    part of a split negative prompt (`regions.negatives`) and the LoRA tags of its prompt in its `lora` param,
    after the cell's own (`regions.loras_by_region`); in attention calculation every row of the cell carries all
    the tags. `found` holds prompt-mode cells' region masks by their place in the batch (`prompt_regions`)."""
    params_rows: list[dict[str, Any]] = []
    rows: list[Row] = []
    for index, params in enumerate(batch):
        if not regions.active(params):
            rows.append(Row(index, (Part(len(params_rows), None, 1.0),)))
            params_rows.append(params)
            continue
        layout = regions.layout(params, load, (found or {}).get(index))
        texts = [prompt_tags.take_loras(prompt) for prompt, _, _ in layout]
        everywhere = [value for _, tags in texts for value in tags]
        negatives = regions.negatives(params)  # validation keeps their number 1 or the prompts'
        parts = []
        for (prompt, tags), (_, area, weight), negative in zip(texts, layout, negatives * len(layout)
                                                                if len(negatives) == 1 else negatives, strict=True):
            own = tags if regions.loras_by_region(params) else everywhere
            parts.append(Part(len(params_rows), area, weight))
            params_rows.append({**params, "prompt": prompt, "negative_prompt": negative,
                                "lora": [*(params.get("lora") or []), *own]})
        if regions.calc(params) == "attention":
            rows.append(Row(index, tuple(parts), attention=True, split_negative=len(negatives) > 1))
        else:
            rows += [Row(index, (part,)) for part in parts]
    return params_rows, rows


def per_row(rows: Sequence[Row], cond: Context, uncond: Context, text: dict[str, Any]
            ) -> tuple[Context, Context, dict[str, Any]]:
    """The text conditioning of the text rows as that of the guidance rows (each row's first part's text)."""
    import torch

    index = [row.parts[0].text for row in rows]
    if index == list(range(max(part.text for row in rows for part in row.parts) + 1)):
        return cond, uncond, text
    if callable(cond) or callable(uncond):
        raise ValueError("attention-calc regions need fixed text conditioning")  # validation refuses ELLA with it
    picked = torch.tensor(index, dtype=torch.long, device=cond.device)

    def take(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value[picked.to(value.device)]
        if isinstance(value, dict):
            return {name: take(item) for name, item in value.items()}
        if isinstance(value, tuple):
            return tuple(take(item) for item in value)
        return value

    return take(cond), take(uncond), take(text)


def widen(guide: Guide, rows: Sequence[Row], cells: int) -> Guide:
    """`guide` over the guidance rows as a guide over the batch's `cells`; unchanged when every cell has one row."""
    if len(rows) == cells:
        return guide

    def regional_guide(**extra: Any) -> Denoiser:
        import torch

        index = torch.tensor([row.cell for row in rows], dtype=torch.long)
        denoise = guide(**{name: rows_of(value, index) for name, value in extra.items()})
        weights: dict[tuple[int, int], torch.Tensor] = {}

        def blended(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            shape = tuple(x.shape[2:])
            if shape not in weights:
                weights[shape] = weight_maps([[row.blend] for row in rows], shape, x.device)
            eps = denoise(x[index.to(x.device)], t) * weights[shape][:, :1]
            out = torch.zeros_like(x)
            return out.index_add_(0, index.to(x.device), eps)

        return blended

    return regional_guide


def rows_of(value: Any, index: torch.Tensor) -> Any:
    """A per-cell guidance input (a tensor or list with a row per cell) repeated for the widened rows."""
    import torch

    if isinstance(value, torch.Tensor):
        return value[index.to(value.device)]
    if isinstance(value, (list, tuple)):
        return [value[i] for i in index.tolist()]
    return value


def weight_maps(parts: Sequence[Sequence[Part]], shape: tuple[int, int], device) -> torch.Tensor:
    """(rows, slots, h, w) weights of each row's parts: a part's weight inside its box (rounded to latent cells)
    or times its area's pixels (averaged over each latent cell), 0 in the slots a row has no part for."""
    import torch
    import torch.nn.functional as F

    height, width = shape
    found = torch.zeros((len(parts), max(map(len, parts)), height, width), dtype=torch.float32)
    for number, row in enumerate(parts):
        for slot, part in enumerate(row):
            if isinstance(part.area, np.ndarray):
                pixels = torch.from_numpy(np.ascontiguousarray(part.area, dtype=np.float32))[None, None]
                found[number, slot] = part.weight * F.adaptive_avg_pool2d(pixels, shape)[0, 0]
                continue
            x0, y0, x1, y1 = part.area or (0.0, 0.0, 1.0, 1.0)
            found[number, slot, round(y0 * height):round(y1 * height), round(x0 * width):round(x1 * width)] = \
                part.weight
    return found.to(device)
