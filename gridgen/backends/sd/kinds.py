"""Pipeline kinds: which kind a model is, which params belong to which kind, and the problems a
mismatch gives at validation.

A model's kind follows from its UNet's input channels (`families.KIND_BY_CHANNELS`), except unCLIP:
a 4-channel UNet that also reads an image embedding, which `locate` tells apart by its folder. The
`pipeline` param may pick another kind that the same UNet runs (img2img on a txt2img model). `PARAM_KINDS` is
the one table of params that only some kinds read; the modes that add such params register them there.
"""

from __future__ import annotations

from typing import Any

from gridgen.backends.base import ParamProblem
from gridgen.backends.sd.families import KIND_BY_CHANNELS

CHANNELS_BY_KIND = {"txt2img": 4, "img2img": 4, "depth2img": 5, "x4-upscaler": 7, "instruct-pix2pix": 8,
                    "inpaint": 9, "unclip": 4}
# The kinds this backend renders so far; the others are recognised and refused at validation.
RENDERED_KINDS = frozenset({"txt2img", "img2img", "inpaint", "depth2img", "instruct-pix2pix", "unclip",
                            "x4-upscaler"})
# Param name -> the kinds that read it. A cell that sets one for a model of another kind is an error.
PARAM_KINDS: dict[str, frozenset[str]] = {
    "image_cfg_scale": frozenset({"instruct-pix2pix"}),
}


def model_kind(in_channels: int, unclip: bool = False) -> str:
    return "unclip" if unclip else KIND_BY_CHANNELS.get(in_channels, f"{in_channels}-channel")


def kind_problems(params: dict[str, Any], model: str, in_channels: int, sdxl: bool,
                  unclip: bool = False) -> list[ParamProblem]:
    """Problems between the cell's params and the kind of `model` (named as the spec names it)."""
    native = model_kind(in_channels, unclip)
    article = "an" if sdxl or native[0] in "aeiou" else "a"
    described = f"model {model!r} is {article} {'SDXL ' if sdxl else ''}{native} model ({in_channels}-channel UNet)"
    wanted = str(params.get("pipeline") or "auto")
    if wanted != "auto" and CHANNELS_BY_KIND[wanted] != in_channels:
        return [ParamProblem("pipeline", f"pipeline {wanted} needs a {CHANNELS_BY_KIND[wanted]}-channel UNet, but "
                                         f"{described}; pick a {wanted} model or drop `pipeline`")]
    if wanted != "auto" and (wanted == "unclip") != unclip:
        # Channels alike, but an unCLIP UNet needs an image embedding every other kind lacks, and vice versa.
        return [ParamProblem("pipeline", f"pipeline {wanted} cannot run {described}: only unCLIP models run as "
                                         f"unclip, and they run as nothing else; pick a {wanted} model or drop "
                                         f"`pipeline`")]
    kind = native if wanted == "auto" else wanted
    problems = [ParamProblem(name, f"{name} is for {' / '.join(sorted(kinds))} models, but {described}")
                for name, kinds in PARAM_KINDS.items() if params.get(name) is not None and kind not in kinds]
    if kind not in RENDERED_KINDS:
        problems.append(ParamProblem("model", f"{described}; gridgen does not render {kind} yet "
                                              f"(it renders {', '.join(sorted(RENDERED_KINDS))})"))
    return problems
