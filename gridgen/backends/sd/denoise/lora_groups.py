"""Guidance rows that need different LoRAs: a batch is denoised one UNet call per LoRA set, the adapters switched
between the calls.

A regional cell in latent calculation has a guidance row per region, and each region applies the LoRAs of its own
prompt (`regional.expand` puts them in its text row's `lora` param). A region's prediction is the one the model
with those LoRAs makes: its text is encoded under them (text-encoder LoRAs) and both halves of its guidance, the
conditional and the unconditional, run under them. The rows are grouped by LoRA set once per batch; the text
conditioning and the guidance are built per group, and `split_guide` joins the groups' guides into one over all
the rows. A batch whose rows share one set is one group and runs as it would without this module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from gridgen.backends.sd.denoise.regional import Row, rows_of

if TYPE_CHECKING:
    import torch

    from gridgen.backends.sd.adapters.networks import LoraSet
    from gridgen.backends.sd.denoise.guidance import Denoiser, Guide


@dataclass(frozen=True)
class Group:
    """The guidance rows (indices, in batch order) that run under one LoRA set."""

    loras: LoraSet
    rows: tuple[int, ...]


def groups(rows: Sequence[Row], text_rows: Sequence[dict[str, Any]],
           lora_set: Callable[[dict[str, Any]], LoraSet]) -> list[Group]:
    """The batch's guidance rows grouped by the LoRA set of their text rows, in order of first use."""
    members: dict[LoraSet, list[int]] = {}
    for number, row in enumerate(rows):
        members.setdefault(lora_set(text_rows[row.parts[0].text]), []).append(number)
    return [Group(loras, tuple(numbers)) for loras, numbers in members.items()]


def subset(rows: Sequence[Row], text_rows: Sequence[dict[str, Any]], group: Group
           ) -> tuple[list[dict[str, Any]], list[Row]]:
    """The group's text rows and guidance rows, the rows' text indices counted within the group."""
    texts = sorted({part.text for number in group.rows for part in rows[number].parts})
    within = {text: position for position, text in enumerate(texts)}
    picked = [replace(rows[number], parts=tuple(replace(part, text=within[part.text]) for part in rows[number].parts))
              for number in group.rows]
    return [text_rows[text] for text in texts], picked


def split_guide(guides: Sequence[tuple[Group, Guide]], use_loras: Callable[[LoraSet], None]) -> Guide:
    """One guide over all the rows from each group's guide over its own rows; unchanged for a single group."""
    if len(guides) == 1:
        return guides[0][1]

    def guide(**extra: Any) -> Denoiser:
        import torch

        parts = []
        for group, each in guides:
            index = torch.tensor(group.rows, dtype=torch.long)
            parts.append((group.loras, index, each(**{name: rows_of(value, index) for name, value in extra.items()})))

        def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            out = torch.empty_like(x)
            for loras, index, each in parts:
                use_loras(loras)
                on_device = index.to(x.device)
                out[on_device] = each(x[on_device], t)
            return out

        return denoise

    return guide
