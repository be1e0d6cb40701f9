"""SDXL's conditioning: two text encoders and the size conditioning its UNet adds to the time embedding.

The cross-attention context is the two encoders' hidden states side by side, taken below their
final layer (the penultimate layer at clip_skip 1, one further down per step, with no final layer
norm: SDXL was trained so); the pooled, projected output of the second encoder and the
`time_ids` (original size, crop corner, target size) go in as `added_cond_kwargs`, as diffusers'
StableDiffusionXLPipeline builds them.

Prompts are read as `text` reads them for SD 1.x/2.x (attention weights, BREAK, chunks of 75
tokens), each encoder chunking with its own tokenizer and weighting its own states, as A1111's
SDXL does. A long prompt's context is its chunks' states concatenated; its pooled embedding is its
first chunk's, as in A1111 and ComfyUI. Encodings are cached per (text, clip_skip) and encoder state
(the text-encoder LoRAs applied) like `text`'s; a textual-inversion embedding's name is spelled as
the tokens its vectors were loaded under in both tokenizers, and its vectors stay in one chunk, as
`text` does for one encoder.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch

from gridgen.backends.sd.adapters.embeddings import tokens_for
from gridgen.backends.sd.text.clip import Conditioning, PromptEncoder, emphasize, padded_conditioning
from gridgen.backends.sd.text.encoding_cache import EncodingCache


class SdxlPromptEncoder:
    """Encodes (text, clip_skip) requests to contexts of 77 tokens per chunk; `pooled` gives the pooled embeddings."""

    def __init__(self, tokenizers: Sequence, text_encoders: Sequence, capacity: int = 1024,
                 zero_empty_negative: bool = False):
        self.tokenizers = list(tokenizers)
        self.zero_empty_negative = zero_empty_negative
        self.text_encoders = list(text_encoders)
        # One `text` encoder per SDXL encoder, for its chunking; their own caches stay empty.
        self.chunkers = [PromptEncoder(tokenizer, encoder, capacity=0)
                         for tokenizer, encoder in zip(self.tokenizers, self.text_encoders, strict=True)]
        self.cache: EncodingCache[tuple[str, int, Hashable], tuple[torch.Tensor, torch.Tensor]]
        self.cache = EncodingCache(capacity)
        self.state: Hashable = ()  # anything besides the text that changes an encoding (text-encoder LoRAs)
        self.embedding_vectors: dict[str, int] = {}  # loaded textual-inversion embeddings: name -> vector count

    def _lookup(self, requests: Sequence[tuple[str, int]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        # One text per encoder pass: its encoding is then the same bits whichever texts it is requested with.
        return self.cache.lookup([(text, skip, self.state) for text, skip in requests],
                                 lambda missing: [self._encode(text, skip) for text, skip, _ in missing])

    def forget(self) -> None:
        """Drop every cached encoding (the tokenizers learnt new words: cached texts may spell them)."""
        self.cache.clear()
        for chunker in self.chunkers:  # each tokenizer gave the embeddings' vectors its own token ids
            chunker.embedding_names = list(self.embedding_vectors)
            chunker.embedding_tokens = {}
            for name, count in self.embedding_vectors.items():
                ids = chunker.tokenizer.convert_tokens_to_ids(tokens_for(name, count))
                chunker.embedding_tokens[ids[0]] = ids

    def encode(self, requests: Sequence[tuple[str, int]]) -> list[torch.Tensor]:
        """The context of each request, in request order; lengths differ with chunk counts."""
        return [context for context, _ in self._lookup(requests)]

    def conditioning(self, prompts: Sequence[tuple[str, int]], negatives: Sequence[tuple[str, int]]) -> Conditioning:
        """The batch's prompts and negative prompts, stacked, shorter rows padded and masked (`padded_conditioning`);
        empty negative prompts are zeros when the model says so."""
        found = padded_conditioning(self.encode, prompts, negatives)
        found.uncond[self._zeroed(negatives, found.uncond.device)] = 0
        return found

    def pooled(self, requests: Sequence[tuple[str, int]]) -> torch.Tensor:
        return torch.stack([pooled for _, pooled in self._lookup(requests)])

    def negative_pooled(self, negatives: Sequence[tuple[str, int]]) -> torch.Tensor:
        """The pooled embeddings of negative prompts, zeros for the empty ones when the model says so."""
        pooled = self.pooled(negatives)
        pooled[self._zeroed(negatives, pooled.device)] = 0
        return pooled

    def _zeroed(self, negatives: Sequence[tuple[str, int]], device: torch.device) -> torch.Tensor:
        # Row by row, not only when the whole batch's are empty as in A1111, so a cell renders the same in any batch.
        return torch.tensor([self.zero_empty_negative and not text.strip() for text, _ in negatives],
                            dtype=torch.bool, device=device)

    def _encode(self, text: str, clip_skip: int) -> tuple[torch.Tensor, torch.Tensor]:
        states = []
        for chunker in self.chunkers:
            rows = chunker.token_rows([text])
            output = chunker.text_encoder(rows.ids, output_hidden_states=True)
            (state,) = rows.split(emphasize(output.hidden_states[-(clip_skip + 1)], rows.weights))
            states.append(state)
        # The UNet's add embedding takes the second encoder's projected pooled output (`text_embeds`), and a long
        # prompt's is its first chunk's.
        return torch.cat(states, dim=-1), output[0][0]


def make_prompt_encoder(parts) -> PromptEncoder | SdxlPromptEncoder:
    """The prompt encoder of a model's loaded components: SDXL's pair when it has a second text encoder."""
    if parts.text_encoder_2 is None:
        return PromptEncoder(parts.tokenizer, parts.text_encoder)
    return SdxlPromptEncoder([parts.tokenizer, parts.tokenizer_2], [parts.text_encoder, parts.text_encoder_2],
                             zero_empty_negative=parts.zero_empty_negative)


def added_conditioning(pooled: torch.Tensor, width: int, height: int) -> dict[str, torch.Tensor]:
    """The UNet's `added_cond_kwargs` for a batch rendered at width x height, uncropped."""
    time_ids = torch.tensor([height, width, 0, 0, height, width], dtype=pooled.dtype, device=pooled.device)
    return {"text_embeds": pooled, "time_ids": time_ids.expand(pooled.shape[0], -1)}


def added_pair(prompts, prompt_requests: Sequence[tuple[str, int]], negative_requests: Sequence[tuple[str, int]],
               width: int, height: int) -> dict[str, dict[str, torch.Tensor]]:
    """`guidance.guided_denoiser`'s `added_cond` and `added_uncond` for these requests rendered at width x height,
    when `prompts` encodes for SDXL; nothing for other models, whose UNets take no added conditioning."""
    if not isinstance(prompts, SdxlPromptEncoder):
        return {}
    return {"added_cond": added_conditioning(prompts.pooled(prompt_requests), width, height),
            "added_uncond": added_conditioning(prompts.negative_pooled(negative_requests), width, height)}
