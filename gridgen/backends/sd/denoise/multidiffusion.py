"""Tiled diffusion (MultiDiffusion, Bar-Tal et al. 2023): a canvas of any size denoised as overlapping windows of
the model's size whose predictions are averaged per pixel at every step.

It is a wrapper of the batch's `Guide`, so every kind, sampler and per-step hook runs unchanged: the recipe's
loop steps the whole canvas, and the denoiser it calls cuts the canvas into windows (`tile_diffusion_size`,
sharing `tile_diffusion_overlap` pixels), sends `tile_diffusion_batch` of them through the UNet at a time and
returns the mean of the windows' noise predictions at each latent cell. Averaging the prediction rather than each
window's stepped latents (as the paper's DDIM formulation does) gives the same fixed point for deterministic
samplers and keeps one scheduler state, so multistep and ancestral samplers work too. What the UNet reads beside
the latents that has the canvas's size (an inpainting mask, a depth map, an edited image) is cut with the window.
SDXL's size conditioning follows each window as the SDXL DemoFusion pipeline gives it: a window's rows say they
are a crop whose top-left corner (`crops_coords_top_left`) is the window's, in pixels, of an image whose original
and target size are the canvas's.

Memory is bounded by the window batch, not the canvas. With one window as large as the canvas the wrapper calls
the plain denoiser, so the image is exactly the untiled one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from gridgen.backends.base import ParamProblem

if TYPE_CHECKING:
    import torch

    from gridgen.backends.sd.denoise.guidance import Denoiser, Guide

PARAMS = ("tile_diffusion", "tile_diffusion_size", "tile_diffusion_overlap", "tile_diffusion_batch")


@dataclass(frozen=True)
class Windows:
    """Window side and overlap in pixels, and how many windows go through the UNet at once."""

    size: int
    overlap: int
    batch: int

    def in_latents(self, factor: int) -> tuple[int, int]:
        return self.size // factor, self.overlap // factor


def windows(params: dict[str, Any], native: int) -> Windows | None:
    """The cell's tiled-diffusion windows, or None when `tile_diffusion` is off; `native` is the model's side."""
    if not params.get("tile_diffusion"):
        return None
    size = int(params.get("tile_diffusion_size") or native)
    overlap = params.get("tile_diffusion_overlap")
    return Windows(size, size // 2 if overlap is None else int(overlap), int(params.get("tile_diffusion_batch") or 1))


def batch_part(params: dict[str, Any]) -> tuple:
    """What cells must share to denoise in one batch: the windowing, which applies to the whole UNet call."""
    return tuple(params.get(name) for name in PARAMS) if params.get("tile_diffusion") else ()


def problems(params: dict[str, Any], native: int, factor: int) -> list[ParamProblem]:
    """Tiled-diffusion settings, and DemoFusion's window `stride`, that cannot work, with what to do about them."""
    out = []
    stride = params.get("stride")
    if stride is not None and (int(stride) % factor or not 0 < int(stride) <= native):
        out.append(ParamProblem("stride", f"stride {stride} must be a multiple of {factor} (the VAE's scale) from "
                                          f"{factor} to the model's native size {native}"))
    found = windows(params, native)
    if found is None:
        return out
    if found.size % factor or found.size < 8 * factor:
        out.append(ParamProblem("tile_diffusion_size", f"tile_diffusion_size {found.size} must be a multiple of "
                                                       f"{factor} (the VAE's scale) and at least {8 * factor}"))
    if found.overlap % factor:
        out.append(ParamProblem("tile_diffusion_overlap", f"tile_diffusion_overlap {found.overlap} must be a "
                                                          f"multiple of {factor} (the VAE's scale)"))
    if found.overlap >= found.size:
        out.append(ParamProblem("tile_diffusion_overlap", f"tile_diffusion_overlap {found.overlap} must be smaller "
                                                          f"than the window ({found.size} px)"))
    return out


def boxes(height: int, width: int, window: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """The windows (top, left, height, width) covering a `height` x `width` latent canvas."""
    from gridgen.backends.sd.stages.tiling import tile_starts

    tile_h, tile_w = min(window, height), min(window, width)
    return [(y, x, tile_h, tile_w) for y in tile_starts(height, window, overlap)
            for x in tile_starts(width, window, overlap)]


def chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _repeat(value: Any, times: int, crops: Sequence[tuple[int, int, int, int]] | None, canvas: tuple[int, int]):
    """`value`, one of a guidance argument's per-row values, for `times` windows stacked window-major: tensors of
    the canvas's size cut to each window in `crops`, other per-row tensors repeated, context functions wrapped."""
    import torch

    if isinstance(value, torch.Tensor):
        if crops is not None and value.dim() == 4 and tuple(value.shape[-2:]) == canvas:
            return torch.cat([value[:, :, y:y + h, x:x + w] for y, x, h, w in crops])
        return value.repeat(times, *[1] * (value.dim() - 1))
    if isinstance(value, dict):
        return {name: _repeat(item, times, crops, canvas) for name, item in value.items()}
    if isinstance(value, tuple):
        return tuple(_repeat(item, times, crops, canvas) for item in value)
    if isinstance(value, list):  # per-row scales
        return value * times
    if callable(value):  # a context that changes with the timestep (ELLA)
        return lambda t: _repeat(value(t), times, crops, canvas)
    return value


def _window_corners(added: Any, crops: Sequence[tuple[int, int, int, int]], factor: int) -> Any:
    """SDXL's `added_cond_kwargs` (repeated view-major for `crops`) with each window's rows cropped at the
    window's top-left corner in pixels; other values (no SDXL conditioning) as they are."""
    import torch

    if not isinstance(added, dict) or "time_ids" not in added:
        return added
    ids = added["time_ids"].clone()
    rows = ids.shape[0] // len(crops)
    corners = torch.tensor([(y * factor, x * factor) for y, x, _, _ in crops], dtype=ids.dtype, device=ids.device)
    ids[:, 2:4] = corners.repeat_interleave(rows, dim=0)
    return {**added, "time_ids": ids}


def repeated(guide: Guide, times: int, extra: dict[str, Any], crops: Sequence[tuple[int, int, int, int]] | None,
             canvas: tuple[int, int], factor: int = 1) -> Denoiser:
    """The denoiser of `guide` with `extra` for `times` views of every row stacked view-major (all rows of the
    first view, then of the second, ...): the text and scales repeated, `extra`'s canvas-sized tensors cut to
    `crops` and SDXL's crop corner set to each crop's (`factor` pixels per latent cell); with `crops` None, all
    repeated as they are."""
    args = [_repeat(arg, times, None, canvas) for arg in guide.args[1:]]
    text = {name: _repeat(value, times, None, canvas) for name, value in guide.keywords.items()}
    if crops is not None:
        text = {name: _window_corners(value, crops, factor) for name, value in text.items()}
    cut = {name: _repeat(value, times, crops, canvas) for name, value in extra.items()}
    return partial(guide.func, guide.args[0], *args, **text)(**cut)


def tiled_guide(guide: Guide, found: Windows, factor: int) -> Guide:
    """`guide` (a `guidance.guide_for` partial) whose denoisers work window by window over `found` windows."""
    window, overlap = found.in_latents(factor)

    def make(**extra: Any) -> Denoiser:
        import torch

        whole = guide(**extra)

        def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            height, width = x.shape[-2:]
            every = boxes(height, width, window, overlap)
            if len(every) == 1 and every[0][2:] == (height, width):
                return whole(x, t)
            total = torch.zeros_like(x, dtype=torch.float32)
            count = torch.zeros((1, 1, height, width), device=x.device)
            rows = x.shape[0]
            for chunk in chunks(every, found.batch):
                windowed = repeated(guide, len(chunk), extra, chunk, (height, width), factor)
                eps = windowed(torch.cat([x[:, :, y:y + h, x0:x0 + w] for y, x0, h, w in chunk]), t)
                for index, (y, x0, h, w) in enumerate(chunk):
                    total[:, :, y:y + h, x0:x0 + w] += eps[index * rows:(index + 1) * rows].float()
                    count[:, :, y:y + h, x0:x0 + w] += 1
            return total / count

        return denoise

    return make
