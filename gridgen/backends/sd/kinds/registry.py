"""The one table of model kinds, and which kind a cell is.

A model's own kind follows from its UNet's input channels (`channels.KIND_BY_CHANNELS`), except unCLIP: a
4-channel UNet that also reads an image embedding, which `locate` tells apart by its folder. A cell on a
txt2img model that gives an image to edit is img2img. The `pipeline` param, when not auto, picks the kind
itself among those the same UNet runs. `PARAM_KINDS` (derived from each kind's `exclusive` params) says which
params only some kinds read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gridgen.backends.base import ParamProblem
from gridgen.backends.sd.kinds import depth2img, edit, instruct_pix2pix, txt2img, unclip, x4
from gridgen.backends.sd.kinds.base import Kind
from gridgen.backends.sd.kinds.channels import CHANNELS, KIND_BY_CHANNELS

if TYPE_CHECKING:
    from gridgen.backends.sd.models.locate import ModelInfo

KINDS: dict[str, Kind] = {kind.name: kind for kind in (
    txt2img.KIND, edit.IMG2IMG, edit.INPAINT, depth2img.KIND, instruct_pix2pix.KIND, unclip.KIND, x4.KIND)}
# Param name -> the kinds that read it. A cell that sets one for a model of another kind is an error.
PARAM_KINDS: dict[str, frozenset[str]] = {
    param: frozenset(kind.name for kind in KINDS.values() if param in kind.exclusive)
    for param in sorted({param for kind in KINDS.values() for param in kind.exclusive})}
# What planning assumes of a cell whose model cannot be read (validation reports the model): an edit of its init
# image when it gives one, else txt2img at the size its params say.
UNREADABLE = KINDS["img2img"]


def model_kind(in_channels: int, unclip: bool = False) -> str:
    return "unclip" if unclip else KIND_BY_CHANNELS.get(in_channels, f"{in_channels}-channel")


def kind_of(params: dict[str, Any], info: ModelInfo) -> Kind:
    """The kind a cell renders as: the `pipeline` param's, or its model's (img2img when it edits an image)."""
    native = model_kind(info.in_channels, info.unclip)
    wanted = str(params.get("pipeline") or "auto")
    if wanted != "auto" and CHANNELS[wanted] == info.in_channels and (wanted == "unclip") == info.unclip:
        return KINDS[wanted]  # (a pipeline its UNet cannot run is refused by kind_problems)
    if native == "txt2img" and edit.mode_of(params) in edit.IMAGE_MODES:
        return KINDS["img2img"]
    return KINDS.get(native, KINDS["txt2img"])  # an unknown channel count is refused by kind_problems


def kind_problems(params: dict[str, Any], model: str, in_channels: int, sdxl: bool,
                  unclip: bool = False) -> list[ParamProblem]:
    """Problems between the cell's params and the kind of `model` (named as the spec names it)."""
    native = model_kind(in_channels, unclip)
    article = "an" if sdxl or native[0] in "aeiou" else "a"
    described = f"model {model!r} is {article} {'SDXL ' if sdxl else ''}{native} model ({in_channels}-channel UNet)"
    wanted = str(params.get("pipeline") or "auto")
    if wanted != "auto" and CHANNELS[wanted] != in_channels:
        return [ParamProblem("pipeline", f"pipeline {wanted} needs a {CHANNELS[wanted]}-channel UNet, but "
                                         f"{described}; pick a {wanted} model or drop `pipeline`")]
    if wanted != "auto" and (wanted == "unclip") != unclip:
        # Channels alike, but an unCLIP UNet needs an image embedding every other kind lacks, and vice versa.
        return [ParamProblem("pipeline", f"pipeline {wanted} cannot run {described}: only unCLIP models run as "
                                         f"unclip, and they run as nothing else; pick a {wanted} model or drop "
                                         f"`pipeline`")]
    kind = native if wanted == "auto" else wanted
    problems = [ParamProblem(name, f"{name} is for {' / '.join(sorted(kinds))} models, but {described}")
                for name, kinds in PARAM_KINDS.items() if params.get(name) is not None and kind not in kinds]
    if kind not in KINDS:
        problems.append(ParamProblem("model", f"{described}; gridgen does not render {kind} yet "
                                              f"(it renders {', '.join(sorted(KINDS))})"))
    return problems
