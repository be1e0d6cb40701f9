"""Infinity Grid's own parser as a test oracle, imported in place from ../shared/oracles/infinity-grid/.

Nothing of it is copied here: `gridgencore.py` and `infinity_grid.py` are imported from the shared
folder with stand-ins for what they import from the WebUI (gradio, `modules.*`), GitPython and the
YAML include extension, which the parser never uses on these inputs. `infinity_grid.try_init()` then
registers the WebUI's parameter modes exactly as the extension does. `compare` puts an Infinity Grid
parse and a gridgen load side by side in one plain form so a test can assert they agree.
"""

from __future__ import annotations

import contextlib
import io
import math
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import yaml

from gridgen.backends.sd.denoise.samplers import SAMPLERS

ORACLE = Path(__file__).resolve().parents[1].parent / "shared" / "oracles" / "infinity-grid"

# Infinity Grid's parameter (its letters-only name) -> the gridgen param the same value lands in.
PARAM_NAMES = {
    "seed": "seed", "steps": "steps", "cfgscale": "cfg_scale", "prompt": "prompt", "negativeprompt": "negative_prompt",
    "promptreplace": "prompt_replace", "sampler": "sampler", "width": "width", "height": "height",
    "outwidth": "out_width", "outheight": "out_height", "clipskip": "clip_skip", "denoising": "denoise",
    "highresscale": "upscale_by", "highressteps": "hires_steps", "imagecfgscale": "image_cfg_scale",
}


def _webui_stand_ins() -> dict[str, types.ModuleType]:
    """Modules the extension imports from the WebUI, holding only what registering its modes reads."""
    made: dict[str, types.ModuleType] = {}

    def module(name: str, **attributes: Any) -> types.ModuleType:
        made[name] = types.ModuleType(name)
        made[name].__dict__.update(attributes)
        return made[name]

    class Script:  # the base class `infinity_grid.Script` derives from
        pass

    anything = types.SimpleNamespace
    module("gradio")
    module("git", Repo=None)
    module("yaml_include", Constructor=lambda **_: None)
    parts = {
        "images": module("modules.images"),
        "shared": module("modules.shared", opts=anything(data={}), state=anything(), face_restorers=[],
                         sd_upscalers=[], latent_upscale_modes={}, prompt_styles=anything(styles={})),
        "sd_models": module("modules.sd_models", checkpoints_list={}),
        "sd_vae": module("modules.sd_vae", vae_dict={}),
        "sd_samplers": module("modules.sd_samplers", all_samplers_map={s.name: s for s in SAMPLERS}),
        "scripts": module("modules.scripts", Script=Script, scripts_data=[], basedir=lambda: str(ORACLE)),
        "processing": module("modules.processing", process_images=None, Processed=None),
        "ui_components": module("modules.ui_components"),
    }
    module("modules", **parts)
    return made


@pytest.fixture(scope="session")
def infinity_grid():
    """The `gridgencore` module with the extension's modes registered; skips where the oracle is absent."""
    if not (ORACLE / "gridgencore.py").is_file():
        pytest.skip(f"Infinity Grid's parser is not at {ORACLE} (see ORIGIN.md there); the differential tests "
                    "need it in place")
    saved_path, saved = list(sys.path), {name: sys.modules.get(name) for name in _webui_stand_ins()}
    sys.modules.update(_webui_stand_ins())
    sys.path.insert(0, str(ORACLE))
    try:
        import gridgencore
        import infinity_grid

        infinity_grid.try_init()
        yield gridgencore
    finally:
        sys.path[:] = saved_path
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous
        for name in ("gridgencore", "infinity_grid"):
            sys.modules.pop(name, None)


def parse_with_infinity_grid(core, text: str) -> Any:
    """Infinity Grid's `GridFileHelper` for a spec's text, or the RuntimeError it raises."""
    content = yaml.load(text, Loader=core.GridYamlLoader)
    with contextlib.redirect_stdout(io.StringIO()):
        return core.GridFileHelper().parse_yaml(content, "spec.yml")


def _plain(param: str, value: Any) -> Any:
    if param == "prompt_replace":  # a list of rules: gridgen's accumulates, Infinity Grid numbers them
        rules = value if isinstance(value, list) else [value]
        return [f"{find.strip()}={replace.strip()}" for find, _, replace in (str(r).partition("=") for r in rules)]
    if param == "sampler":
        return str(value).lower()
    if isinstance(value, float | int) and not isinstance(value, bool):
        return round(float(value), 9)
    return value


def _plain_params(params: dict[str, Any], from_peer: bool) -> dict[str, Any]:
    plain = {}
    for name, value in params.items():
        canonical = PARAM_NAMES["".join(c for c in name.lower() if c.isalpha())] if from_peer else name
        value = _plain(canonical, value)
        plain[canonical] = plain.get(canonical, []) + value if canonical == "prompt_replace" else value
    return plain


def _plain_title(title: Any) -> Any:
    text = str(title)
    try:
        number = float(text)
    except ValueError:
        return text
    return round(number, 9) if math.isfinite(number) else text


def peer_form(grid) -> dict[str, Any]:
    """What Infinity Grid expanded, in the plain form `gridgen_form` also produces."""
    axes = []
    for axis in grid.axes:
        keys = [str(value.key) for value in axis.values]
        default = keys.index(str(axis.default)) if axis.default is not None and str(axis.default) in keys else None
        axes.append({"title": str(axis.title), "default": default, "values": [
            {"title": _plain_title(v.title), "params": _plain_params(v.params or {}, True), "skip": v.skip,
             "show": v.show} for v in axis.values]})
    return {"params": _plain_params(grid.params or {}, True), "axes": axes}


def gridgen_form(spec) -> dict[str, Any]:
    axes = []
    for axis in spec.axes:
        ids = [value.id for value in axis.values]
        axes.append({"title": axis.title, "default": ids.index(axis.default) if axis.default else None, "values": [
            {"title": _plain_title(v.title), "params": _plain_params(v.params, False), "skip": v.skip,
             "show": v.show} for v in axis.values]})
    return {"params": _plain_params(spec.base_params, False), "axes": axes}


def cell_counts(form: dict[str, Any]) -> tuple[int, int]:
    """All cells, and those no skipped value touches."""
    return (math.prod(len(a["values"]) for a in form["axes"]),
            math.prod(sum(not v["skip"] for v in a["values"]) for a in form["axes"]))
