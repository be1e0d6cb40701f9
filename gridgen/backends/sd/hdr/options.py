"""The HDR params' values, checks and `parameters` text. Imports no torch.

A cell with `hdr_brackets` N (odd, 3 to 9) renders N brackets whose exposures step by `hdr_gap` around 0:
`gap * (i - N // 2)` for bracket i, darkest first, so the middle bracket is the cell's own render.
"""

from __future__ import annotations

from typing import Any

BRACKET_COUNTS = (3, 5, 7, 9)
DEPTHS = (8, 16)
_OFF_WORDS = ("off", "none", "false", "no", "0", "1")


def parse_brackets(value: Any) -> int:
    """`hdr_brackets` as a count: 1 (off) or an odd count of 3 to 9; raises ValueError saying what fits."""
    text = str(value).strip().lower()
    if text in _OFF_WORDS:
        return 1
    try:
        number = float(text)
    except ValueError:
        number = None
    if number is None or number not in BRACKET_COUNTS:
        raise ValueError(f"hdr_brackets must be off (or 1) or an odd number of brackets, 3, 5, 7 or 9, got {value!r}: "
                         f"the middle bracket is the cell's own exposure, with as many darker ones as brighter")
    return int(number)


def parse_depth(value: Any) -> int:
    """`hdr_depth` as bits per channel, from `8`, `16` or the extension's `8bpc` / `16bpc`."""
    text = str(value).strip().lower().removesuffix("bpc").removesuffix("bit").removesuffix("-").strip()
    if text in ("8", "16"):
        return int(text)
    raise ValueError(f"hdr_depth must be 8 or 16 (bits per channel of the merged image), got {value!r}")


def hdr_on(params: dict[str, Any]) -> bool:
    return int(params.get("hdr_brackets") or 1) > 1


def exposures(count: int, gap: float) -> list[float]:
    """The brackets' exposures, darkest first, centred on 0."""
    return [gap * (index - count // 2) for index in range(count)]


def problems(params: dict[str, Any]) -> list[tuple[str, str]]:
    """(param, message) for HDR settings that cannot apply to this cell."""
    if not hdr_on(params):
        return []
    later = [name for name in ("sam_prompt", "out_width", "out_height") if params.get(name)]
    if str(params.get("upscaler") or "none").strip().lower() not in ("none", ""):
        later.insert(0, "upscaler")
    if later:
        return [("hdr_brackets", f"HDR merges the brackets of the base render into the cell's image, and gridgen does "
                                 f"not carry brackets through later stages ({', '.join(later)}) yet: set hdr_brackets "
                                 f"off or drop {later[0]} for this cell")]
    if float(params.get("hdr_gap") or 0) == 0:
        return [("hdr_gap", "hdr_gap 0 makes every bracket the same exposure, which merges to the plain image: set "
                            "a gap such as 1.25, or hdr_brackets off")]
    return []


def infotext_fields(params: dict[str, Any]) -> list[tuple[str, Any]]:
    """The `parameters` fields of a cell's HDR settings, named after the script's controls."""
    if not hdr_on(params):
        return []
    return [("Vec HDR Brackets", params["hdr_brackets"]), ("Vec HDR Gaps", params["hdr_gap"]),
            ("Vec HDR Gamma", params["hdr_gamma"]), ("Vec HDR Depth", f"{params['hdr_depth']}bpc")]
