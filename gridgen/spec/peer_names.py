"""Parameter names of the peer tools (Infinity Grid, A1111's X/Y/Z plot) that gridgen's registry does not spell.

A spec written for those tools names its params their way: `Denoising`, `Var Seed`, `Enable HighRes Fix`,
`HighRes Scale`, `Prompt Replace 1`, A1111's `Var. seed` or `Prompt S/R`. Each peer name maps to the
gridgen param that does the same job, with a translation of its value where the two spell it
differently (IG's hires fix switch and hires upscaler become one `upscaler` value). A name whose
gridgen param no backend registers resolves to that param's name, so the loader warns once and
ignores it; when a backend adds the param (eta, var_seed, tiling, ...) the name simply starts working.

Names compare as Infinity Grid compares them: letters only, case ignored (`Prompt Replace 2` is
`promptreplace`, `[DynamicThreshold] Enable` is `dynamicthresholdenable`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gridgen import params as P


def _enable_hires(value: Any) -> str:
    switch = str(value).strip().lower()
    if switch in ("true", "yes", "on", "1"):
        return "latent"  # A1111's hires fix upscales with Latent unless told otherwise
    if switch in ("false", "no", "off", "0"):
        return "none"
    raise ValueError(f"Enable HighRes Fix must be true or false, got {value!r}")


def _hires_upscaler(value: Any) -> str:
    text = str(value).strip()
    if text.lower().startswith("latent") or text.lower() in ("none", "") or ":" in text:
        return text
    return f"hires:{text}"


def _vae_word(value: Any) -> Any:
    # A1111's VAE `None` (no separate VAE) and `Automatic` both leave the checkpoint's own: gridgen's `auto`.
    return "auto" if str(value).strip().lower() in ("none", "automatic") else value


# Values the peers spell their way for a param gridgen also has under the same name.
PEER_VALUES: dict[str, Callable[[Any], Any]] = {"vae": _vae_word}


@dataclass(frozen=True)
class PeerName:
    param: str  # the gridgen param it sets
    translate: Callable[[Any], Any] | None = None  # the peer's spelling of a value -> gridgen's
    note: str = ""  # why it is ignored, where no backend has `param`


def _names(param: str, *spellings: str, **options: Any) -> dict[str, PeerName]:
    return {spelling: PeerName(param, **options) for spelling in spellings}


_ONE_IMAGE = "gridgen renders one image per cell, so there is no batch index to pick"
PEER_NAMES: dict[str, PeerName] = {
    **_names("denoise", "Denoising"),
    **_names("model", "Checkpoint name"),
    **_names("prompt_replace", "Prompt Replace", "Prompt S/R"),
    **_names("var_seed", "Var Seed", "Var. seed", "Variation seed"),
    **_names("var_seed_strength", "Var Strength", "Var. strength", "Variation seed strength"),
    **_names("eta", "ETA"),
    **_names("eta_noise_seed_delta", "ETA Noise Seed Delta", "ENSD"),
    **_names("s_churn", "Sigma Churn"),
    **_names("s_tmin", "Sigma TMin", "Sigma min"),
    **_names("s_tmax", "Sigma TMax", "Sigma max"),
    **_names("s_noise", "Sigma Noise"),
    **_names("tiling", "Tiling"),
    **_names("styles", "Styles"),
    **_names("restore_faces", "Restore Faces", "Face restore"),
    **_names("codeformer_weight", "CodeFormer Weight"),
    **_names("image_mask_weight", "Image Mask Weight", "Cond. Image Mask Weight"),
    **_names("token_merging_ratio", "Token merging ratio"),
    **_names("hypernetwork_strength", "Hypernet str.", "Hypernetwork strength"),
    **_names("upscaler", "Enable HighRes Fix", "Enable hr", "Hires fix", translate=_enable_hires),
    **_names("upscaler", "HighRes Upscaler", "Hires upscaler", translate=_hires_upscaler),
    **_names("upscale_by", "HighRes Scale", "Hires upscale", "Hr scale"),
    **_names("hires_steps", "HighRes Steps", "Hires steps"),
    **_names("hires_denoise", "HighRes Denoising Strength", "Hires denoising"),
    **_names("upscale_width", "HighRes Resize Width", "HighRes Upscale to Width", "Hires resize x"),
    **_names("upscale_height", "HighRes Resize Height", "HighRes Upscale to Height", "Hires resize y"),
    **_names("hires_sampler", "HighRes Sampler", "Hires sampler"),
    **_names("hires_checkpoint", "HighRes Checkpoint", "Hires checkpoint"),
    **_names("result_index", "Use Result Index", note=_ONE_IMAGE),
    **_names("initial_noise_multiplier", "Initial noise multiplier"),
    **_names("extra_noise", "Extra noise"),
    **_names("uni_pc_order", "UniPC Order"),
    **_names("refiner_checkpoint", "Refiner checkpoint"),
    **_names("refiner_switch_at", "Refiner switch at"),
    **_names("prompt_order", "Prompt order"),
}
PEER_NAMES = {re.sub(r"[^a-z]", "", name.lower()): peer for name, peer in PEER_NAMES.items()}
# Infinity Grid's extension params: the extensions themselves are not part of gridgen.
_EXTENSION_PREFIXES = {"dynamicthreshold": "Dynamic Thresholding", "controlnet": "ControlNet"}


@dataclass(frozen=True)
class Resolved:
    """What a param name in a spec means: a registry param, or a known name no backend here implements."""

    name: str  # the canonical gridgen name
    param: P.Param | None  # None: known, not supported
    translate: Callable[[Any], Any] | None = None
    note: str = ""

    def value(self, raw: Any) -> Any:
        """`raw` in gridgen's spelling; raises ValueError where the peer's value makes no sense."""
        return self.translate(raw) if self.translate is not None and raw is not None else raw


def resolve(registry: P.Registry, name: Any) -> Resolved | None:
    """Resolve a param name from a spec: the registry first, then the peers' names; None when unknown."""
    param = registry.lookup(name)
    if param is not None:
        return Resolved(param.name, param, PEER_VALUES.get(param.name))
    letters = re.sub(r"[^a-z]", "", str(name).lower())
    peer = PEER_NAMES.get(letters)
    if peer is not None:
        target = registry.params.get(peer.param)
        return Resolved(peer.param, target, peer.translate if target is not None else None, peer.note)
    key = P.normalize_key(name)
    if key in P.KNOWN_UNSUPPORTED:
        return Resolved(P.KNOWN_UNSUPPORTED[key], None)
    for prefix, extension in _EXTENSION_PREFIXES.items():
        if letters.startswith(prefix):
            return Resolved(str(name).strip(), None, note=f"a parameter of the {extension} WebUI extension")
    return None
