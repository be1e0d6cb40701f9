"""A1111's extra-network tags in prompts (`<lora:name:weight>`, `<hypernet:...>`, `<lyco:...>`): LoRA tags read as
`lora` values, and the tags no backend here applies removed. Plain text, so planning and backends share it."""

from __future__ import annotations

import re

_EXTRA_NETWORK = re.compile(r"<(hypernet|hypernetwork|lyco|lora):[^>]*>", re.IGNORECASE)
# `<lora:name>` / `<lora:name:weight>` (a second, UNet-only weight and named options are ignored).
_LORA_TAG = re.compile(r"<lora:([^:>]+)(?::\s*([-+]?[\d.]+)\s*)?(?::[^>]*)?>", re.IGNORECASE)


def _tidy(text: str) -> str:
    return re.sub(r"\s{2,}", " ", text).strip(" ,")


def take_loras(text: str) -> tuple[str, list[str]]:
    """`text` without its LoRA tags, and the tags as `lora` values (`name:weight`, in the order written)."""
    found = [f"{name.strip()}:{weight or 1}" for name, weight in _LORA_TAG.findall(text)]
    return (_tidy(_LORA_TAG.sub("", text)), found) if found else (text, [])


def strip_extra_networks(text: str, keep_loras: bool = False) -> tuple[str, list[str]]:
    """`text` without extra-network tags (LoRA tags kept when `keep_loras`), and the kinds removed."""
    removed = []

    def remove(tag: re.Match) -> str:
        if keep_loras and tag[1].lower() == "lora":
            return tag[0]
        removed.append(tag[1].lower())
        return ""

    stripped = _EXTRA_NETWORK.sub(remove, text)
    return (_tidy(stripped), removed) if removed else (text, [])
