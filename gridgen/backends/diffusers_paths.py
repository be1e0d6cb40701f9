"""Where the diffusers backend finds the file or folder a path- or model-kind param names: its `locate`,
answered by the same resolvers `validate` and `render` use, so there is one search order per param.
"""

from __future__ import annotations

from pathlib import Path

from gridgen.backends.base import BackendContext
from gridgen.backends.sd.adapters import embeddings, lora
from gridgen.backends.sd.images import outpaint
from gridgen.backends.sd.images.inputs import ImageInputs
from gridgen.backends.sd.kinds.depth import resolve_depth_model
from gridgen.backends.sd.models.locate import resolve_model, resolve_vae
from gridgen.backends.sd.text.ella_setup import resolve_text_encoder
from gridgen.errors import GridError

_IMAGES = ("init_image", "mask", "depth_map", "region_mask")


def _resolve_sam(value: str, spec_dir: Path, models_dir: Path | None) -> Path:
    from gridgen.backends.sd.stages.segment import resolve_sam  # segment imports torch, which validation must not

    return resolve_sam(value, spec_dir, models_dir)


_MODELS = {"model": resolve_model, "vae": resolve_vae, "sam_model": _resolve_sam,
           "ella_text_encoder": resolve_text_encoder}


def locate(context: BackendContext, param: str, value: str) -> Path | None:
    """The backend's `locate` (see gridgen.backends.base.Backend); raises GridError when nothing usable is found."""
    spec_dir, models_dir = Path(context.spec_dir), context.models_dir
    if param in _MODELS:
        return _MODELS[param](value, spec_dir, models_dir)
    if param == "depth_model":
        return resolve_depth_model(value, spec_dir, models_dir).weights
    if param == "lora":
        return lora.resolve(lora.parse(value).name, spec_dir, models_dir)
    if param == "embedding":
        return embeddings.resolve(value, spec_dir, embeddings.folders(spec_dir, models_dir))
    if param == "outpaint_fill":  # a LaMa file, `lama:<file>`; the other fills read none
        try:
            name = outpaint.lama_file({"outpaint_fill": value})
        except ValueError as exc:
            raise GridError(str(exc)) from None
        return outpaint.resolve_lama_fill(name, spec_dir, models_dir) if name else None
    if param in _IMAGES:
        path = ImageInputs(spec_dir).path(value)
        if not path.is_file():
            raise GridError(f"{param} {value!r}: no such file ({path}); image paths are relative to the spec file")
        return path
    return None
