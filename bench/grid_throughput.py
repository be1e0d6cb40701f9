"""Throughput of a grid rendered by gridgen against a plain per-image diffusers loop, in one process.

    python bench/grid_throughput.py --preset cpu-tiny
    python bench/grid_throughput.py --preset gpu-sd15      # on a CUDA machine

Both sides render the same cells (same model, sampler, steps, size, prompts, seeds, CFG) and write
each image to disk as PNG: (a) gridgen's runner and local executor, (b) one
`StableDiffusionPipeline` call per cell, as the A1111 X/Y/Z plot and the Infinity Grid script do.
It prints images/s for each and their ratio. Figures depend on the machine: run it, don't quote it.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from gridgen.runner import RunOptions, execute, prepare
from gridgen.tiny import TINY_MODEL_DIR

PROMPTS = ["a red circle on a white background", "a blue square on a black background",
           "a green triangle on a gray background", "a yellow circle on a black background"]


@dataclass
class Preset:
    size: int
    steps: int
    sampler: str
    seeds: list[int]
    cfgs: list[float]
    dtype: str
    batch_size: int
    model: str  # "tiny" or "sd15-random"


PRESETS = {
    "cpu-tiny": Preset(64, 20, "DPM++ 2M", [1, 2, 3, 4], [5.0, 8.0], "fp32", 16, "tiny"),
    "gpu-sd15": Preset(512, 20, "DPM++ 2M", [1, 2, 3, 4], [3.0, 5.0, 7.0, 9.0], "fp16", 16, "sd15-random"),
}


def sd15_random(folder: Path) -> Path:
    """An SD 1.5-sized pipeline with random weights (timing does not depend on weight values)."""
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=768,
        attention_head_dim=8, down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        sample_size=512)
    text = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                                        num_hidden_layers=12, max_position_embeddings=77, vocab_size=49408))
    tiny = StableDiffusionPipeline.from_pretrained(TINY_MODEL_DIR)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=CLIPTokenizer.from_pretrained(
        TINY_MODEL_DIR / "tokenizer"), unet=unet, scheduler=tiny.scheduler, safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    pipe.to(torch.float16).save_pretrained(folder)
    return folder


def write_spec(folder: Path, preset: Preset, model: Path) -> Path:
    spec = {
        "grid": {"title": "throughput", "params": {"model": str(model), "steps": preset.steps,
                                                   "sampler": preset.sampler, "width": preset.size,
                                                   "height": preset.size}},
        "axes": {"prompt": " || ".join(PROMPTS), "seed": ", ".join(map(str, preset.seeds)),
                 "cfg_scale": ", ".join(f"{c:g}" for c in preset.cfgs)},
    }
    path = folder / "throughput.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_gridgen(spec: Path, out: Path, preset: Preset, device: str) -> tuple[int, float]:
    options = RunOptions(out=out, batch_size=preset.batch_size, device=device, dtype=preset.dtype, overwrite=True)
    prepared = prepare(spec, options)
    started = time.perf_counter()
    summary = execute(prepared, options, show_progress=False)
    return summary.rendered, time.perf_counter() - started


def run_plain_loop(model: Path, out: Path, preset: Preset, device: str) -> tuple[int, float]:
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    dtype = torch.float16 if preset.dtype == "fp16" else torch.float32
    pipe = StableDiffusionPipeline.from_pretrained(model, dtype=dtype, safety_checker=None,
                                                   requires_safety_checker=False).to(device)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    out.mkdir(parents=True, exist_ok=True)
    count = 0
    started = time.perf_counter()
    for prompt in PROMPTS:
        for seed in preset.seeds:
            for cfg in preset.cfgs:
                image = pipe(prompt, num_inference_steps=preset.steps, guidance_scale=cfg, height=preset.size,
                             width=preset.size, generator=torch.Generator("cpu").manual_seed(seed)).images[0]
                image.save(out / f"{count}.png")
                count += 1
    return count, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu-tiny")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if preset.model != "tiny" and device != "cuda":
        print(f"preset {args.preset} needs a CUDA device; this machine has none", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = TINY_MODEL_DIR if preset.model == "tiny" else sd15_random(folder / "sd15")
        spec = write_spec(folder, preset, model)
        card = torch.cuda.get_device_name() if device == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
        print(f"preset {args.preset} on {card}: {len(PROMPTS) * len(preset.seeds) * len(preset.cfgs)} cells, "
              f"{preset.size}px, {preset.steps} steps, {preset.sampler}, {preset.dtype}")
        # Warm both paths once so neither pays first-call costs (allocator, kernels) in its timing.
        run_plain_loop(model, folder / "warm", Preset(preset.size, 2, preset.sampler, [1], [7.0], preset.dtype,
                                                      1, preset.model), device)
        loop_count, loop_s = run_plain_loop(model, folder / "loop", preset, device)
        grid_count, grid_s = run_gridgen(spec, folder / "grid", preset, device)
    loop_rate, grid_rate = loop_count / loop_s, grid_count / grid_s
    print(f"plain per-image loop: {loop_count} images in {loop_s:.1f} s = {loop_rate:.2f} img/s")
    print(f"gridgen:              {grid_count} images in {grid_s:.1f} s = {grid_rate:.2f} img/s")
    print(f"ratio gridgen / loop: {grid_rate / loop_rate:.2f}x")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
