"""What each image file says about itself: A1111-style `parameters` text plus gridgen's JSON.

PNG files get two text chunks (`parameters`, `gridgen`); JPEG and WebP files get the same two in
EXIF (UserComment, as A1111 writes it, and ImageDescription), so any single file is self-describing.
An image is shared beyond the machine that made it, so the paths a backend reports are recorded
relative to the spec's folder, as a Hugging Face id, or by name, never as absolute paths.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

from gridgen.backends.sd.denoise.controls.options import infotext_fields
from gridgen.backends.sd.denoise.samplers import find_sampler
from gridgen.backends.sd.hdr.options import infotext_fields as hdr_fields

_EXIF_IFD = 0x8769
_USER_COMMENT = 0x9286
_IMAGE_DESCRIPTION = 0x010E


def a1111_parameters(params: dict[str, Any], metadata: dict[str, Any] | None = None) -> str:
    """The `parameters` text A1111 writes, so tools that read A1111 images read ours."""
    metadata = metadata or {}
    width = metadata.get("width") or params.get("width")
    height = metadata.get("height") or params.get("height")
    fields = [
        ("Steps", params.get("steps")),
        ("Sampler", params.get("sampler")),
        ("Schedule type", params.get("schedule") if params.get("schedule") not in (None, "automatic") else None),
        ("CFG scale", params.get("cfg_scale")),
        ("Image CFG scale", metadata.get("image_cfg_scale")),  # instruct-pix2pix's, as its backend read it
        ("Seed", params.get("seed")),
        *_variation_fields(params),
        ("Size", f"{width}x{height}" if width and height else None),
        ("Model", params.get("model")),
        ("VAE", params.get("vae") if params.get("vae") not in (None, "auto") else None),
        ("Clip skip", params.get("clip_skip") if (params.get("clip_skip") or 1) > 1 else None),
        # A1111's sampler options under the names its PNG Info reads back.
        (_eta_field(params), params.get("eta")),
        ("ENSD", params.get("eta_noise_seed_delta") or None),
        ("Sigma churn", params.get("s_churn")),
        ("Sigma tmin", params.get("s_tmin")),
        ("Sigma tmax", params.get("s_tmax")),
        ("Sigma noise", params.get("s_noise")),
        ("Tiling", True if params.get("tiling") else None),
        ("Conditional mask weight", None if params.get("image_mask_weight", 1) == 1 else params["image_mask_weight"]),
        ("Token merging ratio", params.get("token_merging_ratio") or None),
        *infotext_fields(params),  # the latent controls, under their extensions' names
        *hdr_fields(params),
    ]
    # A backend that rewrote the prompts (wildcards) reports the text it rendered.
    prompt, negative = (metadata.get(name, params.get(name)) for name in ("prompt", "negative_prompt"))
    lines = [prompt or ""]
    if negative:
        lines.append(f"Negative prompt: {negative}")
    lines.append(", ".join(f"{name}: {_format(value)}" for name, value in fields if value is not None))
    return "\n".join(lines)


def portable_paths(value: Any, roots: list[Path]) -> Any:
    """`value` (a backend's metadata) with every absolute path made relative to the first of `roots` that
    holds it, else the Hugging Face id of a hub cache folder, else the file or folder name."""
    if isinstance(value, dict):
        return {key: portable_paths(item, roots) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [portable_paths(item, roots) for item in value]
    if not isinstance(value, str) or not os.path.isabs(value) or "\n" in value:
        return value
    for path in (Path(value), Path(value).resolve()):
        for root in roots:
            if path.is_relative_to(root):
                return path.relative_to(root).as_posix() or "."
    path = Path(value)
    hub = next((part for part in path.parts if part.startswith("models--")), None)
    if hub is not None:
        return hub.removeprefix("models--").replace("--", "/")
    return path.name


def _variation_fields(params: dict[str, Any]) -> list[tuple[str, Any]]:
    """A1111's variation-seed fields, written only when they change the image, as A1111 writes them."""
    fields = []
    if params.get("var_seed") is not None and params.get("var_seed_strength"):
        fields += [("Variation seed", params["var_seed"]), ("Variation seed strength", params["var_seed_strength"])]
    resize = params.get("seed_resize_from_w") or 0, params.get("seed_resize_from_h") or 0
    if min(resize) > 0:
        fields.append(("Seed resize from", f"{resize[0]}x{resize[1]}"))
    return fields


def _eta_field(params: dict[str, Any]) -> str:
    """A1111 writes the ancestral samplers' eta as "Eta" and DDIM's (its timestep samplers') as "Eta DDIM"."""
    sampler = find_sampler(str(params.get("sampler") or ""))
    return "Eta" if sampler is not None and sampler.ancestral else "Eta DDIM"


def _format(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def encode_image(image: Image.Image, fmt: str, parameters: str, record: dict[str, Any]) -> bytes:
    """The bytes of `image` in `fmt` (png, jpg, webp) with both metadata blocks embedded."""
    gridgen_json = json.dumps(record, sort_keys=True, ensure_ascii=True)
    buffer = io.BytesIO()
    if fmt == "png":
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", parameters)
        info.add_text("gridgen", gridgen_json)
        image.save(buffer, format="PNG", pnginfo=info, compress_level=4)
        return buffer.getvalue()
    exif = Image.Exif()
    exif[_IMAGE_DESCRIPTION] = gridgen_json
    exif.get_ifd(_EXIF_IFD)[_USER_COMMENT] = b"UNICODE\0" + parameters.encode("utf-16-be")
    if fmt == "jpg":
        image.convert("RGB").save(buffer, format="JPEG", quality=92, exif=exif)
    elif fmt == "webp":
        image.save(buffer, format="WEBP", quality=92, exif=exif)
    else:
        raise ValueError(f"unknown image format {fmt!r}")
    return buffer.getvalue()


def read_metadata(path) -> dict[str, Any]:
    """`{"parameters": str, "gridgen": dict}` from an image gridgen wrote (empty keys when absent)."""
    with Image.open(path) as image:
        if image.format == "PNG":
            text = image.text
            return {"parameters": text.get("parameters", ""), "gridgen": json.loads(text.get("gridgen", "{}"))}
        exif = image.getexif()
        raw = exif.get_ifd(_EXIF_IFD).get(_USER_COMMENT, b"")
        parameters = raw[8:].decode("utf-16-be") if isinstance(raw, bytes) and raw.startswith(b"UNICODE") else ""
        return {"parameters": parameters, "gridgen": json.loads(exif.get(_IMAGE_DESCRIPTION) or "{}")}
