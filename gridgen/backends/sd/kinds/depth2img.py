"""depth2img (SD 2 depth models, a 5-channel UNet): which cells are in it, what they must give, and the
batched denoising.

A depth2img cell redraws its `init_image` as img2img does (`denoise` is the strength) while the UNet
reads the image's depth (see `depth`) as a fifth input channel, on both halves of classifier-free
guidance, so the new picture keeps the old one's layout. Random draws follow diffusers'
StableDiffusionDepth2ImgPipeline: per cell from its own seed, the init image's latents, then the
noise, then the step noise.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from gridgen.backends.base import ParamProblem
from gridgen.backends.sd.images.inputs import ImageInputError
from gridgen.backends.sd.kinds import edit
from gridgen.backends.sd.kinds.base import Batch, Kind
from gridgen.backends.sd.kinds.depth import DEPTH_PARAMS, DepthMaps
from gridgen.errors import ModelError

if TYPE_CHECKING:
    import torch

    from gridgen.backends.sd.denoise.guidance import Guide
    from gridgen.backends.sd.denoise.recipe import Recipe


def problems(params: dict[str, Any], model: Path, depths: DepthMaps) -> list[ParamProblem]:
    """Problems of a cell of the depth2img `model`: an init image to redraw, no mask, one source of depth."""
    mode = edit.mode_of(params)
    if mode == "input":  # a SAM edit of the given image: the depth model does not run
        return []
    found = []
    if mode == "txt2img":
        found.append(ParamProblem("init_image", f"model {str(params['model'])!r} is a depth2img model: it redraws "
                                                f"init_image along that image's depth; give init_image"))
    if params.get("mask"):
        found.append(ParamProblem("mask", "depth2img models redraw the whole init_image and read no mask; drop mask, "
                                          "or use an inpainting model"))
    if params.get("depth_map") and params.get("depth_model"):
        found.append(ParamProblem("depth_model", "depth_map and depth_model both set; the depth comes from one of "
                                                 "them, so give one"))
    elif params.get("depth_map"):
        try:
            flat = depths.flat_map_problem(str(params["depth_map"]))
        except ImageInputError:
            flat = None  # a missing or unreadable file is the image inputs' check to report
        if flat:
            found.append(ParamProblem("depth_map", flat))
    else:
        try:
            depths.source(params, model)
        except ModelError as exc:
            found.append(ParamProblem("depth_model" if params.get("depth_model") else "depth_map", str(exc)))
    return found


def denoise(parts, pixels: torch.Tensor, depth: torch.Tensor, recipe: Recipe, guide: Guide, steps: int,
            strength: float) -> torch.Tensor:
    """The batch's denoised latents from its (N, 3, H, W) `pixels` in [-1, 1] and (N, 1, h, w) latent-size `depth`."""
    from gridgen.backends.sd.denoise.img2img import encode, img2img
    from gridgen.backends.sd.images import vae_tiling

    start = encode(parts.vae, pixels, recipe.generators, vae_tiling.batch_mode(recipe.cells))
    return img2img(recipe, guide(image=depth), start, steps, strength)


class Depth2Img(Kind):
    name = "depth2img"
    exclusive = frozenset(DEPTH_PARAMS)

    def problems(self, params, info, services):
        return problems(params, info.path, services.depths)

    def size(self, params, info, inputs):
        return edit.init_size(params, inputs, info.vae_factor if info else 8)

    def denoise(self, batch: Batch):
        width, height = batch.size
        prepared = edit.prepare_cells(batch.cells, batch.inputs, batch.size, batch.parts.device)
        depth = batch.services.depths.for_batch(batch.cells, batch.info.path,
                                                (height // batch.factor, width // batch.factor), batch.parts.device)
        latents = denoise(batch.parts, prepared.pixels, depth, batch.recipe, batch.guide, batch.steps,
                          float(batch.cells[0]["denoise"]))
        return latents, prepared.finish


KIND = Depth2Img()
