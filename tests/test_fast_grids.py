"""Fast grids: batching never changes a cell, shared stages run once, out-of-memory halves the batch, CPU
batches split across workers and the VAE decode runs off the render thread without changing an image."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gridgen.backends.diffusers_backend import DiffusersBackend
from gridgen.backends.sd.denoise.cpu_shards import BatchShards
from gridgen.backends.sd.images import images as image_ops
from gridgen.runner import RunOptions, execute, prepare
from tests.spec_helpers import write_spec

MIXED_GRID = """
grid:
  params: {model: gridgen-tiny, steps: 6, width: 32, height: 32, sampler: DPM++ 2M}
axes:
  prompt: a red circle || a blue square on a gray background
  negative_prompt: blurry || ''
  seed: 11, 12
  cfg_scale: 1, 7.5
"""

UPSCALE_GRID = """
grid:
  params: {model: gridgen-tiny, steps: 4, width: 32, height: 32, sampler: Euler}
axes:
  seed: 1, 2, 3
  upscaler: none, nearest, bicubic, lanczos
  upscale_by: 1.5, 2
"""


def _run(spec: Path, out: Path, **options) -> tuple[dict[str, np.ndarray], object]:
    opts = RunOptions(out=out, **options)
    summary = execute(prepare(spec, opts), opts, show_progress=False)
    journal = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]
    return {e["key"]: np.asarray(Image.open(out / e["file"]), dtype=np.float32) for e in journal}, summary


def test_batched_cells_match_cells_rendered_alone(tmp_path):
    spec = write_spec(tmp_path, MIXED_GRID)
    alone, _ = _run(spec, tmp_path / "alone", batch_size=1)
    batched, _ = _run(spec, tmp_path / "batched", batch_size=8)
    assert alone.keys() == batched.keys() and len(alone) == 16
    worst = max(np.abs(alone[key] - batched[key]).mean() for key in alone)
    assert worst <= 1.0, f"mean absolute error {worst:.3f}/255 between batch 1 and batch 8"


def _count_denoised(monkeypatch) -> list[int]:
    sizes: list[int] = []
    original = DiffusersBackend._denoise

    def counting(self, batch):
        sizes.append(len(batch))
        return original(self, batch)

    monkeypatch.setattr(DiffusersBackend, "_denoise", counting)
    return sizes


def test_each_base_image_is_rendered_once_across_later_stages(tmp_path, monkeypatch):
    sizes = _count_denoised(monkeypatch)
    spec = write_spec(tmp_path, UPSCALE_GRID)
    images, summary = _run(spec, tmp_path / "out", batch_size=8)
    assert len(images) == 24
    assert sum(sizes) == 3  # one base image per seed, whatever the upscaler and factor
    assert images["2/lanczos/2"].shape == (64, 64, 3) and images["2/none/2"].shape == (32, 32, 3)
    assert "stage cache: 21 hits, 3 misses, 0 spilled to disk" in summary.notes


def test_out_of_memory_halves_the_batch_and_keeps_every_image(tmp_path, monkeypatch):
    spec = write_spec(tmp_path, MIXED_GRID)
    reference, _ = _run(spec, tmp_path / "reference", batch_size=8)
    sizes: list[int] = []
    original = DiffusersBackend._denoise

    def limited(self, batch):
        sizes.append(len(batch))
        if len(batch) > 2:  # a device that fits two cells at a time
            raise torch.OutOfMemoryError("fake allocator limit")
        return original(self, batch)

    monkeypatch.setattr(DiffusersBackend, "_denoise", limited)
    images, summary = _run(spec, tmp_path / "limited", batch_size=8)
    assert summary.failed == 0 and images.keys() == reference.keys()
    assert all(np.abs(images[key] - reference[key]).mean() <= 1.0 for key in images)
    assert max(size for size in sizes) == 8 and sizes[-1] <= 2


def test_cpu_shards_split_a_batch_without_changing_a_cell(tmp_path):
    spec = write_spec(tmp_path, MIXED_GRID)
    whole, _ = _run(spec, tmp_path / "whole", batch_size=8, cpu_shards=1)
    # Three workers over batches whose guided rows differ (CFG 1 cells have no unconditional half).
    split, _ = _run(spec, tmp_path / "split", batch_size=8, cpu_shards=3)
    assert whole.keys() == split.keys()
    assert max(np.abs(whole[key] - split[key]).mean() for key in whole) <= 1.0
    entry = json.loads((tmp_path / "split" / "journal.jsonl").read_text().splitlines()[0])
    assert entry["metadata"]["options"]["cpu_shards"] == 3


def test_batch_shards_slice_every_batched_input_and_join_the_outputs():
    seen = []

    def forward(sample, scale, context=None, extra=None):
        seen.append((sample.shape[0], context.shape[0], extra["rows"].shape[0], extra["fixed"].shape[0]))
        return {"sample": sample * scale + context.sum(dim=1, keepdim=True)}["sample"], scale

    shards = BatchShards(3)
    try:
        sample, context = torch.arange(7.0).view(7, 1), torch.ones(7, 2)
        extra = {"rows": torch.zeros(7), "fixed": torch.zeros(2)}
        out, scale = shards.wrap(forward)(sample, 2.0, context=context, extra=extra)
    finally:
        shards.close()
    assert torch.equal(out, sample * 2 + 2) and scale == 2.0
    assert sorted(seen) == [(2, 2, 2, 2), (2, 2, 2, 2), (3, 3, 3, 2)]


def test_the_vae_decode_runs_off_the_render_thread(tmp_path, monkeypatch):
    threads: list[str] = []
    original = image_ops.decode

    def recording(vae, latents, tiling="auto"):
        threads.append(threading.current_thread().name)
        return original(vae, latents, tiling)

    monkeypatch.setattr(image_ops, "decode", recording)
    images, summary = _run(write_spec(tmp_path, MIXED_GRID), tmp_path / "out", batch_size=8)
    assert len(images) == 16 and summary.failed == 0
    assert threads and all(name.startswith("gridgen-decode") for name in threads)


def test_out_of_memory_in_the_decode_decodes_one_image_at_a_time(tmp_path, monkeypatch):
    spec = write_spec(tmp_path, MIXED_GRID)
    reference, _ = _run(spec, tmp_path / "reference", batch_size=8)
    original = image_ops.decode

    def limited(vae, latents, tiling="auto"):
        if latents.shape[0] > 1:
            raise torch.OutOfMemoryError("fake allocator limit")
        return original(vae, latents, tiling)

    monkeypatch.setattr(image_ops, "decode", limited)
    images, summary = _run(spec, tmp_path / "limited", batch_size=8)
    assert summary.failed == 0 and images.keys() == reference.keys()
    assert all(np.abs(images[key] - reference[key]).mean() <= 1.0 for key in images)


def test_a_failed_decode_fails_its_cells_and_a_rerun_renders_them(tmp_path, monkeypatch):
    spec = write_spec(tmp_path, MIXED_GRID)

    def no_memory(vae, latents, tiling="auto"):
        raise torch.OutOfMemoryError("fake allocator limit")

    options = RunOptions(out=tmp_path / "out", batch_size=8)
    with monkeypatch.context() as patched:
        patched.setattr(image_ops, "decode", no_memory)
        summary = execute(prepare(spec, options), options, show_progress=False)
    assert summary.failed == 16 and summary.rendered == 0
    assert any("out of device memory decoding" in error for error in summary.errors)
    images, summary = _run(spec, tmp_path / "out", batch_size=8)
    assert summary.failed == 0 and len(images) == 16


def _peak_rss_mb(spec: Path, out: Path) -> float:
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across fork and exec, so a child would
    # report at least the (large) RSS of the test process that started it.
    code = ("import re, sys\n"
            "from gridgen.cli import main\n"
            f"code = main(['run', {str(spec)!r}, '--out', {str(out)!r}, '--quiet', '--batch-size', '16'])\n"
            "status = open('/proc/self/status').read()\n"
            "print(int(re.search(r'VmHWM:\\s+(\\d+) kB', status).group(1)) / 1024)\n"
            "sys.exit(code)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    return float(done.stdout.strip().splitlines()[-1])


@pytest.mark.timeout(900)
def test_memory_stays_flat_as_the_grid_grows(tmp_path):
    grid = "grid:\n  params: {model: gridgen-tiny, steps: 1, width: 32, height: 32, sampler: Euler}\naxes:\n"
    small = write_spec(tmp_path, grid + "  seed: 1-250\n", name="small.yaml")
    large = write_spec(tmp_path, grid + "  seed: 1-1000\n", name="large.yaml")
    small_mb = _peak_rss_mb(small, tmp_path / "small")
    large_mb = _peak_rss_mb(large, tmp_path / "large")
    assert large_mb < 2048, f"peak RSS {large_mb:.0f} MB for 1,000 cells"
    assert large_mb - small_mb < 150, f"peak RSS grew from {small_mb:.0f} MB to {large_mb:.0f} MB"
    assert small_mb > 100  # the model and torch are in it: the figure is the child's own
