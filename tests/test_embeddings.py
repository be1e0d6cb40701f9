"""Textual-inversion embeddings: found by name next to the spec or in the models folder, in A1111 and
diffusers layouts, their vectors reaching the text encoder, and clear errors for bad files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gridgen.backends import BackendContext
from gridgen.backends.base import Cell
from gridgen.backends.diffusers_backend import DiffusersBackend
from gridgen.backends.sd.adapters import embeddings
from gridgen.cli import main
from tests.network_fixtures import write_a1111_pt, write_a1111_safetensors, write_diffusers_embedding
from tests.spec_helpers import write_spec

WIDTH = 64  # the tiny text encoder's token width


def vectors(count: int, seed: int) -> torch.Tensor:
    return torch.randn((count, WIDTH), generator=torch.Generator().manual_seed(seed))


def make_cell(index: int = 0, **params) -> Cell:
    base = {"prompt": "a red square", "negative_prompt": "", "seed": 1, "steps": 3, "cfg_scale": 7.0,
            "sampler": "Euler", "model": "gridgen-tiny"}
    return Cell(index=index, key=str(index), coords=(str(index),), params={**base, **params})


@pytest.fixture
def folders(tmp_path):
    spec_dir, models_dir = tmp_path / "spec", tmp_path / "models"
    write_a1111_pt(spec_dir / "embeddings" / "EasyNegative.pt", vectors(3, 1))
    write_a1111_safetensors(models_dir / "embeddings" / "bad-hands.safetensors", vectors(2, 2))
    write_diffusers_embedding(tmp_path / "elsewhere" / "learned.safetensors", vectors(1, 3))
    return spec_dir, models_dir


def test_names_resolve_case_insensitively_as_whole_words(folders):
    spec_dir, models_dir = folders
    offered = embeddings.available(embeddings.folders(spec_dir, models_dir))
    assert set(offered) == {"easynegative", "bad-hands"}
    found = embeddings.referenced("EasyNegative, (bad-hands:1.2)", list(offered))
    assert sorted(found) == ["bad-hands", "easynegative"]
    assert embeddings.referenced("easynegatives bad-hands-5 xbad-hands", list(offered)) == []


def test_each_layout_loads_and_its_vectors_reach_the_text_encoder(folders):
    spec_dir, models_dir = folders
    backend = DiffusersBackend(BackendContext(spec_dir=spec_dir, models_dir=models_dir, device="cpu", cache_bytes=0))
    params = {"prompt": "a red square EasyNegative", "negative_prompt": "bad-hands, learned",
              "embedding": [str(spec_dir.parent / "elsewhere" / "learned.safetensors")]}
    assert backend.validate(make_cell(**params).params) == []
    list(backend.render([make_cell()]))
    before = backend.prompts.encode([("a red square easynegative", 1)])[0]
    list(backend.render([make_cell(**params)]))
    table = backend.prompts.text_encoder.get_input_embeddings().weight
    expected = {"easynegative": vectors(3, 1), "bad-hands": vectors(2, 2), "learned": vectors(1, 3)}
    for name, wanted in expected.items():
        (ids,) = [ids for first, ids in backend.prompts.embedding_tokens.items()
                  if backend.prompts.tokenizer.convert_ids_to_tokens(first) == embeddings.token_for(name)]
        assert torch.equal(table[ids], wanted), name
    seen = []
    hook = backend.prompts.text_encoder.register_forward_hook(lambda _m, args, _o: seen.append(args[0]))
    try:
        after = backend.prompts.encode([("a red square easynegative", 1)])[0]
    finally:
        hook.remove()
    easy_ids = next(ids for ids in backend.prompts.embedding_tokens.values() if len(ids) == 3)
    assert seen[0][0, 4:7].tolist() == easy_ids  # start, a, red, square, then the three vectors
    assert before.shape != after.shape or not torch.allclose(before, after)  # spelled out, "easynegative" is 2 chunks
    backend.close()


def test_a_negative_embedding_changes_the_image_through_gridgen_run(tmp_path, capsys):
    write_a1111_pt(tmp_path / "with" / "embeddings" / "easynegative.pt", vectors(4, 5))
    grid = """
    grid:
      format: png
      params: {model: gridgen-tiny, steps: 3, width: 32, height: 32, sampler: Euler, prompt: a red square}
    axes:
      negative_prompt: easynegative || blurry
    """
    hashes = {}
    for name in ("with", "without"):
        spec = write_spec(tmp_path / name, grid)
        assert main(["run", str(spec), "--out", str(tmp_path / name / "out"), "--quiet"]) == 0
        lines = (tmp_path / name / "out" / "journal.jsonl").read_text().splitlines()
        hashes[name] = {entry["key"]: entry["hash"] for entry in map(json.loads, lines)}
    assert hashes["with"]["easynegative"] != hashes["without"]["easynegative"]
    assert hashes["with"]["blurry"] == hashes["without"]["blurry"]


def test_an_embedding_is_weighted_like_any_word(folders):
    spec_dir, models_dir = folders
    backend = DiffusersBackend(BackendContext(spec_dir=spec_dir, models_dir=models_dir, device="cpu", cache_bytes=0))
    plain, weighted = (np.asarray(r.image, float) for prompt in ("a easynegative", "a (easynegative:1.5)")
                       for r in backend.render([make_cell(prompt=prompt)]))
    assert np.abs(plain - weighted).mean() > 0.5
    backend.close()


def problems_of(spec_dir: Path, models_dir: Path | None = None, **params) -> list[str]:
    backend = DiffusersBackend(BackendContext(spec_dir=spec_dir, models_dir=models_dir))
    problems = backend.validate(make_cell(**params).params)
    # Each problem is blamed on the param that brought the file in.
    assert all(p.param == (set(params) & {"embedding", "prompt", "negative_prompt"}).pop() for p in problems)
    return [p.message for p in problems]


def test_missing_explicit_embedding_names_where_it_looked(folders):
    spec_dir, models_dir = folders
    (message,) = problems_of(spec_dir, models_dir, embedding=["nope"])
    assert "embedding 'nope' not found" in message
    assert str(spec_dir / "embeddings" / "nope.pt") in message and str(models_dir / "embeddings") in message


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_corrupt_embedding_files_are_validation_errors(tmp_path, suffix):
    path = tmp_path / "embeddings" / f"broken{suffix}"
    path.parent.mkdir()
    path.write_bytes(b"this is not a tensor file")
    (message,) = problems_of(tmp_path, negative_prompt="broken")
    assert f"cannot read embedding file {path}" in message and "re-download" in message


def test_embeddings_for_another_model_or_of_another_kind_are_refused(tmp_path):
    write_a1111_safetensors(tmp_path / "embeddings" / "sdxl.safetensors", torch.zeros(2, 768))
    (message,) = problems_of(tmp_path, prompt="sdxl")
    assert "768-wide vectors" in message and f"takes {WIDTH}" in message
    torch.save({"a": torch.zeros(WIDTH), "b": torch.zeros(WIDTH)}, tmp_path / "embeddings" / "other.pt")
    (message,) = problems_of(tmp_path, prompt="other")
    assert "is not a textual-inversion embedding" in message
    write_a1111_pt(tmp_path / "embeddings" / "huge.pt", torch.zeros(15, WIDTH))
    (message,) = problems_of(tmp_path, prompt="huge")
    assert "15 vectors" in message
