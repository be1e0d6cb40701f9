"""The UNet context of one ELLA batch, recomputed by the TSC at each denoising step.

Rows (conditional and unconditional halves of every cell) may carry T5 features of different
lengths (flexible token length, or cells with different token lengths in one batch). They share
one TSC pass per step: shorter rows are padded and the padding is masked out of the attention, so
each row reads exactly its own tokens, as if it had been run alone. In ELLA+CLIP mode each row's
64 ELLA tokens are followed by its 77 CLIP tokens (141 in all), so trigger words and textual
inversion embeddings still reach the UNet.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

ContextFn = Callable[[torch.Tensor], torch.Tensor]


class EllaContext:
    """timestep -> (rows, tokens, width) context for all rows; computed once per step for both halves."""

    def __init__(self, ella, features: Sequence[torch.Tensor], clip: torch.Tensor | None = None):
        self.ella = ella
        self.clip = clip
        lengths = [len(row) for row in features]
        longest = max(lengths)
        self.text = torch.zeros((len(features), longest, features[0].shape[-1]), device=ella.device, dtype=ella.dtype)
        for index, row in enumerate(features):
            self.text[index, :len(row)] = row.to(self.text)
        # No mask when every row has the same length: the TSC then runs exactly as ELLA's reference does.
        self.mask = None
        if len(set(lengths)) > 1:
            positions = torch.arange(longest, device=ella.device)
            self.mask = positions < torch.tensor(lengths, device=ella.device).unsqueeze(1)
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None

    def __call__(self, timestep: torch.Tensor) -> torch.Tensor:
        if self._last is None or self._last[0] is not timestep:
            context = self.ella(self.text, timestep, self.mask)
            if self.clip is not None:
                context = torch.cat([context, self.clip.to(context)], dim=1)
            self._last = (timestep, context)
        return self._last[1]

    def rows(self, start: int, stop: int) -> ContextFn:
        """The context of rows start..stop-1 alone (one half of the batch)."""
        return lambda timestep: self(timestep)[start:stop]
