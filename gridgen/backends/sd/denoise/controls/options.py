"""The latent controls' choices, their A1111 extensions' spellings and the `parameters` text they write.

Imports no torch: validation and the PNG metadata read these tables.
"""

from __future__ import annotations

from typing import Any

# sd-dynamic-thresholding's schedules for the mimic and CFG scales, over the run's steps.
SCHEDULES = ("Constant", "Linear Down", "Cosine Down", "Half Cosine Down", "Linear Up", "Cosine Up",
             "Half Cosine Up", "Power Up", "Power Down", "Linear Repeating", "Cosine Repeating", "Sawtooth")
# The schedules whose shape `sched_val` sets (a power, or a number of repeats).
SHAPED_SCHEDULES = frozenset({"Power Up", "Power Down", "Linear Repeating", "Cosine Repeating", "Sawtooth"})
STARTPOINTS = ("MEAN", "ZERO")
VARIABILITIES = ("AD", "STD")
# Latent mirroring's modes and styles; the extension's UI also stores them by index.
MIRROR_MODES = ("None", "Alternate Steps", "Blend Average")
MIRROR_STYLES = ("Vertical Mirroring", "Horizontal Mirroring", "Horizontal+Vertical Mirroring",
                 "90 Degree Rotation", "180 Degree Rotation")
# VectorscopeCC's sources of the change (its "noise settings") and its schedules of strength over the steps.
CC_METHODS = ("Straight", "Straight Abs.", "Cross", "Cross Abs.", "Ones", "N.Random", "U.Random", "Multi-Res",
              "Multi-Res Abs.")
CC_SCALINGS = ("Flat", "Cos", "Sin", "1 - Cos", "1 - Sin")
_MIRROR_STYLE_WORDS = {"vertical": 0, "horizontal": 1, "both": 2, "horizontalvertical": 2, "verticalhorizontal": 2,
                       "90": 3, "rotate90": 3, "rotation90": 3, "180": 4, "rotate180": 4, "rotation180": 4}
_MIRROR_MODE_WORDS = {"off": 0, "none": 0, "alternate": 1, "blend": 2, "average": 2}


def _key(text: Any) -> str:
    return "".join(ch for ch in str(text).lower() if ch.isalnum() or ch == "+").replace("+", "")


def _pick(text: Any, names: tuple[str, ...], words: dict[str, int] | None = None) -> str | None:
    key = _key(text)
    by_key = {_key(name): name for name in names}
    if key in by_key:
        return by_key[key]
    if key.isdigit() and int(key) < len(names) and words is not None:  # the extension's index
        return names[int(key)]
    if words and key in words:
        return names[words[key]]
    return None


def choose_schedule(text: str) -> str | None:
    return _pick(text, SCHEDULES)


def choose_startpoint(text: str) -> str | None:
    return _pick(text, STARTPOINTS)


def choose_variability(text: str) -> str | None:
    return _pick(text, VARIABILITIES, {"absolutedeviation": 0, "standarddeviation": 1})


def choose_mirror_mode(text: str) -> str | None:
    return _pick(text, MIRROR_MODES, _MIRROR_MODE_WORDS)


def choose_mirror_style(text: str) -> str | None:
    return _pick(text, MIRROR_STYLES, _MIRROR_STYLE_WORDS)


def choose_cc_method(text: str) -> str | None:
    return _pick(text, CC_METHODS)


def choose_cc_scaling(text: str) -> str | None:
    return _pick(text, CC_SCALINGS)


CC_SHIFTS = ("cc_brightness", "cc_contrast", "cc_r", "cc_g", "cc_b")
# A batch row's HDR bracket exposure (`gridgen.backends.sd.hdr`): a brightness the colour grading adds to its latents.
EXPOSURE = "hdr_exposure"


def grading_on(params: dict[str, Any]) -> bool:
    return any(float(params.get(name) or 0) for name in CC_SHIFTS) or float(params.get("cc_saturation", 1)) != 1


def alt_on(params: dict[str, Any]) -> bool:
    """Whether the cell's colour grading acts on the latents themselves (the extension's "Alt.")."""
    return bool(params.get("cc_alt"))


def dynamic_thresholding_on(params: dict[str, Any]) -> bool:
    return float(params.get("mimic_scale") or 0) > 0


def mirroring_on(params: dict[str, Any]) -> bool:
    return params.get("mirror_mode", "None") != "None" and float(params.get("mirror_max_step", 0)) > 0


def infotext_fields(params: dict[str, Any]) -> list[tuple[str, Any]]:
    """The `parameters` fields the controls' extensions write, for the controls a cell turns on."""
    fields: list[tuple[str, Any]] = []
    if float(params.get("cfg_rescale") or 0):
        fields.append(("CFG Rescale phi", params["cfg_rescale"]))
    if dynamic_thresholding_on(params):
        fields += [("Dynamic thresholding enabled", True), ("Mimic scale", params["mimic_scale"]),
                   ("Separate Feature Channels", params["separate_feature_channels"]),
                   ("Scaling Startpoint", params["scaling_startpoint"]),
                   ("Variability Measure", params["variability_measure"]),
                   ("Interpolate Phi", params["interpolate_phi"]),
                   ("Threshold percentile", params["threshold_percentile"]),
                   ("Mimic mode", params["mimic_mode"]), ("Mimic scale minimum", params["mimic_scale_min"]),
                   ("CFG mode", params["cfg_mode"]), ("CFG scale minimum", params["cfg_scale_min"])]
        if {params["mimic_mode"], params["cfg_mode"]} & SHAPED_SCHEDULES:
            fields.append(("Sched Val", params["sched_val"]))
    if mirroring_on(params):
        fields += [("Mirror Mode", params["mirror_mode"]), ("Mirror Style", params["mirror_style"]),
                   ("Mirroring Max Step Fraction", params["mirror_max_step"])]
    if grading_on(params):
        fields += [("Vec CC Enabled", True), ("Vec CC Alt", alt_on(params)),
                   ("Vec CC Brightness", params["cc_brightness"]),
                   ("Vec CC Contrast", params["cc_contrast"]), ("Vec CC Saturation", params["cc_saturation"]),
                   ("Vec CC R", params["cc_r"]), ("Vec CC G", params["cc_g"]), ("Vec CC B", params["cc_b"]),
                   ("Vec CC Noise", params["cc_method"]), ("Vec CC Scaling", params["cc_scaling"])]
    if int(params.get("antiburn_steps") or 1) > 1:
        fields.append(("Anti Burn", params["antiburn_steps"]))
    return fields


def adjusts_prediction(params: dict[str, Any]) -> bool:
    """Whether the cell rewrites its guided prediction (CFG rescale, dynamic thresholding, colour grading of x0,
    or of the latents by x0: Alt. with a Cross source)."""
    grades_x0 = grading_on(params) and (not alt_on(params) or str(params.get("cc_method", "")).startswith("Cross"))
    return float(params.get("cfg_rescale") or 0) > 0 or dynamic_thresholding_on(params) or grades_x0


def problems(params: dict[str, Any], size: tuple[int, int], kind: str) -> list[tuple[str, str]]:
    """(param, message) for control values that cannot apply to this cell."""
    found = []
    if mirroring_on(params) and params["mirror_style"] == "90 Degree Rotation" and size[0] != size[1]:
        found.append(("mirror_style", f"90 Degree Rotation turns the latents a quarter turn, so it needs a square "
                                      f"image, not {size[0]}x{size[1]}: set width equal to height or pick another "
                                      f"mirror_style"))
    if kind == "instruct-pix2pix":
        for name, on in (("cfg_rescale", float(params.get("cfg_rescale") or 0) > 0),
                         ("mimic_scale", dynamic_thresholding_on(params)), ("cc_brightness", grading_on(params))):
            if on:
                found.append((name, f"{name} reshapes the two-way classifier-free guided prediction; instruct-pix2pix "
                                    f"guides by text and image at once: drop {name} for this model"))
    if str(params.get("regions") or "off") != "off" and adjusts_prediction(params):
        found.append(("regions", "CFG rescale, dynamic thresholding and colour grading reshape each guided "
                                 "prediction, and a regional cell has one per region before they are blended, which "
                                 "gridgen does not adjust yet: set regions: off or drop those controls"))
    return found
