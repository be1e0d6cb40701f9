"""Regional prompting in latent mode: each region's noise prediction, blended by its mask at every step.

A batch with regional cells is widened before its text is encoded: each regional cell becomes one row per
region prompt (and one for its base prompt), each row a sample of the guidance with the cell's negative prompt
and CFG scale. At every step the cell's latents go to all its rows, and the cell's prediction is the sum of
its rows' predictions weighted per latent pixel: a region's mask times (1 - base_ratio), the base's base_ratio
everywhere. CFG is linear, so this equals blending the conditional predictions and guiding once. Cells without
regions keep one row of weight 1, so they render as they would alone and share the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gridgen.backends.sd.text import regions

if TYPE_CHECKING:
    import torch

    from gridgen.backends.sd.denoise.guidance import Denoiser, Guide


@dataclass(frozen=True)
class Row:
    """One guidance row: the cell it belongs to, its box (None: everywhere) and its weight inside the box."""

    cell: int
    box: regions.Box | None
    weight: float


def expand(batch: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Row]]:
    """The batch's guidance rows: the params each row's text is encoded from, and where each row counts."""
    params_rows: list[dict[str, Any]] = []
    rows: list[Row] = []
    for index, params in enumerate(batch):
        if not regions.active(params):
            params_rows.append(params)
            rows.append(Row(index, None, 1.0))
            continue
        prompts = regions.split_prompt(str(params["prompt"]))
        ratio = float(params["base_ratio"]) if prompts.base is not None else 0.0
        for prompt, box in zip(prompts.regions, regions.boxes(str(params["regions"]), len(prompts.regions)),
                               strict=True):
            params_rows.append({**params, "prompt": prompt})
            rows.append(Row(index, box, 1.0 - ratio))
        if prompts.base is not None:
            params_rows.append({**params, "prompt": prompts.base})
            rows.append(Row(index, None, ratio))
    return params_rows, rows


def widen(guide: Guide, rows: Sequence[Row], cells: int) -> Guide:
    """`guide` over the widened rows as a guide over the batch's `cells`; unchanged when every cell has one row."""
    if len(rows) == cells:
        return guide

    def regional_guide(**extra: Any) -> Denoiser:
        import torch

        index = torch.tensor([row.cell for row in rows], dtype=torch.long)
        denoise = guide(**{name: _rows_of(value, index) for name, value in extra.items()})
        weights: dict[tuple[int, int], torch.Tensor] = {}

        def blended(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            shape = tuple(x.shape[2:])
            if shape not in weights:
                weights[shape] = _weights(rows, shape, x.device)
            eps = denoise(x[index.to(x.device)], t) * weights[shape]
            out = torch.zeros_like(x)
            return out.index_add_(0, index.to(x.device), eps)

        return blended

    return regional_guide


def _rows_of(value: Any, index: torch.Tensor) -> Any:
    """A per-cell guidance input (a tensor or list with a row per cell) repeated for the widened rows."""
    import torch

    if isinstance(value, torch.Tensor):
        return value[index.to(value.device)]
    if isinstance(value, (list, tuple)):
        return [value[i] for i in index.tolist()]
    return value


def _weights(rows: Sequence[Row], shape: tuple[int, int], device) -> torch.Tensor:
    """(rows, 1, h, w) weights: each row's weight inside its box (rounded to latent cells), 0 outside."""
    import torch

    height, width = shape
    found = torch.zeros((len(rows), 1, height, width), dtype=torch.float32)
    for number, row in enumerate(rows):
        x0, y0, x1, y1 = row.box or (0.0, 0.0, 1.0, 1.0)
        found[number, :, round(y0 * height):round(y1 * height), round(x0 * width):round(x1 * width)] = row.weight
    return found.to(device)
