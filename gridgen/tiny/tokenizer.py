"""The word-level tokenizer of gridgen-tiny: a `CLIPTokenizer` whose BPE merges join every word of the shapes
grammar into one token, written as the vocab.json and merges.txt a CLIP tokenizer folder holds.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from gridgen.tiny import data as shapes

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_TOKENS = 16  # the longest grammar caption is 9 tokens with its start and end tokens


def _bpe_pieces(word: str, merges: list[tuple[str, str]]) -> list[str]:
    """How CLIP's BPE splits `word` with `merges` (lowest rank first, as the tokenizers library does)."""
    rank = {pair: i for i, pair in enumerate(merges)}
    symbols = [*word[:-1], word[-1] + "</w>"]
    while len(symbols) > 1:
        best = min(range(len(symbols) - 1), key=lambda i: rank.get((symbols[i], symbols[i + 1]), math.inf))
        if (symbols[best], symbols[best + 1]) not in rank:
            break
        symbols[best:best + 2] = [symbols[best] + symbols[best + 1]]
    return symbols


def word_level_vocab(words: tuple[str, ...] = shapes.GRAMMAR_WORDS) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A CLIP BPE vocabulary and merge list under which each of `words` is exactly one token.

    A word's merges are appended after the earlier words' ones, joining whatever pieces the earlier
    merges leave, so they never change how an earlier word splits. Characters outside the grammar's
    words are not in the vocabulary and become the unknown token.
    """
    tokens = [BOS, EOS]
    merges: list[tuple[str, str]] = []
    for word in words:
        for symbol in [*word[:-1], word[-1] + "</w>"]:
            if symbol not in tokens:
                tokens.append(symbol)
    for word in words:
        pieces = _bpe_pieces(word, merges)
        while len(pieces) > 1:
            merges.append((pieces[0], pieces[1]))
            pieces[:2] = [pieces[0] + pieces[1]]
            if pieces[0] not in tokens:
                tokens.append(pieces[0])
    return {token: i for i, token in enumerate(tokens)}, merges


def write_tokenizer_files(folder: Path) -> None:
    """vocab.json and merges.txt, which CLIPTokenizer reads when tokenizer.json is absent (transformers 4.x)."""
    vocab, merges = word_level_vocab()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))


def build_tokenizer(workdir: Path):
    from transformers import CLIPTokenizer

    write_tokenizer_files(workdir)
    tokenizer = CLIPTokenizer.from_pretrained(workdir, model_max_length=MAX_TOKENS)
    for word in shapes.GRAMMAR_WORDS:
        ids = tokenizer(word, add_special_tokens=False).input_ids
        assert ids == [tokenizer.convert_tokens_to_ids(word + "</w>")], f"{word!r} is not one token: {ids}"
    return tokenizer
