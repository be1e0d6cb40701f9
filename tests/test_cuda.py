"""The CUDA path: fp16 renders what fp32 on the CPU renders, the decode on its own stream gives the images a
synchronous decode gives, and batches are sized by measured memory. Skipped on machines without CUDA;
`bench/gpu_checks.sh` runs these with the GPU benchmarks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gridgen.backends import BackendContext
from gridgen.backends.base import Cell
from gridgen.backends.diffusers_backend import DiffusersBackend
from gridgen.backends.sd.images import images

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def cells(count: int) -> list[Cell]:
    prompts = ["a red circle on a white background", "a blue square on a black background"]
    return [Cell(index=i, key=str(i), coords=(str(i),),
                 params={"prompt": prompts[i % 2], "seed": i, "steps": 12, "sampler": "DPM++ 2M",
                         "cfg_scale": 5.0 + i % 3, "width": 64, "height": 64})
            for i in range(count)]


def render(device: str, dtype: str, batch: list[Cell]) -> list[np.ndarray]:
    backend = DiffusersBackend(BackendContext(spec_dir=Path.cwd(), device=device, dtype=dtype, max_batch=len(batch),
                                              cache_bytes=0))
    try:
        return [np.asarray(result.image, dtype=np.float32) for result in backend.render(batch)]
    finally:
        backend.close()


def test_fp16_on_cuda_renders_what_fp32_renders_on_the_cpu():
    batch = cells(6)
    on_cpu, on_cuda = render("cpu", "fp32", batch), render("cuda", "fp16", batch)
    worst = max(float(np.abs(a - b).mean()) for a, b in zip(on_cpu, on_cuda, strict=True))
    assert worst <= 3.0, f"fp16 on CUDA differs from fp32 on the CPU by {worst:.2f}/255 (mean absolute)"


def test_the_decode_on_its_own_stream_gives_the_synchronous_decode(monkeypatch):
    kept: list[torch.Tensor] = []
    original = images.decode

    def keeping(vae, latents, tiling="auto"):
        kept.append(latents.clone())
        return original(vae, latents, tiling)

    monkeypatch.setattr(images, "decode", keeping)
    backend = DiffusersBackend(BackendContext(spec_dir=Path.cwd(), device="cuda", dtype="fp16", max_batch=4,
                                              cache_bytes=0))
    try:
        results = list(backend.render(cells(4)))
        streamed = [np.asarray(result.image, dtype=np.float32) for result in results]
        with torch.inference_mode():
            direct = [np.asarray(image, dtype=np.float32) for image in original(backend._components.vae, kept[0])]
        assert backend.speed_options()["cpu_shards"] == 1
    finally:
        backend.close()
    assert all(np.array_equal(a, b) for a, b in zip(streamed, direct, strict=True))


def test_batch_size_is_measured_against_free_memory():
    backend = DiffusersBackend(BackendContext(spec_dir=Path.cwd(), device="cuda", dtype="fp16", cache_bytes=0))
    try:
        params = cells(1)[0].params
        assert backend.fit_batch(params, 64) == 64  # the tiny model fits many times over on any card
        free, _ = torch.cuda.mem_get_info()
        huge = {**params, "width": 4096, "height": 4096}
        fitted = backend.fit_batch(huge, 10_000)
        assert 1 <= fitted < 10_000, f"{fitted} cells of 4096 px reported to fit in {free / 2**30:.1f} GiB"
    finally:
        backend.close()
