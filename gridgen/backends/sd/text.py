"""Turns prompts into the UNet's cross-attention conditioning, with A1111's CLIP skip and a cache.

Each (text, clip_skip) is encoded once per loaded model: a grid repeats the same prompts and
negative prompts across many cells, and re-encoding them would be wasted text-encoder passes.
"""

from __future__ import annotations

from collections import OrderedDict

import torch


class PromptEncoder:
    """Encodes texts to (N, tokens, dim) embeddings, caching up to `capacity` of them (least recently used go)."""

    def __init__(self, tokenizer, text_encoder, capacity: int = 1024):
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.capacity = capacity
        self.hits = 0
        self.misses = 0
        self._cache: OrderedDict[tuple[str, int], torch.Tensor] = OrderedDict()

    def __call__(self, texts: list[str], clip_skip: int = 1) -> torch.Tensor:
        missing = list(dict.fromkeys(t for t in texts if (t, clip_skip) not in self._cache))
        self.hits += len(texts) - len(missing)
        self.misses += len(missing)
        if missing:
            for text, embedding in zip(missing, self._encode(missing, clip_skip), strict=True):
                self._cache[(text, clip_skip)] = embedding
        rows = []
        for text in texts:
            self._cache.move_to_end((text, clip_skip))
            rows.append(self._cache[(text, clip_skip)])
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
