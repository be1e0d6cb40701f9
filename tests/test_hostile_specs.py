"""Malformed and hostile specs through `gridgen validate`: each ends in `FILE:LINE:COL: message` lines and
exit 2, never a traceback, a hang or a memory blow-up; caps are counted before anything is expanded."""

from __future__ import annotations

import os
import struct
import threading
import zlib
from pathlib import Path

import pytest

from gridgen.cli import main
from gridgen.errors import SpecError
from gridgen.spec import load_spec
from tests.spec_helpers import problems_of

BASE = "grid:\n  params: {model: gridgen-tiny, steps: 2, width: 32, height: 32}\n"


def _validate(tmp_path: Path, capsys, body: str | bytes, *flags: str) -> tuple[int, list[str], Path]:
    path = tmp_path / "spec.yaml"
    path.write_bytes(body if isinstance(body, bytes) else body.encode("utf-8", "surrogatepass"))
    code = main(["validate", str(path), *flags])
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if not line.endswith("problem(s) found")], path


def _located(lines: list[str], path: Path, line: int | None = None) -> None:
    assert lines, "no problem printed"
    for text in lines:
        assert "Traceback" not in text
        where, _, message = text.partition(": ")
        file, row, col = where.rsplit(":", 2)
        assert file == str(path) and int(row) >= 1 and int(col) >= 1 and message, text
        if line is not None:
            assert int(row) == line, text


CASES = {
    "format bmp": ("grid: {format: bmp}\naxes:\n  seed: 1, 2\n", 1, "format 'bmp'"),
    "400-digit steps": (BASE + "axes:\n  steps: " + "1" * 400 + "\n", 4, "too large"),
    "400-digit seed in a list": (BASE + "axes:\n  seed: 1, " + "9" * 400 + "\n", 4, "too large"),
    "400-digit cfg_scale": (BASE + "axes:\n  cfg_scale: " + "9" * 400 + ".5\n", 4, "too large"),
    "400-digit width": ("grid:\n  params: {width: " + "9" * 400 + "}\naxes:\n  seed: 1, 2\n", 2, "too large"),
    "NUL": (BASE + "axes:\n  seed: 1,\x00 2\n", 4, "U+0000"),
    "bell": (BASE + "axes:\n  seed: 1, 2\x07\n", 4, "U+0007"),
    "!!int 'x'": (BASE + "axes:\n  seed: !!int 'x'\n", 4, "!!int"),
    "!!timestamp 'x'": (BASE + "axes:\n  seed: !!timestamp 'x'\n", 4, "timestamp"),
    "!!python/object": (BASE + "axes:\n  seed: !!python/object:os.system x\n", 4, "python/object"),
    "1000 levels": (BASE + "axes:\n  seed: " + "[" * 1000 + "]" * 1000 + "\n", 4, "levels deep"),
    "recursive alias": ("a: &a [*a]\n" + BASE + "axes:\n  seed: 1, 2\n", 1, "contains it"),
    "sam_prompt points 5": ("grid:\n  params: {model: gridgen-tiny, sam_prompt: {points: 5}}\naxes:\n  seed: 1\n",
                            2, "points must be a list"),
    "lone surrogate": ('grid:\n  params: {model: gridgen-tiny, prompt: "\\ud800"}\naxes:\n  seed: 1, 2\n', 2,
                       "surrogate"),
    "unknown backend": ("grid:\n  backend: nope\naxes:\n  seed: 1, 2\n", 2, "unknown backend 'nope'"),
    "steps 1:30 (YAML 1.1 sexagesimal)": (BASE.replace("steps: 2", "steps: 1:30") + "axes:\n  seed: 1\n", 2,
                                          "'1:30'"),
    "steps 0x10 (YAML 1.1 hex)": (BASE.replace("steps: 2", "steps: 0x10") + "axes:\n  seed: 1\n", 2, "'0x10'"),
    "x4 model without init_image": ("grid:\n  params: {model: gridgen-tiny-x4, width: 32, height: 32}\n"
                                    "axes:\n  seed: 1, 2\n", 2, "init_image"),
    "seed range 1-100000000": (BASE + "axes:\n  seed: 1-100000000\n", 4, "cap of 10,000 values"),
    "cfg_scale 0-1 [1000000000]": (BASE + "axes:\n  cfg_scale: 0-1 [1000000000]\n", 4, "--max-axis-values"),
    "fill to 100000000": (BASE + "axes:\n  seed: 1, 2, ..., 100000000\n", 4, "100,000,000 values"),
    "seed 1-1000000 x steps 1-1000": (BASE + "axes:\n  seed: 1-1000000\n  steps: 1-1000\n", 4, "cap"),
    "60 two-value axes": (BASE + "axes:\n" + "".join(f"  v{i}:\n    values:\n      a: {{params: {{seed: 1}}}}\n"
                                                      f"      b: {{params: {{seed: 2}}}}\n" for i in range(60)),
                          3, "--max-cells"),
    "9-level alias bomb": ("a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9)) + BASE + "axes:\n  seed: 1\n",
        None, "aliases"),
    "chain of 10 variables": ("variables:\n" + "".join(f"  v{i}: {' '.join([f'v{i + 1}'] * 10)}\n" for i in range(10))
                              + "grid:\n  params: {model: gridgen-tiny, prompt: v0}\naxes:\n  seed: 1, 2\n", 13,
                              "characters long"),
    "mixed-case chain of 10 variables": ("variables:\n" + "".join(f"  v{i}: {' '.join([f'V{i + 1}'] * 10)}\n"
                                                                for i in range(10))
                                         + "grid:\n  params: {model: gridgen-tiny, prompt: v0}\naxes:\n  seed: 1, 2\n",
                                         13, "characters long"),
    "range with a step of 1e-9999": (BASE + "axes:\n  cfg_scale: 1-2 (1e-9999)\n", 4, "over 10^300 values"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_spec_gets_a_located_error(tmp_path, capsys, name):
    body, line, words = CASES[name]
    code, lines, path = _validate(tmp_path, capsys, body)
    assert code == 2
    _located(lines, path, line)
    assert any(words in text for text in lines), lines


def test_utf16_without_a_byte_order_mark_is_named(tmp_path, capsys):
    code, lines, path = _validate(tmp_path, capsys, (BASE + "axes:\n  seed: 1, 2\n").encode("utf-16-le"))
    assert code == 2
    _located(lines, path, 1)
    assert "UTF-16 without a byte-order mark" in lines[0]


def test_utf16_with_a_byte_order_mark_loads(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_bytes((BASE + "axes:\n  seed: 1, 2\n").encode("utf-16"))
    assert load_spec(path).cell_count == 2


def test_include_of_a_proc_file_is_a_located_error(tmp_path, capsys):
    code, lines, _ = _validate(tmp_path, capsys, "include: /proc/self/environ\n" + BASE + "axes:\n  seed: 1, 2\n")
    assert code == 2 and lines and all("Traceback" not in text for text in lines)
    assert any(text.startswith("/proc/self/environ:") and "U+0000" in text for text in lines), lines


def test_init_image_whose_header_claims_100000_pixels_a_side(tmp_path, capsys):
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    (tmp_path / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                                        + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    code, lines, path = _validate(tmp_path, capsys, "grid:\n  params: {model: gridgen-tiny, init_image: bomb.png}\n"
                                                    "axes:\n  seed: 1, 2\n")
    assert code == 2
    _located(lines, path, 2)
    assert any("100000x100000" in text or "pixels" in text for text in lines), lines


@pytest.mark.parametrize("value", ["-3", "0", "x"])
def test_batch_size_must_be_positive(tmp_path, capsys, value):
    path = tmp_path / "spec.yaml"
    path.write_text(BASE + "axes:\n  seed: 1\n")
    with pytest.raises(SystemExit) as exited:
        main(["validate", str(path), "--batch-size", value])
    assert exited.value.code == 2 and "--batch-size" in capsys.readouterr().err


def test_not_a_regular_file_is_refused_without_reading(tmp_path, capsys):
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    answers = []
    reader = threading.Thread(target=lambda: answers.append(main(["validate", str(fifo)])), daemon=True)
    reader.start()
    reader.join(10)
    assert answers == [2], "validating a FIFO hung or did not fail"
    assert "not a regular file" in capsys.readouterr().err
    assert main(["validate", "/dev/zero"]) == 2
    assert "/dev/zero: not a regular file" in capsys.readouterr().err


def test_a_spec_over_the_size_limit_is_refused(tmp_path, capsys):
    code, lines, path = _validate(tmp_path, capsys, BASE + "axes:\n  seed: 1\n" + "# padding\n" * 60_000)
    assert code == 2 and lines == [f"{path}: the file is larger than 512 KiB, more than any grid spec needs; "
                                   "split it with `include:`"]


def test_a_spec_with_too_many_nodes_is_refused_while_parsing(tmp_path, capsys):
    code, lines, path = _validate(tmp_path, capsys, BASE + "axes:\n  seed: [" + ", ".join(["1"] * 25_000) + "]\n")
    assert code == 2 and "more than 20,000 values" in lines[0]
    _located(lines, path, 4)


def test_the_caps_can_be_raised_by_those_who_mean_it(tmp_path, capsys):
    body = BASE + "axes:\n  seed: 1-30\n  steps: 1, 2\n"
    code, lines, path = _validate(tmp_path, capsys, body, "--max-axis-values", "20")
    assert code == 2 and "cap of 20 values per axis" in lines[0]
    _located(lines, path, 4)
    code, lines, _ = _validate(tmp_path, capsys, body, "--max-axis-values", "30", "--max-cells", "50")
    assert code == 2 and "the grid has 60 cells" in lines[0] and "cap of 50 cells" in lines[0]
    assert _validate(tmp_path, capsys, body, "--max-axis-values", "30", "--max-cells", "60")[0] == 0


def test_caps_count_ranges_before_listing_them(tmp_path):
    from gridgen.spec.limits import Limits

    path = tmp_path / "spec.yaml"
    path.write_text(BASE + "axes:\n  seed: 1-1000000000000, 5\n  cfg_scale: 1, 2, ..., 1000000000000\n")
    messages = [p.message for p in problems_of(path, limits=Limits(max_axis_values=100))]
    assert any("1,000,000,000,000 values" in m for m in messages), messages
    assert len(messages) == 2


def test_yaml_12_core_schema(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("grid:\n  params: {model: gridgen-tiny, prompt: no, negative_prompt: on, cfg_scale: 1e1}\n"
                    "axes:\n  seed: 1\n")
    spec = load_spec(path)
    assert spec.base_params["prompt"] == "no" and spec.base_params["negative_prompt"] == "on"
    assert spec.base_params["cfg_scale"] == 10.0


def test_merge_keys_still_work_and_own_keys_win(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("base: &base {model: gridgen-tiny, steps: 3, width: 32}\n"
                    "grid:\n  params:\n    <<: *base\n    steps: 5\naxes:\n  seed: 1\n")
    spec = load_spec(path)
    assert spec.base_params["steps"] == 5 and spec.base_params["width"] == 32


def test_validation_error_reports_every_problem_not_a_traceback(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(BASE + "axes:\n  seed: !!binary aGVsbG8=\n")
    with pytest.raises(SpecError) as raised:
        load_spec(path)
    assert raised.value.problems[0].location.line == 4


def test_set_values_that_are_not_text_are_refused(tmp_path, capsys):
    path = tmp_path / "spec.yaml"
    path.write_text(BASE + "axes:\n  seed: 1\n")
    for value in ("prompt=\udcff", "prompt=a\x00b"):
        assert main(["validate", str(path), "--set", value]) == 2
        assert "not UTF-8 text" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["notes.txt", "weights.pt", "broken.bin", "checkpoint.bin"])
def test_a_file_that_is_not_lora_weights_fails_validation(tmp_path, capsys, name):
    import torch

    file = tmp_path / name
    if name == "checkpoint.bin":
        torch.save({"model.diffusion_model.conv.weight": torch.zeros(2)}, file)  # weights, but no LoRA keys
    else:
        file.write_bytes(b"not weights")
    body = f"grid:\n  params: {{model: gridgen-tiny, steps: 1, width: 32, height: 32, lora: {name}}}\n" \
           "axes:\n  seed: 1\n"
    code, lines, path = _validate(tmp_path, capsys, body)
    assert code == 2
    _located(lines, path, 2)
    assert any(name in text for text in lines), lines
