"""Turns prompts into the UNet's cross-attention conditioning the way A1111 does, with a cache.

A prompt is parsed (`prompt_syntax`), tokenized fragment by fragment, and cut into chunks of the
encoder's window less its two special tokens (75 tokens for SD): a chunk ends at BREAK, when it is
full (moving the tail after a comma in its last 20 tokens on to the next chunk, and never splitting
a textual-inversion embedding's vectors), and is laid out as A1111 lays it out: start token, its
tokens, end token, then the tokenizer's padding token (SD 2.x and SDXL's second encoder pad with
`!`, so the end token must come right after the text). Each chunk is encoded on its own with
A1111's CLIP skip; its token vectors are multiplied by their weights and the chunk is then rescaled
to its unweighted mean, as A1111's original emphasis does; the chunks are concatenated.

Each (text, clip_skip) is encoded once per loaded model and encoder state (the text-encoder LoRAs
applied): a grid repeats the same prompts and negative prompts across many cells.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import torch

from gridgen.backends.sd.adapters.embeddings import spell_tokens
from gridgen.backends.sd.text.encoding_cache import EncodingCache
from gridgen.backends.sd.text.prompt_syntax import parse

COMMA_BACKTRACK = 20  # A1111's default "prompt word wrap length limit"

Chunk = tuple[list[int], list[float]]


def chunk_tokens(segments: Sequence[Sequence[tuple[Sequence[int], float]]], window: int, comma: int | None,
                 units: dict[int, list[int]]) -> list[Chunk]:
    """Cut BREAK-separated segments of (token ids, weight) runs into chunks of at most `window` tokens.

    `units` maps the first token of a textual-inversion embedding to all of its tokens, which stay in
    one chunk. An empty prompt is one empty chunk; a BREAK always starts a new chunk.
    """
    chunks: list[Chunk] = []
    ids: list[int] = []
    weights: list[float] = []
    last_comma = -1

    def close() -> None:
        nonlocal ids, weights, last_comma
        chunks.append((ids, weights))
        ids, weights, last_comma = [], [], -1

    for index, segment in enumerate(segments):
        if index:
            close()
        for tokens, weight in segment:
            for token in tokens:
                if token == comma:
                    last_comma = len(ids)
                elif len(ids) == window and last_comma >= 0 and len(ids) - last_comma <= COMMA_BACKTRACK:
                    # Keep the words after the last comma together at the start of the next chunk.
                    cut = last_comma + 1
                    tail = ids[cut:], weights[cut:]
                    ids, weights = ids[:cut], weights[:cut]
                    close()
                    ids, weights = tail
                if len(ids) == window:
                    close()
                unit = units.get(token, [token])
                if len(ids) + len(unit) > window:
                    close()
                ids = ids + unit
                weights = weights + [weight] * len(unit)
    if ids or not chunks:
        close()
    return chunks


@dataclass
class TokenRows:
    """A batch of texts as encoder input: one row per chunk, each text's chunks one after another."""

    ids: torch.Tensor  # (chunks, window + 2) token ids
    weights: torch.Tensor  # (chunks, window + 2) each token's attention weight
    counts: list[int]  # how many chunks each text has, in text order

    def split(self, hidden: torch.Tensor) -> list[torch.Tensor]:
        """Per text, its chunks' (rows, tokens, dim) states joined into one (chunks x tokens, dim) sequence."""
        return [rows.flatten(0, 1) for rows in hidden.split(self.counts)]


@dataclass
class Conditioning:
    """A batch's conditional and unconditional rows, padded to one length; masks mark real tokens."""

    cond: torch.Tensor  # (B, tokens, dim)
    uncond: torch.Tensor
    cond_mask: torch.Tensor | None  # (B, tokens) of 1/0, None when every row has the same length
    uncond_mask: torch.Tensor | None


class PromptEncoder:
    """Encodes texts to (chunks x window, dim) embeddings, caching up to `capacity` of them (LRU)."""

    def __init__(self, tokenizer, text_encoder, capacity: int = 1024):
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.cache: EncodingCache[tuple[str, int, Hashable], torch.Tensor] = EncodingCache(capacity)
        self.state: Hashable = ()  # anything besides the text that changes an encoding (text-encoder LoRAs)
        self.embedding_names: list[str] = []  # textual-inversion embeddings loaded into the text encoder
        self.embedding_tokens: dict[int, list[int]] = {}  # first token of each loaded embedding -> all its tokens
        self.window = tokenizer.model_max_length - 2
        self._comma = tokenizer.get_vocab().get(",</w>")

    @torch.inference_mode()
    def encode(self, requests: Sequence[tuple[str, int]]) -> list[torch.Tensor]:
        """Embeddings for each (text, clip_skip) request, in request order; lengths differ with chunk counts."""
        return self.cache.lookup([(text, skip, self.state) for text, skip in requests], self._encode_missing)

    def _encode_missing(self, keys: list[tuple[str, int, Hashable]]) -> list[torch.Tensor]:
        encoded: dict[tuple[str, int, Hashable], torch.Tensor] = {}
        for clip_skip in sorted({skip for _, skip, _ in keys}):  # one encoder pass per CLIP skip
            group = [key for key in keys if key[1] == clip_skip]
            encoded.update(zip(group, self._encode([text for text, _, _ in group], clip_skip), strict=True))
        return [encoded[key] for key in keys]

    def forget(self) -> None:
        """Drop every cached encoding (the tokenizer learnt new words: cached texts may spell them)."""
        self.cache.clear()

    def conditioning(self, prompts: Sequence[tuple[str, int]], negatives: Sequence[tuple[str, int]]) -> Conditioning:
        """The batch's prompts and negative prompts, stacked, shorter rows padded and masked (`padded_conditioning`)."""
        return padded_conditioning(self.encode, prompts, negatives)

    def _chunks(self, text: str) -> list[Chunk]:
        segments = []
        for segment in parse(text):
            texts = [spell_tokens(f.text, self.embedding_names) for f in segment]
            tokenized = self.tokenizer(texts, add_special_tokens=False, truncation=False,
                                       verbose=False).input_ids if segment else []
            segments.append([(ids, f.weight) for ids, f in zip(tokenized, segment, strict=True)])
        return chunk_tokens(segments, self.window, self._comma, self.embedding_tokens)

    def token_rows(self, texts: Sequence[str]) -> TokenRows:
        """The texts' chunks as rows of start token, tokens, end token and padding, with their weights."""
        tokenizer = self.tokenizer
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        ids, weights, counts = [], [], []
        for text in texts:
            chunks = self._chunks(text)
            counts.append(len(chunks))
            for chunk_ids, chunk_weights in chunks:
                padding = self.window - len(chunk_ids)
                ids.append([tokenizer.bos_token_id, *chunk_ids, tokenizer.eos_token_id, *[pad] * padding])
                weights.append([1.0, *chunk_weights, 1.0, *[1.0] * padding])
        device = self.text_encoder.device
        return TokenRows(torch.tensor(ids, device=device), torch.tensor(weights, device=device), counts)

    def _encode(self, texts: list[str], clip_skip: int) -> list[torch.Tensor]:
        rows = self.token_rows(texts)
        output = self.text_encoder(rows.ids, output_hidden_states=True)
        # hidden_states[-1] is the last layer before the final layer norm, so clip_skip 1 is the usual
        # output; A1111 and diffusers apply that norm to whichever layer clip skip picks.
        text_model = getattr(self.text_encoder, "text_model", self.text_encoder)  # transformers 4.x nests it
        hidden = text_model.final_layer_norm(output.hidden_states[-clip_skip])
        return rows.split(emphasize(hidden, rows.weights))


def padded_conditioning(encode: Callable[[Sequence[tuple[str, int]]], list[torch.Tensor]],
                        prompts: Sequence[tuple[str, int]], negatives: Sequence[tuple[str, int]]) -> Conditioning:
    """The batch's prompts and negative prompts as `encode` embeds them, stacked.

    Rows with fewer chunks are padded with empty-prompt chunks and the padding is masked out of
    cross-attention, so each row conditions the UNet exactly as its own tokens alone would: that
    is what A1111 does by default (prompt and negative prompt of different lengths go through
    the UNet separately), and it makes a cell render the same alone or in any batch.
    """
    requests = [*prompts, *negatives]
    rows = encode(requests)
    longest = max(row.shape[0] for row in rows)
    masks = None
    if any(row.shape[0] != longest for row in rows):
        masks = torch.zeros((len(rows), longest), device=rows[0].device)
        for index, row in enumerate(rows):
            masks[index, :row.shape[0]] = 1
        empties = {skip: encode([("", skip)])[0] for _, skip in requests}
        rows = [_pad(row, empties[skip], longest) for row, (_, skip) in zip(rows, requests, strict=True)]
    stacked, half = torch.stack(rows), len(prompts)
    if masks is None:
        return Conditioning(stacked[:half], stacked[half:], None, None)
    return Conditioning(stacked[:half], stacked[half:], masks[:half], masks[half:])


def _pad(row: torch.Tensor, empty: torch.Tensor, length: int) -> torch.Tensor:
    repeats = (length - row.shape[0]) // empty.shape[0]
    return torch.cat([row, *([empty] * repeats)]) if repeats else row


def emphasize(hidden: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """A1111's original emphasis: each token's vector times its weight, each chunk rescaled to its old mean.

    Unweighted chunks are returned as they are: their rescale is 1 in exact arithmetic, and a chunk whose
    mean is zero (layer-normed states with no bias, as in a freshly initialised encoder) would be 0/0.
    """
    if bool((weights == 1).all()):
        return hidden
    values = hidden.float()
    original = values.mean(dim=(1, 2), keepdim=True)
    values = values * weights.float().unsqueeze(-1)
    weighted = values.mean(dim=(1, 2), keepdim=True)
    scale = torch.where(weighted.abs() > 1e-12, original / weighted, torch.ones_like(weighted))
    values = values * scale
    return values.to(hidden.dtype)
