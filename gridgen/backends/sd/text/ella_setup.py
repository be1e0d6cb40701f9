"""What a cell with ELLA on needs beyond its Stable Diffusion model, from validation to conditioning.

It finds the ELLA checkpoint and the T5 folder (explicit path, spec folder, models folder, then the
local Hugging Face cache; never the network), checks them against each other and against the model
from config files and safetensors headers alone, gives the keys that keep ELLA cells apart, keeps
the loaded connector and T5 encoder by path, and builds a batch's per-step conditioning.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gridgen.backends.base import ParamProblem
from gridgen.backends.sd.models.locate import _from_hub_cache, _hub_cache_dir
from gridgen.errors import ModelError

if TYPE_CHECKING:
    import torch

    from gridgen.backends.sd.text.clip import Conditioning
    from gridgen.backends.sd.text.ella import EllaModel
    from gridgen.backends.sd.text.ella_context import ContextFn
    from gridgen.backends.sd.text.t5 import T5Features

    Masks = tuple[torch.Tensor | None, torch.Tensor | None]

ELLA_FILE = "ella-sd1.5-tsc-t5xl.safetensors"
ELLA_HUB_REPO = "QQGYLab/ELLA"
ELLA_SUBFOLDER = "ELLA"  # under the models folder, next to Stable-diffusion/ and VAE/
T5_SUBFOLDER = "T5"
# Params that mean nothing while ELLA is off: cells differing only in them share a base image.
ELLA_ONLY_PARAMS = ("ella_text_encoder", "token_length", "ella_mode")
Resolve = Callable[[Callable[[str, Path, Path | None], Path], str], Path]


def enabled(params: dict[str, Any]) -> bool:
    return str(params.get("ella", "off")) != "off"


def stage_params(params: dict[str, Any]) -> dict[str, Any]:
    """`params` without the ELLA settings that have no effect on this cell."""
    return params if enabled(params) else {key: value for key, value in params.items()
                                           if key not in ELLA_ONLY_PARAMS}


def _candidates(value: str, spec_dir: Path, models_dir: Path | None, subfolder: str) -> list[Path]:
    raw = Path(value).expanduser()
    if raw.is_absolute():
        return [raw]
    roots = [spec_dir, *([models_dir, models_dir / subfolder] if models_dir else [])]
    return [root / raw for root in roots]


def resolve_checkpoint(value: str, spec_dir: Path, models_dir: Path | None) -> Path:
    """The ELLA checkpoint file (or save_pretrained folder) `value` names; `on` looks for the official file."""
    from gridgen.backends.sd.text.ella import EllaModel

    wanted = ELLA_FILE if value == "on" else value
    candidates = _candidates(wanted, spec_dir, models_dir, ELLA_SUBFOLDER)
    for candidate in candidates:
        if candidate.is_file() or (candidate / EllaModel.config_name).is_file():
            return candidate.resolve()
        if candidate.is_dir():
            raise ModelError(f"ella {value!r}: {candidate} is a folder without {EllaModel.config_name}; give the "
                             f"path of {ELLA_FILE} itself (or of a folder written by EllaModel.save_pretrained)")
    looked = [str(c) for c in candidates]
    if value == "on":
        cached = _from_hub_cache(ELLA_HUB_REPO, ELLA_FILE)
        if cached is not None:
            return cached / ELLA_FILE
        looked.append(f"the Hugging Face cache ({_hub_cache_dir()}, {ELLA_HUB_REPO})")
    where = models_dir / ELLA_SUBFOLDER if models_dir else "your models folder's ELLA/ subfolder"
    raise ModelError(f"ella {value!r}: no ELLA checkpoint found; looked for {', '.join(looked)}. gridgen never "
                     f"downloads: get {ELLA_FILE} from https://huggingface.co/{ELLA_HUB_REPO} into {where}, "
                     f"or set ella to the file's path")


def resolve_text_encoder(value: str, spec_dir: Path, models_dir: Path | None) -> Path:
    """The T5 folder `value` names: a path, or a Hugging Face id already in the local cache."""
    candidates = _candidates(value, spec_dir, models_dir, T5_SUBFOLDER)
    for candidate in candidates:
        if (candidate / "config.json").is_file():
            return candidate.resolve()
        if candidate.exists():
            raise ModelError(f"ella_text_encoder {value!r}: {candidate} is not a transformers T5 folder (no "
                             f"config.json); point ella_text_encoder at the folder of google/flan-t5-xl")
    looked = [str(c) for c in candidates]
    if "/" in value and not Path(value).expanduser().is_absolute():
        cached = _from_hub_cache(value, "config.json")
        if cached is not None:
            return cached
        looked.append(f"the Hugging Face cache ({_hub_cache_dir()})")
    raise ModelError(f"ella_text_encoder {value!r}: T5 folder not found; looked for {', '.join(looked)}. ELLA "
                     f"reads the T5 encoder it was trained with: download google/flan-t5-xl (for example "
                     f"`hf download google/flan-t5-xl`) and set ella_text_encoder to its id or folder")


@lru_cache(maxsize=16)
def _checked(path: Path) -> dict[str, Any]:
    from gridgen.backends.sd.text.ella import check_checkpoint

    return check_checkpoint(path)


@lru_cache(maxsize=16)
def _t5_width(folder: Path) -> int:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {folder / 'config.json'}: {exc}; re-download the T5 folder") from exc
    if "d_model" not in config:
        raise ModelError(f"ella_text_encoder {folder} is not a T5 model (its config.json has no d_model); "
                         f"use google/flan-t5-xl")
    return int(config["d_model"])


def _cross_attention_width(model: Path) -> int | None:
    try:
        return int(json.loads((model / "unet" / "config.json").read_text(encoding="utf-8"))["cross_attention_dim"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # the model's own validation reports an unreadable folder


def check_cell(params: dict[str, Any], model: Path | None, resolve: Resolve) -> list[ParamProblem]:
    """Problems with a cell's ELLA settings, from config files and safetensors headers alone."""
    if not enabled(params):
        return []
    problems: list[ParamProblem] = []
    config = width = None
    try:
        checkpoint = resolve(resolve_checkpoint, str(params["ella"]))
        config = _checked(checkpoint)
    except ModelError as exc:
        problems.append(ParamProblem("ella", str(exc)))
    try:
        width = _t5_width(resolve(resolve_text_encoder, str(params["ella_text_encoder"])))
    except ModelError as exc:
        problems.append(ParamProblem("ella_text_encoder", str(exc)))
    if config and width and width != config["input_dim"]:
        problems.append(ParamProblem("ella_text_encoder", f"the T5 encoder makes {width}-wide features but the "
                                     f"ELLA checkpoint reads {config['input_dim']}-wide ones; use the T5 it was "
                                     f"trained with (google/flan-t5-xl for ELLA-SD1.5)"))
    context = _cross_attention_width(model) if model else None
    if config and context and context != config["width"]:
        problems.append(ParamProblem("ella", f"ELLA works with Stable Diffusion 1.5 models only: its connector "
                                     f"makes {config['width']}-wide context, but model {model.name} has a UNet "
                                     f"with {context}-wide cross-attention (SD 1.x uses 768, SD 2.x 1024); use an "
                                     f"SD 1.5 model or set ella: off"))
    return problems


def batch_part(params: dict[str, Any], resolve: Resolve) -> Hashable:
    """What cells must share to denoise together: the context's kind (64, 77 or 141 tokens) and its sources."""
    if not enabled(params):
        return "clip"
    files = []
    for resolver, name in ((resolve_checkpoint, "ella"), (resolve_text_encoder, "ella_text_encoder")):
        try:
            files.append(str(resolve(resolver, str(params[name]))))
        except ModelError:
            files.append(str(params[name]))  # validation reports it; planning goes on
    return str(params["ella_mode"]), *files


def metadata(params: dict[str, Any], resolve: Resolve) -> dict[str, Any]:
    """The ELLA facts each image records: its param values and the files they resolved to."""
    if not enabled(params):
        return {"ella": "off"}
    return {"ella": str(params["ella"]), "ella_checkpoint": str(resolve(resolve_checkpoint, str(params["ella"]))),
            "ella_text_encoder": str(resolve(resolve_text_encoder, str(params["ella_text_encoder"]))),
            "token_length": str(params["token_length"]), "ella_mode": str(params["ella_mode"])}


class EllaRuntime:
    """The loaded ELLA connector and T5 encoder: one of each, kept by path across batches until the backend closes."""

    def __init__(self):
        self._connector: tuple[tuple, EllaModel] | None = None
        self._text: tuple[tuple, T5Features] | None = None

    def connector(self, path: Path, device: torch.device, dtype: torch.dtype) -> EllaModel:
        from gridgen.backends.sd.text.ella import load_ella

        key = (path, device, dtype)
        if self._connector is None or self._connector[0] != key:
            self._connector = None  # free the old one before loading the next
            self._connector = (key, load_ella(path, device, dtype))
        return self._connector[1]

    def text(self, folder: Path, device: torch.device) -> T5Features:
        from gridgen.backends.sd.text.t5 import T5Features, load_t5

        key = (folder, device)
        if self._text is None or self._text[0] != key:
            self._text = None
            self._text = (key, T5Features(*load_t5(folder, device)))
        return self._text[1]

    def load(self, params: dict[str, Any], resolve: Resolve, device: torch.device,
             dtype: torch.dtype) -> tuple[EllaModel, T5Features]:
        """The connector and T5 encoder a cell names, loaded unless they already are."""
        return (self.connector(resolve(resolve_checkpoint, str(params["ella"])), device, dtype),
                self.text(resolve(resolve_text_encoder, str(params["ella_text_encoder"])), device))

    def conditioning(self, batch: Sequence[dict[str, Any]], resolve: Resolve, device: torch.device,
                     dtype: torch.dtype, clip: Conditioning | None) -> tuple[ContextFn, ContextFn, Masks]:
        """Per-step cond and uncond contexts of a batch that shares ELLA mode and files (its batch key),
        and their cross-attention masks; `clip` is the batch's CLIP conditioning, used in ELLA+CLIP mode."""
        import torch

        from gridgen.backends.sd.text.ella_context import EllaContext

        first = batch[0]
        ella, features = self.load(first, resolve, device, dtype)
        lengths = [str(p["token_length"]) for p in batch]
        # The unconditional half reads the negative prompt's T5 features through the same connector.
        rows = features([(str(p["prompt"]), n) for p, n in zip(batch, lengths, strict=True)]
                        + [(str(p["negative_prompt"]), n) for p, n in zip(batch, lengths, strict=True)])
        clip_rows, masks = None, (None, None)
        if str(first["ella_mode"]) == "ella+clip":
            clip_rows = torch.cat([clip.cond, clip.uncond])
            if clip.cond_mask is not None:  # CLIP rows padded with empty chunks: ELLA's tokens are all real
                real = torch.ones((len(batch), ella.config.num_latents), device=clip.cond_mask.device)
                masks = (torch.cat([real, clip.cond_mask], 1), torch.cat([real, clip.uncond_mask], 1))
        context = EllaContext(ella, rows, clip_rows)
        return context.rows(0, len(batch)), context.rows(len(batch), 2 * len(batch)), masks

    def stats(self) -> list[str]:
        if self._text is None:
            return []
        return [f"T5 features: {self._text[1].cache.hits} cached, {self._text[1].cache.misses} encoded"]

    def close(self) -> None:
        self._connector = None
        self._text = None
