"""T5 encoder features for ELLA, per (prompt, token length), loaded from a local folder and cached.

ELLA reads the last hidden state of a frozen T5 encoder (google/flan-t5-xl in the release). A
fixed token length pads or truncates every prompt to that many tokens, as ELLA was trained (128);
`flexible` keeps each prompt's own length, which the ELLA notes recommend for short prompts. Each
(text, token length) is encoded once: a grid repeats its prompts across many cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from gridgen.backends.sd.text.encoding_cache import EncodingCache
from gridgen.errors import ModelError

FLEXIBLE = "flexible"


def t5_dtype(device: torch.device) -> torch.dtype:
    """fp16 on CUDA (ELLA's notes: bf16 output differs visibly), fp32 on the CPU, whatever the UNet's dtype."""
    return torch.float16 if device.type == "cuda" else torch.float32


def load_t5(folder: Path, device: torch.device):
    """The tokenizer and encoder of a T5 folder; raises ModelError naming the folder."""
    from safetensors import SafetensorError
    from transformers import AutoTokenizer, T5EncoderModel

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        encoder = T5EncoderModel.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:
        raise ModelError(f"cannot load the T5 text encoder {folder}: {exc}; point ella_text_encoder at a complete "
                         f"transformers T5 folder (config.json, weights and tokenizer files)") from exc
    # Cast after loading: transformers spells its dtype keyword differently across versions.
    return tokenizer, encoder.to(device=device, dtype=t5_dtype(device)).eval()


class T5Features:
    """(tokens, d_model) features per (text, token length), caching up to `capacity` (least recently used go)."""

    def __init__(self, tokenizer, encoder, capacity: int = 1024):
        self.tokenizer = tokenizer
        self.encoder = encoder
        self.cache: EncodingCache[tuple[str, str], torch.Tensor] = EncodingCache(capacity)

    def __call__(self, requests: Sequence[tuple[str, str]]) -> list[torch.Tensor]:
        """Features for each (text, token_length) request, in request order; lengths may differ."""
        return self.cache.lookup(list(requests), self._encode_missing)

    def _encode_missing(self, keys: list[tuple[str, str]]) -> list[torch.Tensor]:
        encoded: dict[tuple[str, str], torch.Tensor] = {}
        for length in sorted({length for _, length in keys}):  # one encoder pass per token length
            group = [key for key in keys if key[1] == length]
            encoded.update(zip(group, self._encode([text for text, _ in group], length), strict=True))
        return [encoded[key] for key in keys]

    def _encode(self, texts: list[str], length: str) -> list[torch.Tensor]:
        if length == FLEXIBLE:
            # Padded only so the texts share one pass; each row is cut back to its own tokens below.
            tokens = self.tokenizer(texts, padding="longest", return_tensors="pt")
        else:
            tokens = self.tokenizer(texts, padding="max_length", max_length=int(length), truncation=True,
                                    return_tensors="pt")
        mask = tokens.attention_mask.to(self.encoder.device)
        hidden = self.encoder(tokens.input_ids.to(self.encoder.device), attention_mask=mask).last_hidden_state
        if length != FLEXIBLE:
            return list(hidden)  # the padded positions are part of what ELLA was trained to read
        return [row[:int(count)] for row, count in zip(hidden, mask.sum(dim=1).tolist(), strict=True)]
