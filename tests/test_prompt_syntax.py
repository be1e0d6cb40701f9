"""A1111 prompt syntax: the parser, token chunking, weighted and chunked embeddings, and batches of long prompts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gridgen.backends import BackendContext
from gridgen.backends.base import Cell
from gridgen.backends.diffusers_backend import DiffusersBackend
from gridgen.backends.sd.text.clip import COMMA_BACKTRACK, chunk_tokens
from gridgen.backends.sd.text.prompt_syntax import Fragment, parse

# Parser


def weights(prompt: str) -> list[list[tuple[str, float]]]:
    return [[(f.text, round(f.weight, 4)) for f in segment] for segment in parse(prompt)]


@pytest.mark.parametrize("prompt, expected", [
    ("a cat", [[("a cat", 1.0)]]),
    ("a (cat) b", [[("a ", 1.0), ("cat", 1.1), (" b", 1.0)]]),
    ("((cat))", [[("cat", 1.21)]]),
    ("[cat]", [[("cat", 0.9091)]]),
    ("(cat:1.3) dog", [[("cat", 1.3), (" dog", 1.0)]]),
    ("(a (b:2):0.5)", [[("a ", 0.5), ("b", 1.0)]]),
    ("(cat: 0.25 )", [[("cat", 0.25)]]),
    ("(cat:-.5)", [[("cat", -0.5)]]),
    (r"\(cat\) \[x\] a\\b", [[(r"(cat) [x] a\b", 1.0)]]),
    (r"a \d", [[(r"a \d", 1.0)]]),  # a backslash before anything else stays
    ("(open", [[("open", 1.1)]]),  # left open: weighs the rest
    ("[open (both", [[("open ", 0.9091), ("both", 1.0)]]),
    ("stray) ]", [[("stray) ]", 1.0)]]),
    ("ratio 1:2 and a:1.5)", [[("ratio 1:2 and a:1.5)", 1.0)]]),
    ("(a [b) c]", [[("a ", 1.1), ("b", 1.0), (" c", 0.9091)]]),  # round and square nest independently
    ("", [[]]),
])
def test_attention_syntax(prompt, expected):
    assert weights(prompt) == expected


def test_break_splits_segments_even_inside_brackets():
    assert weights("a BREAK b") == [[("a", 1.0)], [("b", 1.0)]]
    assert weights("(a BREAK b:1.2)") == [[("a", 1.2)], [("b", 1.2)]]
    assert weights("BREAK x") == [[], [("x", 1.0)]]
    assert weights("BREAKFAST break") == [[("BREAKFAST break", 1.0)]]  # only the upper-case word


def test_neighbours_with_one_weight_merge():
    assert parse("(a)(b)") == [[Fragment("ab", pytest.approx(1.1))]]


# Chunking


def chunk(tokens, window=4, comma=None, units=None, segments=None):
    return chunk_tokens(segments or [[(tokens, 1.0)]], window, comma, units or {})


def test_chunks_fill_to_the_window():
    assert [ids for ids, _ in chunk([1, 2, 3, 4, 5, 6])] == [[1, 2, 3, 4], [5, 6]]
    assert [ids for ids, _ in chunk([1, 2, 3, 4])] == [[1, 2, 3, 4]]
    assert chunk([]) == [([], [])]


def test_break_starts_a_new_chunk_and_weights_follow_their_tokens():
    segments = [[([1], 1.0), ([2], 1.5)], [], [([3], 0.5)]]
    assert chunk_tokens(segments, 4, None, {}) == [([1, 2], [1.0, 1.5]), ([], []), ([3], [0.5])]


def test_a_full_chunk_moves_the_words_after_its_last_comma_on():
    comma = 9
    assert [ids for ids, _ in chunk([1, 9, 2, 3, 4], comma=comma)] == [[1, 9], [2, 3, 4]]
    far = [9] + list(range(20, 20 + COMMA_BACKTRACK + 1)) + [99]  # the comma is too far back to wrap at
    assert [len(ids) for ids, _ in chunk(far, window=COMMA_BACKTRACK + 2, comma=comma)] == [COMMA_BACKTRACK + 2, 1]


def test_embedding_vectors_are_never_split_across_chunks():
    ids = [ids for ids, _ in chunk([1, 2, 3, 50], units={50: [50, 51, 52]})]
    assert ids == [[1, 2, 3], [50, 51, 52]]


# Embeddings on the tiny model


@pytest.fixture(scope="module")
def backend():
    instance = DiffusersBackend(BackendContext(spec_dir=Path.cwd(), device="cpu", cache_bytes=0))
    list(instance.render([make_cell()]))  # load the model
    yield instance
    instance.close()


def make_cell(index: int = 0, **params) -> Cell:
    base = {"prompt": "a red square", "negative_prompt": "", "seed": 1, "steps": 3, "cfg_scale": 7.0,
            "sampler": "Euler", "model": "gridgen-tiny"}
    return Cell(index=index, key=str(index), coords=(str(index),), params={**base, **params})


def embed(backend, text: str, clip_skip: int = 1) -> torch.Tensor:
    return backend.prompts.encode([(text, clip_skip)])[0]


def test_weights_reach_the_embeddings_with_a1111_mean_rescaling(backend):
    plain = embed(backend, "red square")
    weighted = embed(backend, "(red:1.5) square")
    assert not torch.allclose(plain, weighted)
    assert torch.allclose(weighted.mean(), plain.mean(), atol=1e-6)  # the chunk keeps its mean
    # Token 1 (after the start token) is "red": its vector is 1.5 times the others' scale.
    ratio = weighted / plain
    assert torch.allclose(ratio[1], ratio[2] * 1.5, rtol=1e-4)
    assert torch.allclose(ratio[0], ratio[2], rtol=1e-4)
    assert torch.equal(embed(backend, "(red) square"), embed(backend, "(red:1.1) square"))
    assert torch.equal(embed(backend, "(red:1) square"), plain)
    assert torch.allclose(embed(backend, "[red] square"), embed(backend, f"(red:{1 / 1.1}) square"))


def test_escaped_brackets_are_text_not_weights(backend):
    assert not torch.equal(embed(backend, r"\(red\) square"), embed(backend, "(red) square"))
    assert not torch.equal(embed(backend, r"\(red\) square"), embed(backend, "red square"))


def test_long_prompts_are_encoded_in_chunks_and_concatenated(backend):
    window = backend.prompts.window
    words = ["red", "blue", "green", "square", "circle"] * 4  # one token each (tiny vocabulary): over one window
    long = embed(backend, " ".join(words))
    assert long.shape[0] == 2 * (window + 2)
    first, rest = " ".join(words[:window]), " ".join(words[window:])
    assert torch.allclose(long, torch.cat([embed(backend, first), embed(backend, rest)]), atol=1e-6)


def test_break_encodes_each_part_as_its_own_chunk(backend):
    broken = embed(backend, "a red BREAK square")
    assert torch.allclose(broken, torch.cat([embed(backend, "a red"), embed(backend, "square")]), atol=1e-6)


def test_weighting_changes_the_image(backend):
    (plain,) = backend.render([make_cell(prompt="a red square")])
    (weighted,) = backend.render([make_cell(prompt="a (red:1.6) square")])
    assert np.abs(np.asarray(plain.image, float) - np.asarray(weighted.image, float)).mean() > 0.5


def test_cells_with_different_chunk_counts_batch_like_alone(backend):
    long = " ".join(["red", "blue", "green", "square", "circle"] * 5)
    cells = [
        make_cell(0, prompt="a red square"),
        make_cell(1, prompt=long, seed=2),
        make_cell(2, prompt="stripes", negative_prompt=long + " BREAK blurry", seed=3),
        make_cell(3, prompt=long, cfg_scale=1.0, seed=4),
        make_cell(4, prompt="a BREAK b BREAK c", seed=5, clip_skip=2),
    ]
    alone = {cell.index: np.asarray(r.image, float) for cell in cells for r in backend.render([cell])}
    together = {r.cell.index: np.asarray(r.image, float) for r in backend.render(cells)}
    for index, image in alone.items():
        assert np.abs(together[index] - image).mean() <= 1.0, cells[index].params


def test_extra_network_tags_are_not_text():
    assert parse("a red <lora:style:0.8> cat, <hypernet:x:1>") == parse("a red cat")
