"""What a run leaves on disk: resuming never keeps an image rendered with other params, a torn journal line
is healed, files get the permissions the umask gives, images carry no absolute paths of the machine, and
the stage cache's spill files are data, not pickles."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from gridgen.cli import main
from gridgen.fsutil import append_line, atomic_write_text
from gridgen.metadata import read_metadata
from gridgen.store import read_journal

SPEC = ("grid:\n  params: {model: gridgen-tiny, steps: 2, width: 32, height: 32, sampler: Euler, prompt: a dot}\n"
        "axes:\n  seed: 1, 2\n")


def _run(spec: Path, out: Path, *flags: str) -> int:
    return main(["run", str(spec), "--out", str(out), "--quiet", *flags])


@pytest.fixture
def spec(tmp_path) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC)
    return path


def _journal_lines(out: Path) -> list[str]:
    return (out / "journal.jsonl").read_text().splitlines()


def test_resume_renders_again_the_cells_whose_params_changed(spec, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run(spec, out) == 0
    before = (out / "images" / "1.png").read_bytes()
    capsys.readouterr()
    assert _run(spec, out, "--set", "steps=3") == 0
    captured = capsys.readouterr()
    assert "2 cell(s) on disk were rendered with other params (steps)" in captured.err
    assert "'steps' 2 -> 3" not in captured.err and "steps 2 -> 3" in captured.err
    assert "rendered 2," in captured.out
    entries = read_journal(out / "journal.jsonl")
    assert {entry["params"]["steps"] for entry in entries.values()} == {3}
    assert read_metadata(out / "images" / "1.png")["gridgen"]["params"]["steps"] == 3
    assert (out / "images" / "1.png").read_bytes() != before
    grid = json.loads((out / "grid.json").read_text())
    assert {cell["params"]["steps"] for cell in grid["cells"].values()} == {3}
    assert _run(spec, out, "--set", "steps=3") == 0  # unchanged now: nothing renders
    assert "rendered 0," in capsys.readouterr().out


def test_a_torn_last_journal_line_is_skipped_and_the_next_record_starts_a_new_line(spec, tmp_path, capsys, caplog):
    out = tmp_path / "out"
    assert _run(spec, out) == 0
    journal = out / "journal.jsonl"
    lines = _journal_lines(out)
    journal.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])  # power lost mid-write, no newline
    capsys.readouterr()
    assert _run(spec, out) == 0
    assert "rendered 1," in capsys.readouterr().out
    assert any("not a whole journal line" in record.getMessage() for record in caplog.records)
    healed = _journal_lines(out)
    assert len(healed) == 3 and json.loads(healed[2])["key"] == json.loads(lines[1])["key"]
    assert len(read_journal(journal)) == 2


def test_append_line_starts_a_new_line_after_a_torn_one(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text('{"key": "a"}\n{"key": "b", "fi')
    append_line(path, '{"key": "c"}')
    assert path.read_text().splitlines() == ['{"key": "a"}', '{"key": "b", "fi', '{"key": "c"}']


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_every_file_written_honours_the_umask(spec, tmp_path, mask):
    previous = os.umask(mask)
    try:
        atomic_write_text(tmp_path / "alone.txt", "x")
        assert stat.S_IMODE((tmp_path / "alone.txt").stat().st_mode) == 0o666 & ~mask
        out = tmp_path / "out"
        assert _run(spec, out) == 0
    finally:
        os.umask(previous)
    files = [path for path in out.rglob("*") if path.is_file()]
    assert {"index.html", "data.js", "grid.json", "journal.jsonl", "spec.yaml", "1.png", "1.webp"} <= \
        {path.name for path in files}
    modes = {path.relative_to(out).as_posix(): oct(stat.S_IMODE(path.stat().st_mode)) for path in files}
    assert set(modes.values()) == {oct(0o666 & ~mask)}, modes


def test_image_metadata_holds_no_absolute_path_of_the_machine(spec, tmp_path):
    out = tmp_path / "out"
    assert _run(spec, out) == 0

    def strings(value):
        if isinstance(value, dict):
            for item in value.values():
                yield from strings(item)
        elif isinstance(value, list):
            for item in value:
                yield from strings(item)
        elif isinstance(value, str):
            yield value

    for image in ("images/1.png", "thumbs/1.webp"):
        record = read_metadata(out / image)["gridgen"]
        assert record["metadata"]["model_path"] == "gridgen-tiny"
        assert not [text for text in strings(record) if text.startswith("/")], record
    for line in _journal_lines(out):
        assert not [text for text in strings(json.loads(line)["metadata"]) if text.startswith("/")]


def test_spilled_stage_outputs_are_safetensors_and_never_unpickled(tmp_path):
    import numpy as np
    import torch
    from PIL import Image

    from gridgen.backends.sd.stages.cache import StageCache

    cache = StageCache(budget_bytes=0, spill_dir=tmp_path)
    image = Image.new("RGB", (5, 3), (10, 20, 30))
    cache.put("base", (image, {"seed": 1, "sizes": [5, 3]}))
    cache.put("masks", (np.ones((3, 4, 4), bool), np.array([0.5, 0.25], np.float32)))
    cache.put("latent", torch.arange(6.0).reshape(2, 3))
    files = sorted(path.name for path in tmp_path.iterdir())
    assert files == ["base.safetensors", "latent.safetensors", "masks.safetensors"]
    for name in files:
        header = (tmp_path / name).read_bytes()
        assert header[8:9] == b"{"  # a safetensors header: its length, then JSON
    restored, facts = cache.get("base")
    assert restored.tobytes() == image.tobytes() and restored.mode == "RGB" and facts == {"seed": 1, "sizes": [5, 3]}
    masks, scores = cache.get("masks")
    assert masks.dtype == bool and masks.shape == (3, 4, 4) and scores.tolist() == [0.5, 0.25]
    assert torch.equal(cache.get("latent"), torch.arange(6.0).reshape(2, 3))
    # someone with write access to the output folder plants a pickle that would run code when loaded
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    import io

    buffer = io.BytesIO()
    torch.save({"x": Payload()}, buffer)
    for name in ("planted.safetensors", "planted.pt"):
        (tmp_path / name).write_bytes(buffer.getvalue())
    assert cache.get("planted") is None and not marker.exists()
