"""The ray executor on one local Ray instance shared by the whole test session: same files as the local
executor, a killed worker loses nothing, model affinity, failed batches, resume after a stop."""

from __future__ import annotations

import json
import shutil
import threading
from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image

from gridgen.errors import GridError
from gridgen.executors.common import count_work
from gridgen.executors.ray_executor import run_ray
from gridgen.executors.ray_pool import Job, pick_job
from gridgen.executors.ray_worker import size_workers
from gridgen.runner import RunOptions, execute, prepare
from gridgen.store import Store
from gridgen.tiny import TINY_MODEL_DIR
from tests.spec_helpers import write_spec

ray = pytest.importorskip("ray")

GRID = """
grid:
  title: ray
  format: png
  params: {model: gridgen-tiny, steps: 3, width: 32, height: 32, sampler: Euler}
axes:
  prompt: a red circle || a blue square
  cfg_scale: 1, 7
  seed: 1, 2, 3
"""


@pytest.fixture(scope="session")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024 * 1024, log_to_driver=False)
    yield ray
    ray.shutdown()


def _ray_options(out: Path, batch_size: int = 2, workers: int = 2) -> RunOptions:
    return RunOptions(out=out, batch_size=batch_size, executor="ray", workers=workers)


def _journal(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


class _SignalOnFirstWrite(Store):
    """A store that sets `landed` once the first image is written (the tests' trigger mid-grid)."""

    landed: threading.Event

    def write(self, result):
        super().write(result)
        self.landed.set()


def _store_signalling(prepared) -> _SignalOnFirstWrite:
    store = _SignalOnFirstWrite(prepared.out_dir, prepared.plan.spec, prepared.plan.random_seed)
    store.landed = threading.Event()
    return store


# Pure scheduling decisions: no Ray needed.

def test_pick_job_prefers_the_model_a_worker_has_loaded():
    a1, a2, b1, c1 = (Job([], key, ("batch", key)) for key in ("A", "A", "B", "C"))
    queue = [a1, a2, b1, c1]
    assert pick_job(0, "B", queue, {"A"}, {0, 1}) is b1  # its own model first, wherever it is queued
    assert pick_job(0, "Z", queue, {"A"}, {0, 1}) is b1  # else a model no other worker holds
    assert pick_job(0, "Z", queue, {"A", "B", "C"}, {0, 1}) is a1  # else the oldest batch
    assert pick_job(0, "Z", queue, set(), {0, 1}, same_model_only=True) is None
    a1.avoid.add(0)  # it failed on worker 0: another ready worker gets it
    assert pick_job(0, "A", queue, set(), {0, 1}) is a2
    assert pick_job(1, "A", queue, set(), {0, 1}) is a1
    assert pick_job(0, "A", [a1], set(), {0}) is a1  # unless worker 0 is the only one left


def test_size_workers_per_gpu_or_per_two_cpus():
    assert size_workers(4, 32, 32, 1, None, "auto") == (4, {"num_gpus": 1, "num_cpus": 1.0}, 8)
    assert size_workers(4, 32, 32, 2, None, "auto")[0] == 2
    assert size_workers(0, 2, 2, 1, None, "auto") == (1, {"num_cpus": 2.0}, 2)
    assert size_workers(0, 2, 2, 1, 2, "auto") == (2, {"num_cpus": 1.0}, 1)
    assert size_workers(0, 2, 2, 1, 4, "auto") == (4, {"num_cpus": 0.5}, 1)
    assert size_workers(4, 32, 32, 1, None, "cpu")[1] == {"num_cpus": 2.0}  # --device cpu: CPU workers
    with pytest.raises(GridError, match="no GPU"):
        size_workers(0, 8, 8, 1, None, "cuda")
    with pytest.raises(GridError, match="gpus-per-worker"):
        size_workers(1, 8, 8, 2, None, "auto")


def test_failed_cells_are_journaled_and_not_done(tmp_path):
    spec = write_spec(tmp_path, GRID)
    options = RunOptions(out=tmp_path / "out")
    prepared = prepare(spec, options)
    store = Store(prepared.out_dir, prepared.plan.spec, prepared.plan.random_seed)
    cell = next(prepared.plan.cells())
    store.write_failure(cell, "boom")
    entry = _journal(prepared.out_dir)[0]
    assert entry["key"] == cell.key and entry["failed"] is True and entry["error"] == "boom"
    again = Store(prepared.out_dir, prepared.plan.spec, prepared.plan.random_seed)
    assert not again.is_done(cell.key) and count_work(prepared.plan, again) == (12, 0)


# On the shared local Ray instance.

def test_ray_and_local_write_byte_identical_files(ray_cluster, tmp_path):
    spec = write_spec(tmp_path, GRID)
    local = RunOptions(out=tmp_path / "local", batch_size=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each of the two ray workers on two CPUs
    try:
        assert execute(prepare(spec, local), local, show_progress=False).rendered == 12
    finally:
        torch.set_num_threads(threads)
    remote = _ray_options(tmp_path / "ray")
    summary = execute(prepare(spec, remote), remote, show_progress=False)
    assert (summary.rendered, summary.failed, summary.interrupted) == (12, 0, False)
    for folder in ("images", "thumbs"):
        ours, theirs = _files(tmp_path / "local" / folder), _files(tmp_path / "ray" / folder)
        assert len(ours) == 12 and ours.keys() == theirs.keys()
        assert [name for name in ours if ours[name] != theirs[name]] == []
    assert "timings" in _journal(tmp_path / "ray")[0]  # timings live in the journal, not in the images
    assert len(summary.workers) == 2 and sum(w["cells"] for w in summary.workers) == 12
    assert sum("images/s while busy" in note for note in summary.notes) == 2


def _kill_one_worker(landed: threading.Event, earlier: set[str], killed: list[str]) -> None:
    landed.wait(120)
    for name in sorted(set(ray.util.list_named_actors()) - earlier):
        if name.startswith("gridgen-"):
            ray.kill(ray.get_actor(name), no_restart=True)
            killed.append(name)
            return


def test_killed_worker_loses_nothing(ray_cluster, tmp_path):
    spec = write_spec(tmp_path, GRID.replace("seed: 1, 2, 3", "seed: 1, 2, 3, 4, 5, 6"))
    options = _ray_options(tmp_path / "out", batch_size=1)
    prepared = prepare(spec, options)
    store = _store_signalling(prepared)
    killed: list[str] = []
    earlier = set(ray.util.list_named_actors())  # workers of earlier tests may not be gone yet
    killer = threading.Thread(target=_kill_one_worker, args=(store.landed, earlier, killed))
    killer.start()
    summary = run_ray(prepared.plan, store, prepared.context, workers=2, show_progress=False)
    killer.join()
    assert killed, "no worker was killed"
    assert (summary.rendered, summary.failed, summary.interrupted) == (24, 0, False)
    assert any(w["died"] for w in summary.workers)
    assert any("re-queued" in note for note in summary.notes)
    journal = _journal(tmp_path / "out")
    assert Counter(e["key"] for e in journal) == Counter({c.key: 1 for c in prepared.plan.cells()})
    for entry in journal:
        Image.open(tmp_path / "out" / entry["file"]).load()


def test_model_affinity_loads_each_model_once_per_worker(ray_cluster, tmp_path):
    copy = tmp_path / "tiny-copy"
    shutil.copytree(TINY_MODEL_DIR, copy)
    spec = write_spec(tmp_path, f"""
        grid:
          params: {{steps: 3, width: 32, height: 32, sampler: Euler}}
        axes:
          model:
            values:
              tiny: model=gridgen-tiny
              copy: {{params: {{model: "{copy}"}}}}
          seed: 1, 2, 3, 4, 5, 6
        """)
    options = _ray_options(tmp_path / "out", batch_size=1)
    summary = execute(prepare(spec, options), options, show_progress=False)
    assert (summary.rendered, summary.failed) == (12, 0)
    loads = [w["loads"] for w in summary.workers]
    assert loads and any(loads), loads
    assert all(count == 1 for per_worker in loads for count in per_worker.values()), loads
    assert len({model for per_worker in loads for model in per_worker}) == 2


def test_batch_failing_three_times_is_journaled_and_the_rest_completes(ray_cluster, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(TINY_MODEL_DIR, broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not weights")
    spec = write_spec(tmp_path, f"""
        grid:
          params: {{steps: 3, width: 32, height: 32, sampler: Euler}}
        axes:
          model:
            values:
              tiny: model=gridgen-tiny
              broken: {{params: {{model: "{broken}"}}}}
          seed: 1, 2, 3
        """)
    options = _ray_options(tmp_path / "out", batch_size=4)
    summary = execute(prepare(spec, options), options, show_progress=False)
    assert (summary.rendered, summary.failed) == (3, 3)
    assert any("cannot load model" in error and "failed 3 times" in error for error in summary.errors)
    failed = [e for e in _journal(tmp_path / "out") if e.get("failed")]
    assert sorted(e["key"] for e in failed) == ["broken/1", "broken/2", "broken/3"]
    assert all("cannot load model" in e["error"] for e in failed)
    prepared = prepare(spec, options)  # a rerun would render the failed cells again
    store = Store(prepared.out_dir, prepared.plan.spec, prepared.plan.random_seed)
    assert count_work(prepared.plan, store) == (3, 0)


def test_resume_after_stopping_the_driver(ray_cluster, tmp_path):
    spec = write_spec(tmp_path, GRID.replace("seed: 1, 2, 3", "seed: 1, 2, 3, 4, 5, 6"))
    options = _ray_options(tmp_path / "out", batch_size=2)
    prepared = prepare(spec, options)
    store = _store_signalling(prepared)
    first = run_ray(prepared.plan, store, prepared.context, workers=2, show_progress=False, stop=store.landed)
    assert first.interrupted and 0 < first.rendered < 24 and first.failed == 0
    journal = _journal(tmp_path / "out")
    assert len(journal) == first.rendered
    stamps = {e["file"]: (tmp_path / "out" / e["file"]).stat().st_mtime_ns for e in journal}
    again = execute(prepare(spec, options), options, show_progress=False)
    assert (again.resumed, again.rendered, again.interrupted) == (first.rendered, 24 - first.rendered, False)
    journal = _journal(tmp_path / "out")
    assert sorted(e["key"] for e in journal) == sorted(c.key for c in prepared.plan.cells())  # each once
    assert all((tmp_path / "out" / f).stat().st_mtime_ns == stamp for f, stamp in stamps.items())
    data = json.loads((tmp_path / "out" / "grid.json").read_text())
    assert data["progress"]["done"] == 24 and data["progress"]["running"] is False


def test_ray_brings_back_a_sam_edits_mask_and_overlay(ray_cluster, tmp_path):
    from gridgen.tiny.sam import build_processor, build_sam
    from tests.test_image_modes import picture

    picture(64, 64).save(tmp_path / "input.png")
    torch.manual_seed(0)
    build_sam().save_pretrained(tmp_path / "sam")
    build_processor().save_pretrained(tmp_path / "sam")
    spec = write_spec(tmp_path, """
        grid:
          format: png
          params: {init_image: input.png, sam_model: sam, sam_prompt: point 20 30, inpainter: opencv-telea,
                   inpaint_mode: remove}
        axes:
          sam_mask: 0, 1
        """)
    local = RunOptions(out=tmp_path / "local", batch_size=2)
    execute(prepare(spec, local), local, show_progress=False)
    remote = _ray_options(tmp_path / "ray", workers=1)
    assert execute(prepare(spec, remote), remote, show_progress=False).rendered == 2
    ours, theirs = _files(tmp_path / "local" / "images"), _files(tmp_path / "ray" / "images")
    assert len(ours) == 6 and ours == theirs  # each cell's image, mask and overlay, byte for byte
    assert all(set(entry["files"]) == {"mask", "overlay"} for entry in _journal(tmp_path / "ray"))


def test_a_backend_from_another_package_renders_on_ray_as_locally(ray_cluster, tmp_path, capsys):
    from gridgen.cli import main  # `gridgen run`, on the session's Ray instance

    spec = write_spec(tmp_path, """
        grid:
          backend: swatch
          format: png
          params: {swatch_memory: 1}
        axes:
          pattern: stripes, checks, solid
          seed: 1, 2
        """)
    assert main(["run", str(spec), "--out", str(tmp_path / "local"), "--quiet", "--batch-size", "2"]) == 0
    capsys.readouterr()
    assert main(["run", str(spec), "--out", str(tmp_path / "ray"), "--quiet", "--batch-size", "2",
                 "--executor", "ray", "--workers", "2"]) == 0
    printed = capsys.readouterr()
    assert "rendered 6, skipped 0, already done 0, failed 0" in printed.out
    for folder in ("images", "thumbs"):
        ours, theirs = _files(tmp_path / "local" / folder), _files(tmp_path / "ray" / folder)
        assert len(ours) == 6 and ours == theirs
    # Each worker built its own swatch backend by name and halved its batches of 2 (out of memory) to 1. A worker
    # may find the queue empty when the other was faster, and then draws none.
    drawn = [line for line in printed.out.splitlines()
             if line.startswith("  swatch: drew batches of") and not line.endswith(" none")]
    assert drawn and all(set(line.split("of ", 1)[1].split(", ")) == {"1"} for line in drawn), printed.out
    assert sum(len(line.split(", ")) for line in drawn) == 6
    cells = json.loads((tmp_path / "ray" / "grid.json").read_text())["cells"]
    assert len(cells) == 6 and all("Size: 64x48" in cell["parameters"] for cell in cells.values())
