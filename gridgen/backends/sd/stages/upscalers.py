"""What an `upscaler` value names, parsed without torch so spec validation can check it early.

One `upscaler` axis can compare every family on the same base image:

    none | nearest | bilinear | bicubic | lanczos       resample the pixels
    models/4x-UltraSharp.pth                           a model file spandrel loads (.pth, .safetensors, .pt, .ckpt)
    sd-x4  or  sd-x4:FOLDER                            the Stable Diffusion x4 upscaler (default: the hub id below)
    latent | latent-antialiased | latent-bicubic | ... hires fix that enlarges the latents (A1111's Latent modes)
    hires:lanczos  or  hires:models/x.pth              hires fix that enlarges the decoded pixels
    sd-upscale  or  sd-upscale:models/x.pth            A1111's SD upscale: tiled img2img over an enlarged image
    demofusion                                         DemoFusion: progressive phases redrawn by the cell's model

Names compare case-insensitively and A1111's spellings are accepted (`Latent (nearest-exact)`). A cell with
`demofusion_scale` set runs DemoFusion whatever its `upscaler` says (`cell_upscaler`); validation rejects any other
upscaler beside it, so the two never disagree silently.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

PIXEL = ("none", "nearest", "bilinear", "bicubic", "lanczos")
LATENT = ("latent", "latent-antialiased", "latent-bicubic", "latent-bicubic-antialiased", "latent-nearest",
          "latent-nearest-exact")
MODEL_SUFFIXES = (".pth", ".safetensors", ".pt", ".ckpt")
X4_DEFAULT_MODEL = "stabilityai/stable-diffusion-x4-upscaler"
# Families that take `family:argument`; the argument of hires and sd-upscale is itself an upscaler.
_PREFIXED = ("sd-x4", "hires", "sd-upscale")


@dataclass(frozen=True)
class Upscaler:
    """A parsed `upscaler` value."""

    family: str  # pixel, model, sd-x4, latent, hires, sd-upscale or demofusion
    name: str  # the resampler or latent mode, the model file as written, or the x4 model folder/id
    inner: Upscaler | None = None  # hires and sd-upscale: the upscaler that enlarges before img2img
    text: str = ""  # the canonical spelling, what the param holds

    @property
    def is_model_file(self) -> bool:
        return self.family == "model"


def _slug(text: str) -> str:
    """`Latent (nearest-exact)` -> `latent-nearest-exact`: A1111's labels in gridgen's spelling."""
    return re.sub(r"[\s_()]+", "-", text.strip().lower()).strip("-")


def _is_model_file(text: str) -> bool:
    return text.lower().endswith(MODEL_SUFFIXES)


def _known_names() -> list[str]:
    return [*PIXEL, *LATENT, *_PREFIXED, "demofusion"]


def _unknown(text: str, where: str = "") -> ValueError:
    close = difflib.get_close_matches(_slug(text), _known_names(), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return ValueError(f"upscaler {text!r}{where} is not known; {hint}use one of {', '.join(PIXEL)}, "
                      f"{', '.join(LATENT)}, sd-x4, hires:<upscaler>, sd-upscale, or a model file path ending in "
                      f"{', '.join(MODEL_SUFFIXES)}")


def _enlarger(text: str, outer: str) -> Upscaler:
    """The upscaler inside `hires:` or `sd-upscale:`: pixel resampling or a model file."""
    if _is_model_file(text):
        return Upscaler("model", text, text=text)
    name = _slug(text)
    if name in PIXEL and name != "none":
        return Upscaler("pixel", name, text=name)
    if name in (*LATENT, *_PREFIXED, "none"):
        raise ValueError(f"upscaler '{outer}:{text}': {outer} enlarges with a pixel resampler "
                         f"(nearest, bilinear, bicubic, lanczos) or a model file, not {name}")
    raise _unknown(text, f" (inside {outer}:)")


def parse_upscaler(value: str) -> Upscaler:
    """Parse an `upscaler` value; raises ValueError naming the value, with a did-you-mean."""
    text = str(value).strip()
    if not text:
        raise ValueError("upscaler is empty; use none, a resampler, latent, sd-x4, hires:..., sd-upscale or a file")
    head, colon, rest = text.partition(":")
    family = _slug(head)
    if colon and family in _PREFIXED:
        rest = rest.strip()
        if not rest:
            raise ValueError(f"upscaler {text!r}: nothing after the colon; write {family}:<what to use>")
        if family == "sd-x4":
            return Upscaler("sd-x4", rest, text=f"sd-x4:{rest}")
        inner = _enlarger(rest, family)
        return Upscaler(family, inner.name, inner=inner, text=f"{family}:{inner.text}")
    if _is_model_file(text):
        return Upscaler("model", text, text=text)
    name = _slug(text)
    if name in PIXEL:
        return Upscaler("pixel", name, text=name)
    if name in LATENT:
        return Upscaler("latent", name, text=name)
    if name == "sd-x4":
        return Upscaler("sd-x4", X4_DEFAULT_MODEL, text="sd-x4")
    if name == "demofusion":
        return Upscaler("demofusion", "demofusion", text="demofusion")
    if name == "sd-upscale":
        inner = Upscaler("pixel", "lanczos", text="lanczos")
        return Upscaler("sd-upscale", "lanczos", inner=inner, text="sd-upscale")
    if name == "hires":
        raise ValueError(f"upscaler {text!r}: say what hires fix enlarges with, e.g. hires:lanczos, "
                         f"hires:models/4x.pth, or latent for the latent hires fix")
    raise _unknown(text)


def cell_upscaler(params: dict) -> Upscaler:
    """The upscaler a cell runs: DemoFusion when its `demofusion_scale` is set, else its `upscaler` (ValueError for
    a value that names none)."""
    if int(params.get("demofusion_scale") or 0):
        return Upscaler("demofusion", "demofusion", text="demofusion")
    return parse_upscaler(str(params.get("upscaler") or "none"))


def canonical_upscaler(value: str) -> str:
    """The canonical spelling of an `upscaler` value (what the registry stores); raises ValueError."""
    return parse_upscaler(value).text
