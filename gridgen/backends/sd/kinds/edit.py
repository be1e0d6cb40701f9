"""img2img and inpaint of given images: which mode a cell is in, preparing its pixels and mask, the batched
denoising, and pasting the result back.

Modes: `txt2img` (no image), `img2img` (`init_image`), `masked` (`init_image` + `mask`), `differential`
(`init_image` + a `change_map`, or a `mask` with `soft_mask`: differential diffusion, `denoise.change_map`) and
`input` (a SAM edit's `init_image`, used as it is). Outpainting (`images.outpaint`) extends the init image into a
canvas and redraws it in the differential or, for its `poor_man` and `mk2` baselines, the masked mode; mk2 does
its sides one after another, a masked pass each over the previous pass's result (`denoise_in_passes`).
Two kinds run here: `img2img` on a txt2img UNet (masks blended
in after every step) and `inpaint`, a 9-channel inpainting UNet; "inpaint" names that kind only. A batch
shares mode, model and `denoise` (the strength decides the step the schedule starts at, so it is part of
the batch key), while every cell keeps its own image, mask, prompt, seed and CFG scale.

Inpainting follows diffusers' `StableDiffusionInpaintPipeline`, random draws in its order, so a
cell matches it: a 9-channel UNet gets the noisy latents, the binarized mask at latent size and
the latents of the masked image, in that order; a 4-channel model (any txt2img model) has the
image's latents, noised to the current level, put back outside the mask after every step, so the
redrawn part is made to fit what surrounds it. Either way the result is pasted back, so pixels
outside the (blurred) mask keep their exact values. With `inpaint_full_res` (or a
`padding_mask_crop`) only the mask's box plus padding is redrawn, at the batch's size, and pasted
back into the full image. SDXL models (4- or 9-channel) take the same path with their added
conditioning, as StableDiffusionXLImg2ImgPipeline and StableDiffusionXLInpaintPipeline do for a
base model: the size conditioning is the working size, uncropped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from gridgen.backends.base import ParamProblem
from gridgen.backends.sd.images import outpaint
from gridgen.backends.sd.images.inputs import ImageInputs
from gridgen.backends.sd.kinds import txt2img
from gridgen.backends.sd.kinds.base import Batch, Kind
from gridgen.backends.sd.kinds.channels import CHANNELS

if TYPE_CHECKING:
    import torch

    from gridgen.backends.sd.denoise.guidance import Guide
    from gridgen.backends.sd.denoise.recipe import Recipe, Step

INPAINT_CHANNELS = CHANNELS["inpaint"]
DEFAULT_CROP_PADDING = 32
# What an edit reads of a given image besides the image: in a SAM edit these belong to the edit (it inpaints what
# SAM masks), not to the base image it starts from.
EDIT_PARAMS = frozenset({"denoise", "mask", "mask_blur", "inpaint_full_res", "padding_mask_crop", "inpainting_fill",
                         "change_map", "soft_mask"})
# The modes that start from a given image.
IMAGE_MODES = ("img2img", "masked", "differential")


def mode_of(params: dict[str, Any]) -> str:
    """txt2img, img2img, masked (img2img with a mask), differential (img2img under a change map), or input (a SAM
    edit's own image, which needs no base generation)."""
    if params.get("sam_prompt"):
        return "input" if params.get("init_image") else "txt2img"
    if params.get("init_image"):
        if outpaint.active(params):
            return "differential" if outpaint.method(params) == "gradient" else "masked"
        if params.get("change_map") or params.get("mask") and params.get("soft_mask"):
            return "differential"
        return "masked" if params.get("mask") else "img2img"
    return "txt2img"


def crop_padding(params: dict[str, Any]) -> int | None:
    """The padding of the crop around the mask, or None when the whole image is redrawn."""
    if params.get("padding_mask_crop") is not None:
        return int(params["padding_mask_crop"])
    return DEFAULT_CROP_PADDING if params.get("inpaint_full_res") else None


def batch_part(params: dict[str, Any]) -> tuple:
    """What of the mode cells must share to denoise together: the mode, the strength of a start image, and what
    each outpaint pass lacks of the final canvas (mk2's passes run in step, at one size each).

    The strength is in the key whenever a base image could use it, not only in img2img/inpaint mode:
    the planner judges each axis alone, and a `denoise` axis next to an `init_image` axis must count
    as one that splits batches, so that it is ordered outside the axes that batch together.
    """
    return (mode_of(params), None if params.get("sam_prompt") else float(params["denoise"]),
            outpaint.still_to_come(params))


def problems(params: dict[str, Any]) -> list[ParamProblem]:
    """Image params that do not fit together, on a model of any kind."""
    found = []
    if params.get("mask") and not params.get("init_image"):
        found.append(ParamProblem("mask", "mask is set but init_image is not; inpainting needs the image the mask "
                                          "applies to"))
    if params.get("mask") and params.get("sam_prompt"):
        found.append(ParamProblem("mask", "mask and sam_prompt both set; SAM makes the mask from sam_prompt, so "
                                          "give one"))
    from gridgen.backends.sd.images.change_maps import problems as change_map_problems

    found += [ParamProblem(param, message) for param, message in outpaint.problems(params)]
    return found + change_map_problems(params)


@dataclass
class Prepared:
    """A batch's images at the working size, and how to turn each decoded image into the cell's output."""

    pixels: torch.Tensor  # (N, 3, H, W) in [-1, 1]
    masks: torch.Tensor | None  # (N, 1, H, W), 0 or 1
    finish: list[Callable[[Image.Image], Image.Image]]
    fills: list[str]  # each cell's `inpainting_fill` (or outpaint's latent_noise): what the masked part starts from
    change: torch.Tensor | None = None  # (N, 1, H, W) in [0, 1]: a differential batch's change maps


def _prepare_one(image: Image.Image, mask: Image.Image | None, params: dict[str, Any], size: tuple[int, int],
                 out_size: tuple[int, int]) -> tuple[Image.Image, Image.Image | None, Callable]:
    from gridgen.backends.sd.images import masks as mask_ops

    padding = crop_padding(params)
    if params.get("change_map"):  # redrawn where the map says, so nothing is pasted back
        work_map = mask.resize(size, Image.Resampling.BILINEAR)
        return image.resize(size, Image.Resampling.LANCZOS), work_map, lambda decoded: decoded.resize(out_size)
    if mask is None:
        return image.resize(size, Image.Resampling.LANCZOS), None, lambda decoded: decoded.resize(out_size)
    # An outpaint mask other than poor man's is already as soft as it should be (see `outpaint.canvas`).
    shaped = outpaint.active(params) and outpaint.method(params) != "poor_man"
    soft = mask if shaped else mask_ops.blur(mask, int(params["mask_blur"]))
    if padding is not None:
        box = mask_ops.crop_region(mask, padding, size[0] / size[1])
        box_size = (box[2] - box[0], box[3] - box[1])
        work = image.crop(box).resize(size, Image.Resampling.LANCZOS)
        work_mask = soft.crop(box).resize(size, Image.Resampling.BILINEAR)

        def finish(decoded: Image.Image) -> Image.Image:
            canvas = image.copy()
            canvas.paste(decoded.resize(box_size, Image.Resampling.LANCZOS), box[:2])
            return mask_ops.paste_back(image, canvas, soft)
        return work, work_mask, finish
    original = image.resize(out_size, Image.Resampling.LANCZOS) if image.size != out_size else image
    soft_out = soft.resize(out_size, Image.Resampling.BILINEAR) if soft.size != out_size else soft
    work = image.resize(size, Image.Resampling.LANCZOS) if image.size != size else image
    work_mask = soft.resize(size, Image.Resampling.BILINEAR) if soft.size != size else soft
    return work, work_mask, lambda decoded: mask_ops.paste_back(original, decoded.resize(out_size), soft_out)


def _fill_of(params: dict[str, Any]) -> str:
    if outpaint.active(params) and outpaint.fill(params) == "latent_noise":
        return "latent_noise"
    return str(params.get("inpainting_fill") or "original")


def prepare(items: Sequence[tuple[Image.Image, Image.Image | None, dict[str, Any]]], size: tuple[int, int],
            out_sizes: Sequence[tuple[int, int]], device: torch.device) -> Prepared:
    """Images (and masks) at the working `size`; each cell's finish maps its decoded image to `out_sizes[i]`."""
    import torch

    from gridgen.backends.sd.images import masks as mask_ops
    from gridgen.backends.sd.images.inpainters import telea
    from gridgen.backends.sd.images.resample import to_tensor

    works, work_masks, finishes, fills = [], [], [], []
    for (image, mask, params), out_size in zip(items, out_sizes, strict=True):
        work, work_mask, finish = _prepare_one(image, mask, params, size, out_size)
        fills.append(_fill_of(params))
        if work_mask is not None and fills[-1] == "fill":
            work = telea(work, mask_ops.binary(work_mask))
        works.append(to_tensor(work, device) * 2 - 1)
        work_masks.append(work_mask)
        finishes.append(finish)
    masks = change = None
    if work_masks[0] is not None:
        masks = torch.cat([to_tensor(mask_ops.binary(m).convert("RGB"), device)[:, :1] for m in work_masks])
    if mode_of(items[0][2]) == "differential":
        change = torch.cat([to_tensor(m.convert("RGB"), device)[:, :1] for m in work_masks])
    return Prepared(torch.cat(works), masks, finishes, fills, change)


def init_size(params: dict[str, Any], inputs: ImageInputs, factor: int) -> tuple[int, int] | None:
    """The size an img2img/inpaint cell without width and height works at: its init image's, to the VAE's multiple.

    None when another size applies: width/height given, a crop around the mask (the model's size), or no image.
    """
    if params.get("width") and params.get("height") or mode_of(params) not in IMAGE_MODES:
        return None
    found = inputs.size(params["init_image"]) if crop_padding(params) is None else None
    if found and outpaint.active(params):
        found = outpaint.extended_size(found, params)
    return tuple(max(factor, round(side / factor) * factor) for side in found) if found else None


def _out_size(params: dict[str, Any], image_size: tuple[int, int], size: tuple[int, int]) -> tuple[int, int]:
    """A cell's output size: its (extended) init image's, unless width/height say otherwise."""
    explicit = params.get("width") and params.get("height") and crop_padding(params) is None
    return size if explicit else image_size


def prepare_cells(batch: Sequence[dict[str, Any]], inputs: ImageInputs, size: tuple[int, int],
                  device: torch.device, lama_path: Callable[[str], Path] | None = None) -> Prepared:
    """A batch's init images and masks at `size`; outputs keep the init image's size unless width/height say.
    `lama_path` finds the file of an outpaint fill `lama:<file>` (by default next to the spec only)."""
    lama_path = lama_path or partial(outpaint.resolve_lama_fill, spec_dir=inputs.spec_dir, models_dir=None)
    items, out_sizes = [], []
    for params in batch:
        image = inputs.load("init_image", params["init_image"])
        mask_param = "change_map" if params.get("change_map") else "mask"
        mask = inputs.load(mask_param, params[mask_param]) if params.get(mask_param) else None
        if outpaint.active(params):
            built = outpaint.canvas(image, params, outpaint.lama_fill(params, lama_path, device))
            image, mask = built.image, built.mask
        items.append((image, mask, params))
        out_sizes.append(_out_size(params, image.size, size))
    return prepare(items, size, out_sizes, device)


def denoise_in_passes(batch: Batch) -> tuple[torch.Tensor, list[Callable[[Image.Image], Image.Image]]]:
    """mk2's sides one after another, as A1111's script runs them: each pass a masked img2img of the previous
    pass's result grown by one side, at that pass's size and from the cells' seeds afresh. Every pass but the last
    is decoded here; the last gives its latents and finish as a one-pass batch does."""
    from gridgen.backends.sd.images import images, vae_tiling

    strength = float(batch.cells[0]["denoise"])
    results = [batch.inputs.load("init_image", params["init_image"]) for params in batch.cells]
    rests = outpaint.still_to_come(batch.cells[0])  # the same for every cell of the batch: its key holds it
    for index, rest in enumerate(rests[:-1]):
        prepared = _prepare_pass(batch, results, index, outpaint.pass_size(batch.size, rest, batch.factor))
        latents = denoise(batch.parts, prepared, batch.recipe, batch.guide, batch.steps, strength)
        decoded = images.decode(batch.parts.vae, latents, vae_tiling.batch_mode(batch.cells))
        results = [finish(image) for finish, image in zip(prepared.finish, decoded, strict=True)]
        batch.recipe.restart()
    prepared = _prepare_pass(batch, results, len(rests) - 1, batch.size)
    return denoise(batch.parts, prepared, batch.recipe, batch.guide, batch.steps, strength), prepared.finish


def _prepare_pass(batch: Batch, results: Sequence[Image.Image], index: int, size: tuple[int, int]) -> Prepared:
    """Pass `index` of mk2 over each cell's latest result, at the working `size`: outputs at the pass's canvas
    size, but for the last pass, whose outputs are the cells' own."""
    last = index == len(outpaint.passes(batch.cells[0])) - 1
    items, out_sizes = [], []
    for image, params in zip(results, batch.cells, strict=True):
        one_pass = outpaint.for_pass(params, outpaint.passes(params)[index])
        built = outpaint.canvas(image, one_pass)
        items.append((built.image, built.mask, one_pass))
        out_sizes.append(_out_size(params, built.image.size, size) if last else built.image.size)
    return prepare(items, size, out_sizes, batch.parts.device)


def change_map_file(params: dict[str, Any], inputs: ImageInputs, size: tuple[int, int]) -> dict[str, Image.Image]:
    """`{"change_map": map}` for a cell denoised under a change map, as `prepare_cells` makes it (a `change_map`
    as given, outpaint's gradient, a soft mask blurred by `mask_blur`), at the cell's output size; else {}."""
    from gridgen.backends.sd.images import masks as mask_ops

    if mode_of(params) != "differential":
        return {}
    image_size = inputs.size(params["init_image"])
    if outpaint.active(params):
        change = outpaint.change_map(image_size, params)
        image_size = change.size
    elif params.get("change_map"):
        change = inputs.load("change_map", params["change_map"])
    else:
        change = mask_ops.blur(inputs.load("mask", params["mask"]), int(params["mask_blur"]))
    return {"change_map": change.resize(_out_size(params, image_size, size), Image.Resampling.BILINEAR)}


def denoise(parts, prepared: Prepared, recipe: Recipe, guide: Guide, steps: int, strength: float) -> torch.Tensor:
    """The batch's denoised latents: img2img from the images, inpainting where the batch has masks. `guide` makes
    the batch's guided denoiser from what the UNet reads besides the latents."""
    from gridgen.backends.sd.denoise import change_map
    from gridgen.backends.sd.denoise.img2img import encode, img2img
    from gridgen.backends.sd.images import vae_tiling

    if prepared.change is not None:
        return change_map.denoise(parts, prepared.pixels, prepared.change, recipe, guide, steps, strength,
                                  prepared.fills)
    if prepared.masks is None:
        start = encode(parts.vae, prepared.pixels, recipe.generators, vae_tiling.batch_mode(recipe.cells))
        return img2img(recipe, guide(), start, steps, strength)
    return _inpaint(parts, prepared, recipe, guide, steps, strength)


def _inpaint(parts, prepared: Prepared, recipe: Recipe, guide: Guide, steps: int, strength: float) -> torch.Tensor:
    """diffusers' StableDiffusionInpaintPipeline on the batch, draws in its order: the image's latents (when
    needed), the noise, the masked image's latents. A 9-channel UNet reads the mask and the masked image's
    latents as extra channels; a 4-channel one gets the image's latents, noised to the next step's level,
    put back outside the mask after every step."""
    import torch
    import torch.nn.functional as F

    from gridgen.backends.sd.denoise import mask_weights
    from gridgen.backends.sd.denoise.img2img import encode, masked_content
    from gridgen.backends.sd.images import vae_tiling

    pixels, generators = prepared.pixels, recipe.generators
    tiling = vae_tiling.batch_mode(recipe.cells)
    timesteps = recipe.partial_schedule(steps, strength)
    full = strength >= 1
    extra_channels = parts.unet.config.in_channels == INPAINT_CHANNELS
    start = None if full and extra_channels else encode(parts.vae, pixels, generators, tiling)
    if len(timesteps) == 0:  # denoise 0: nothing is redrawn, the image is the VAE's round trip
        return start
    factor = _factor(parts)
    shape = (parts.vae.config.latent_channels, pixels.shape[2] // factor, pixels.shape[3] // factor)
    noise = recipe.start_noise(shape)
    # Drawn for a 4-channel UNet too, which does not read it: the step noise after it must be diffusers'.
    masked = encode(parts.vae, mask_weights.conditioning_image(pixels, prepared.masks, recipe.cells), generators,
                    tiling)
    small_mask = F.interpolate(prepared.masks, size=shape[1:])
    if full:
        latents = noise * recipe.scheduler.init_noise_sigma
    else:
        start = masked_content(start, small_mask, prepared.fills, generators)
        latents = recipe.noised(start, noise)
    if extra_channels:
        return recipe.run(guide(image=torch.cat([small_mask, masked], dim=1).to(parts.unet.dtype)), latents)

    def keep_outside(step: Step) -> torch.Tensor:
        known = start if step.index == len(timesteps) - 1 else recipe.noised(start, noise, step.index + 1)
        return (1 - small_mask) * known + small_mask * step.latents

    return recipe.run(guide(), latents, hooks=[keep_outside])


def _factor(parts) -> int:
    return 2 ** (len(parts.vae.config.block_out_channels) - 1)


def unet_in_channels(model: Path) -> int | None:
    """The UNet's input channels from its config (4 txt2img, 9 inpainting), or None when unreadable."""
    try:
        return int(json.loads((model / "unet" / "config.json").read_text(encoding="utf-8")).get("in_channels", 4))
    except (OSError, ValueError):
        return None


class Img2Img(Kind):
    """img2img of a given image on a txt2img UNet, inpainting by mask blending when the cell gives a mask."""

    name = "img2img"

    def problems(self, params, info, services):
        if mode_of(params) == "txt2img" and not params.get("sam_prompt"):  # only `pipeline: img2img` gets here
            return [ParamProblem("init_image", "pipeline img2img edits a given image; set init_image, or drop "
                                               "`pipeline` to draw from noise")]
        return outpaint.lama_problems(params, services._resolve)

    def as_read(self, params):
        return outpaint.as_read(params)

    def size(self, params, info, inputs):
        return init_size(params, inputs, info.vae_factor if info else 8)

    def denoise(self, batch: Batch):
        if mode_of(batch.cells[0]) not in IMAGE_MODES:  # a SAM edit's base image: txt2img
            return txt2img.KIND.denoise(batch)
        if outpaint.active(batch.cells[0]) and outpaint.method(batch.cells[0]) == "mk2":
            return denoise_in_passes(batch)
        prepared = prepare_cells(batch.cells, batch.inputs, batch.size, batch.parts.device,
                                 partial(batch.services._resolve, outpaint.resolve_lama_fill))
        strength = float(batch.cells[0]["denoise"])
        return denoise(batch.parts, prepared, batch.recipe, batch.guide, batch.steps, strength), prepared.finish


class Inpaint(Img2Img):
    """A 9-channel inpainting UNet: it reads the mask and the masked image besides the latents."""

    name = "inpaint"

    def problems(self, params, info, services):
        if mode_of(params) not in ("masked", "differential") and not params.get("sam_prompt"):
            return [ParamProblem("model", "this is an inpainting model (a 9-channel UNet); give it init_image and "
                                          "mask (or change_map), or use a txt2img model")]
        return outpaint.lama_problems(params, services._resolve)


IMG2IMG = Img2Img()
INPAINT = Inpaint()
