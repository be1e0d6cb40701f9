"""SDXL's conditioning: two text encoders and the size conditioning its UNet adds to the time embedding.

The cross-attention context is the two encoders' hidden states side by side, taken below their
final layer (the penultimate layer at clip_skip 1, one further down per step, with no final layer
norm: SDXL was trained so); the pooled, projected output of the second encoder and the
`time_ids` (original size, crop corner, target size) go in as `added_cond_kwargs`, as diffusers'
StableDiffusionXLPipeline builds them. Encodings are cached per (text, clip_skip) and encoder state
(the text-encoder LoRAs applied) like `text`'s; a textual-inversion embedding's name is spelled as
the tokens its vectors were loaded under in both tokenizers.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch

from gridgen.backends.sd.embeddings import spell_vectors
from gridgen.backends.sd.encoding_cache import EncodingCache
from gridgen.backends.sd.text import Conditioning


class SdxlPromptEncoder:
    """Encodes (text, clip_skip) requests to stacked contexts; `pooled` gives the matching pooled embeddings."""

    def __init__(self, tokenizers: Sequence, text_encoders: Sequence, capacity: int = 1024):
        self.tokenizers = list(tokenizers)
        self.text_encoders = list(text_encoders)
        self.cache: EncodingCache[tuple[str, int, Hashable], tuple[torch.Tensor, torch.Tensor]]
        self.cache = EncodingCache(capacity)
        self.state: Hashable = ()  # anything besides the text that changes an encoding (text-encoder LoRAs)
        self.embedding_vectors: dict[str, int] = {}  # loaded textual-inversion embeddings: name -> vector count

    def _lookup(self, requests: Sequence[tuple[str, int]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return self.cache.lookup([(text, skip, self.state) for text, skip in requests],
                                 lambda missing: [self._encode(text, skip) for text, skip, _ in missing])

    def forget(self) -> None:
        """Drop every cached encoding (the tokenizers learnt new words: cached texts may spell them)."""
        self.cache.clear()

    def encode(self, requests: Sequence[tuple[str, int]]) -> list[torch.Tensor]:
        """The context of each request, in request order (one 77-token window each)."""
        return [context for context, _ in self._lookup(requests)]

    def conditioning(self, prompts: Sequence[tuple[str, int]], negatives: Sequence[tuple[str, int]]) -> Conditioning:
        """The batch's prompts and negative prompts, stacked; every row has one window, so nothing is masked."""
        return Conditioning(torch.stack(self.encode(prompts)), torch.stack(self.encode(negatives)), None, None)

    def pooled(self, requests: Sequence[tuple[str, int]]) -> torch.Tensor:
        return torch.stack([pooled for _, pooled in self._lookup(requests)])

    def _encode(self, text: str, clip_skip: int) -> tuple[torch.Tensor, torch.Tensor]:
        text = spell_vectors(text, self.embedding_vectors)
        states = []
        for tokenizer, encoder in zip(self.tokenizers, self.text_encoders, strict=True):
            # Prompts longer than the encoder's window are truncated, as diffusers' own pipeline does.
            ids = tokenizer([text], padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                            return_tensors="pt").input_ids
            output = encoder(ids.to(encoder.device), output_hidden_states=True)
            states.append(output.hidden_states[-(clip_skip + 1)][0])
        # The second encoder's projected pooled output (`text_embeds`) is what the UNet's add embedding takes.
        return torch.cat(states, dim=-1), output[0][0]


def added_conditioning(pooled: torch.Tensor, width: int, height: int) -> dict[str, torch.Tensor]:
    """The UNet's `added_cond_kwargs` for a batch rendered at width x height, uncropped."""
    time_ids = torch.tensor([height, width, 0, 0, height, width], dtype=pooled.dtype, device=pooled.device)
    return {"text_embeds": pooled, "time_ids": time_ids.expand(pooled.shape[0], -1)}
