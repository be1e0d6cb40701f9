"""The `gridgen` command line end to end: exit codes, located errors, real runs, resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from gridgen.cli import main
from gridgen.metadata import read_metadata
from tests.spec_helpers import SHARED_FIXTURES, write_spec

REPO = Path(__file__).resolve().parents[1]

SMALL_GRID = """
grid:
  title: small
  format: png
  params: {model: gridgen-tiny, steps: 3, width: 32, height: 32, sampler: Euler}
axes:
  prompt: a red circle || a blue square
  cfg_scale: 1, 7
  seed:
    title: Seed
    values:
      s1: seed=1
      s2: {title: two, params: {seed: 2}}
      s3: {title: three, skip: true, params: {seed: 3}}
"""


def _shared(name: str) -> Path:
    path = SHARED_FIXTURES / name
    if not path.exists():
        pytest.skip(f"the shared Infinity Grid fixture {path} is absent")
    return path


def test_params_lists_the_registry(capsys):
    assert main(["params"]) == 0
    out = capsys.readouterr().out
    assert "cfg_scale: float (default 7.0)" in out and "aliases: cfg, scale, guidance_scale" in out


def test_validate_ok_and_bad(tmp_path, capsys):
    good = write_spec(tmp_path, SMALL_GRID)
    assert main(["validate", str(good)]) == 0
    assert "8 to render, 4 skipped" in capsys.readouterr().out
    bad = write_spec(tmp_path, "axes:\n  steps: 0, 5\n  cfg_scale: x\n", name="bad.yaml")
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2:10: steps must be" in err
    assert f"{bad}:3:14: axis 'cfg_scale': 'x' is not a number" in err


def test_bad_set_and_unknown_backend(tmp_path, capsys):
    good = write_spec(tmp_path, SMALL_GRID)
    assert main(["validate", str(good), "--set", "steps"]) == 2
    assert "--set expects key=value" in capsys.readouterr().err
    assert main(["validate", str(good), "--set", "steps=-3"]) == 2
    assert "<command line>: steps must be" in capsys.readouterr().err
    assert main(["validate", str(good), "--backend", "nope"]) == 2
    assert "diffusers" in capsys.readouterr().err


def test_megagrid_dry_run_reports_each_missing_model(capsys):
    path = _shared("megagrid.yml")
    assert main(["run", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    for name in ("sd-v1-5-pruned-emaonly", "sd-v2-1_768-ema-pruned", "wd-v1-3-float32", "nai-anime-final-pruned",
                 "sd-1-5-vae-ft-mse-840000-ema-pruned", "kl-f8-anime2"):
        lines = [line for line in err.splitlines() if f"'{name}' not found" in line]
        assert lines, f"no error names {name}"
        assert lines[0].startswith(f"{path}:")
    assert "hypernet" in err  # the <hypernet:...> prompt tags are reported, not silently dropped


def test_short_example_renders_unchanged(tmp_path, capsys):
    path = _shared("short_example.yml")
    out = tmp_path / "short"
    # Smaller images keep this fast; the spec itself is used as written.
    code = main(["run", str(path), "--out", str(out), "--set", "width=32", "--set", "height=32", "--quiet",
                 "--batch-size", "16"])
    assert code == 0, capsys.readouterr().err
    journal = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]
    assert len(journal) == 540  # 720 cells, 180 of them on the skipped `secret_option` value
    entry = next(e for e in journal if e["key"] == "euler_a/15/9/2/dog/outer_space")
    assert entry["params"]["prompt"] == "A photograph of a dog running in a distant planet deep in outer space"
    assert entry["params"]["sampler"] == "Euler a" and entry["params"]["cfg_scale"] == 9.0
    image = Image.open(out / entry["file"])
    assert image.size == (256, 256) and image.format == "JPEG"  # OutWidth/OutHeight and `format: jpg`
    assert "Steps: 15, Sampler: Euler a, CFG scale: 9, Seed: 2" in read_metadata(out / entry["file"])["parameters"]
    data = json.loads((out / "grid.json").read_text())
    assert data["page"]["x_axis"] == "sampler" and data["progress"]["done"] == 540


def test_run_writes_the_output_folder(tmp_path, capsys):
    spec = write_spec(tmp_path, SMALL_GRID)
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "rendered 8, skipped 4, already done 0, failed 0" in printed
    assert str((out / "index.html").resolve()) in printed
    for name in ("index.html", "data.js", "grid.json", "spec.yaml", "journal.jsonl"):
        assert (out / name).is_file(), name
    image_path = out / "images" / "a_blue_square" / "7" / "s2.png"
    meta = read_metadata(image_path)
    assert meta["parameters"].startswith("a blue square\n")
    assert "CFG scale: 7, Seed: 2, Size: 32x32" in meta["parameters"]
    assert meta["gridgen"]["key"] == "a_blue_square/7/s2"
    assert Image.open(out / "thumbs" / "a_blue_square" / "7" / "s2.webp").format == "WEBP"
    assert not list(out.rglob("*s3.png"))  # skipped values are not rendered
    data_js = (out / "data.js").read_text()
    assert data_js.startswith("window.GRIDGEN = ")
    # A second run renders nothing; --overwrite renders everything again.
    assert main(["run", str(spec), "--out", str(out), "--quiet"]) == 0
    assert "rendered 0, skipped 4, already done 8" in capsys.readouterr().out
    assert main(["run", str(spec), "--out", str(out), "--quiet", "--overwrite"]) == 0
    assert "rendered 8, skipped 4, already done 0" in capsys.readouterr().out


def test_stage_cache_over_its_budget_spills_to_the_output_folder(tmp_path, capsys):
    spec = write_spec(tmp_path, SMALL_GRID.replace("title: small", "title: small\n  outpath: rendered"))
    assert main(["run", str(spec), "--quiet", "--cache-mb", "0"]) == 0
    assert "rendered 8" in capsys.readouterr().out
    # The backend was built knowing the output folder (the spec's outpath), so each base image, past the
    # zero budget, went to its .cache/ folder.
    assert len(list((tmp_path / "rendered" / ".cache").glob("*.safetensors"))) == 8


def test_random_seed_is_recorded_and_kept_on_resume(tmp_path, capsys):
    spec = write_spec(tmp_path, SMALL_GRID.replace("s1: seed=1", "s1: seed=-1"))
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out), "--quiet"]) == 0
    data = json.loads((out / "grid.json").read_text())
    chosen = data["random_seed"]
    assert data["cells"]["a_red_circle/1/s1"]["seed"] == chosen
    (out / "journal.jsonl").write_text("")  # forget the cells, keep grid.json
    assert main(["run", str(spec), "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "grid.json").read_text())["cells"]["a_red_circle/1/s1"]["seed"] == chosen


def _gridgen(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gridgen.cli", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _journal_lines(out: Path) -> int:
    path = out / "journal.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


SLOW_GRID = """
grid:
  params: {model: gridgen-tiny, steps: 40, width: 64, height: 64, sampler: DPM++ 2M}
axes:
  seed: 1-24
"""


def test_resume_after_sigkill(tmp_path):
    spec = write_spec(tmp_path, SLOW_GRID)
    out = tmp_path / "out"
    proc = _gridgen("run", str(spec), "--out", str(out), "--quiet", "--batch-size", "1")
    deadline = time.monotonic() + 240
    while _journal_lines(out) < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = _journal_lines(out)
    assert 3 <= done_before < 24, "the run was not killed mid-grid"
    journal = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]
    stamps = {e["file"]: os.stat(out / e["file"]).st_mtime_ns for e in journal}
    for image in (out / "images").rglob("*.png"):
        Image.open(image).load()  # every image under its real name is whole
    rerun = _gridgen("run", str(spec), "--out", str(out), "--quiet")
    stdout, stderr = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, stderr
    assert f"already done {done_before}" in stdout
    assert f"rendered {24 - done_before}," in stdout
    assert _journal_lines(out) == 24
    assert not list(out.rglob(".*.tmp"))
    assert all(os.stat(out / f).st_mtime_ns == stamp for f, stamp in stamps.items())  # nothing redone


def test_ctrl_c_finishes_the_batch_and_exits_130(tmp_path):
    spec = write_spec(tmp_path, SLOW_GRID)
    out = tmp_path / "out"
    proc = _gridgen("run", str(spec), "--out", str(out), "--quiet", "--batch-size", "1")
    deadline = time.monotonic() + 240
    while _journal_lines(out) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 130, stderr
    assert "run the same command again to resume" in stderr
    done = _journal_lines(out)
    assert done < 24
    data = json.loads((out / "grid.json").read_text())
    assert data["progress"]["done"] == done and data["progress"]["running"] is False


def test_output_cut_short_by_the_reader_is_no_traceback():
    """`gridgen validate --json SPEC | head -1`: the reader closes the pipe early; gridgen stops quietly."""
    gridgen = Path(sys.executable).with_name("gridgen")
    reader = subprocess.Popen(["head", "-c", "1"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    writer = subprocess.run([str(gridgen), "validate", "--json", "grids/demo.yaml"], stdout=reader.stdin,
                            stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent, timeout=120)
    reader.stdin.close()
    reader.wait(timeout=30)
    assert "Traceback" not in writer.stderr and "BrokenPipe" not in writer.stderr, writer.stderr
    assert writer.returncode in (0, 141)
