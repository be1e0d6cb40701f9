"""The diffusers backend's checks of one cell's params that need no loaded model: the sampler and schedule,
the size against the VAE's scale, CLIP skip against the text encoder, the prompts' wildcards, styles and
regions, and the per-technique options (sampler options, latent controls, HDR, tiled diffusion, change maps,
the x4 stage's noise level). `DiffusersBackend.validate` gathers these with its model, file and stage checks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gridgen.backends.base import ParamProblem
from gridgen.backends.sd.denoise import multidiffusion, sampler_options
from gridgen.backends.sd.denoise.controls import options as latent_controls
from gridgen.backends.sd.denoise.samplers import unsupported_schedule
from gridgen.backends.sd.hdr import options as hdr_options
from gridgen.backends.sd.kinds import edit
from gridgen.backends.sd.stages import x4
from gridgen.backends.sd.text import ella_setup, regions, styles, wildcards

if TYPE_CHECKING:
    from gridgen.backends.sd.kinds.base import Kind
    from gridgen.backends.sd.models.locate import ModelInfo


def sampling_problems(params: dict[str, Any], vae_factor: int | None, text_layers: int | None) -> list[ParamProblem]:
    """The sampler and its schedule, width and height against the VAE's scale, CLIP skip against the encoder."""
    problems = []
    try:
        reason = unsupported_schedule(str(params["sampler"]), str(params["schedule"]))
    except ValueError as exc:
        problems.append(ParamProblem("sampler", str(exc)))
    else:
        if reason:
            problems.append(ParamProblem("schedule", reason))
    for side in ("width", "height"):
        value = params.get(side)
        if vae_factor and value is not None and (value < 8 * vae_factor or value % vae_factor):
            problems.append(ParamProblem(side, f"{side} {value} does not fit this model: it must be at least "
                                               f"{8 * vae_factor} and a multiple of {vae_factor} (the VAE's scale)"))
    clip_skip = int(params["clip_skip"])
    if text_layers is not None and clip_skip > text_layers:
        problems.append(ParamProblem("clip_skip", f"clip_skip {clip_skip} is more than the {text_layers} "
                                                  f"layers of this model's text encoder"))
    return problems


def text_problems(params: dict[str, Any], wildcard_folders: Sequence[Path], style_files: Sequence[Path],
                  load_image: Callable) -> list[ParamProblem]:
    """Wildcards in either prompt, styles, and the region layout the prompt and `regions` describe."""
    problems = [ParamProblem(field, message) for field in ("prompt", "negative_prompt")
                for message in wildcards.problems(str(params[field]), wildcard_folders)]
    problems += [ParamProblem("styles", message) for message in styles.problems(params, style_files)]
    problems += regions.problems(params, load_image)
    if regions.calc(params) == "attention" and ella_setup.enabled(params):
        problems.append(ParamProblem("region_calc", "region_calc attention splits CLIP's cross-attention and ELLA "
                                                    "conditions by timestep; use region_calc latent with ELLA"))
    if regions.active(params) and regions.prompt_mode(params) and ella_setup.enabled(params):
        problems.append(ParamProblem("regions", f"regions {params['regions']} finds regions in CLIP's "
                                                "cross-attention, which ELLA replaces; use Columns, Rows, a ratio "
                                                "or Mask with ELLA"))
    return problems


def technique_problems(params: dict[str, Any], kind: Kind | None, info: ModelInfo | None,
                       size: tuple[int, int]) -> list[ParamProblem]:
    """The edit options, sampler options, latent controls and HDR, and, where the model is known, tiled
    diffusion against its native size and the x4 stage's noise level where the kind does not read it."""
    problems = edit.problems(params) + sampler_options.problems(params)
    if kind is None or info is None:
        return problems
    if regions.active(params) and regions.prompt_mode(params) and kind.name != "txt2img":
        problems.append(ParamProblem("regions", f"regions {params['regions']} finds its regions in the first steps "
                                                f"of a txt2img run; with {kind.name} use Columns, Rows, a ratio or "
                                                "Mask"))
    problems += [ParamProblem(name, message) for name, message in
                 latent_controls.problems(params, size, kind.name) + hdr_options.problems(params)]
    problems += multidiffusion.problems(params, info.native_size, info.vae_factor)
    if "noise_level" not in kind.base_reads:
        problems += x4.stage_noise_level_problems(params)
    return problems
