"""Turns prompts into the UNet's cross-attention conditioning, with A1111's CLIP skip and a cache.

Each (text, clip_skip) is encoded once per loaded model: a grid repeats the same prompts and
negative prompts across many cells, and re-encoding them would be wasted text-encoder passes.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch


class PromptEncoder:
    """Encodes texts to (tokens, dim) embeddings, caching up to `capacity` of them (least recently used go)."""

    def __init__(self, tokenizer, text_encoder, capacity: int = 1024):
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.capacity = capacity
        self.hits = 0
        self.misses = 0
        self._cache: OrderedDict[tuple[str, int], torch.Tensor] = OrderedDict()

    def __call__(self, requests: Sequence[tuple[str, int]]) -> torch.Tensor:
        """Embeddings for each (text, clip_skip) request, stacked in request order."""
        missing = [key for key in dict.fromkeys(requests) if key not in self._cache]
        self.hits += len(requests) - len(missing)
        self.misses += len(missing)
        for clip_skip in sorted({skip for _, skip in missing}):
            texts = [text for text, skip in missing if skip == clip_skip]
            for text, embedding in zip(texts, self._encode(texts, clip_skip), strict=True):
                self._cache[(text, clip_skip)] = embedding
        rows = []
        for key in requests:
            self._cache.move_to_end(key)
            rows.append(self._cache[key])
        while len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return torch.stack(rows)

    def _encode(self, texts: list[str], clip_skip: int) -> torch.Tensor:
        # Prompts longer than the encoder's window are truncated, as diffusers' own pipeline does.
        ids = self.tokenizer(texts, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids
        output = self.text_encoder(ids.to(self.text_encoder.device), output_hidden_states=True)
        # hidden_states[-1] is the last layer before the final layer norm, so clip_skip 1 is the usual
        # output; A1111 and diffusers apply that norm to whichever layer clip skip picks.
        text_model = getattr(self.text_encoder, "text_model", self.text_encoder)  # transformers 4.x nests it
        return text_model.final_layer_norm(output.hidden_states[-clip_skip])
