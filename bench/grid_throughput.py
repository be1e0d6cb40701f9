"""Throughput of a grid rendered by gridgen against a plain per-image diffusers loop, in one process.

    python bench/grid_throughput.py --preset cpu-tiny --rounds 5 --memory
    python bench/grid_throughput.py --preset gpu-sd15      # on a CUDA machine
    python bench/grid_throughput.py --preset gpu-sdxl      # on a CUDA machine
    python bench/grid_throughput.py --preset cpu-tiny-options --rounds 3
    python bench/grid_throughput.py --latent-controls      # the latent controls still batch

Both sides render the same cells (same model, sampler, steps, size, prompts, seeds, CFG) and write
each image to disk as PNG: (a) gridgen's runner and local executor, (b) one pipeline call per cell
(`StableDiffusionPipeline`, or `StableDiffusionXLPipeline` for the SDXL preset), as the A1111 X/Y/Z
plot and the Infinity Grid script do. With `--rounds N` the two sides take turns N times and the
ratio of each round is printed, so a machine busy with other work shows up as spread rather than
as one lucky or unlucky figure. Each round also runs both sides as fresh processes (`gridgen run`, and
a script that loads the pipeline and loops) and times them from start to exit: the whole-process
ratio, start-up included, is what a small grid waits for. Figures depend on the machine: run it,
don't quote it.

`cpu-tiny-options` mixes A1111's per-cell sampler options (variation seeds, ENSD, seed resize, styles, Euler a's
eta) across one grid of the embedded model; no plain diffusers pipeline takes them, so its baseline is gridgen
rendering one cell per batch, as the X/Y/Z plot does, and it prints how many denoising batches each side ran.
`--latent-controls` instead renders one grid whose cells mix the latent controls (CFG rescale, dynamic
thresholding, colour grading, mirroring, anti-burn, none) and the same number of cells that differ only in
CFG scale, and prints the denoising batches and the time of each: equal batch counts show the controls share
batches, and the time ratio is their per-step cost.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
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
    model: str  # "tiny", "sd15-random" or "sdxl-random"
    cfg_axis: bool = True  # CFG values as an axis (cells x len(cfgs)), else one per seed in turn

    def cells(self) -> list[tuple[str, int, float]]:
        """(prompt, seed, cfg) of every cell, in the grid's order."""
        if self.cfg_axis:
            return [(p, s, c) for p in PROMPTS for s in self.seeds for c in self.cfgs]
        return [(p, s, self.cfg_of(s)) for p in PROMPTS for s in self.seeds]

    def cfg_of(self, seed: int) -> float:
        return self.cfgs[self.seeds.index(seed) % len(self.cfgs)]


PRESETS = {
    "cpu-tiny": Preset(64, 20, "DPM++ 2M", [1, 2, 3, 4], [5.0, 8.0], "fp32", 32, "tiny"),
    "gpu-sd15": Preset(512, 20, "DPM++ 2M", [1, 2, 3, 4], [3.0, 5.0, 7.0, 9.0], "fp16", 16, "sd15-random"),
    "gpu-sdxl": Preset(1024, 20, "Euler", [1, 2, 3, 4], [5.0, 8.0], "fp16", 16, "sdxl-random", cfg_axis=False),
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


def sdxl_random(folder: Path) -> Path:
    """An SDXL-base-sized pipeline (UNet 2.57B params, both text encoders) with random weights, from the
    SDXL configs gridgen ships; built on the GPU, where initialising it takes seconds."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from gridgen.backends.sd.models.families import config_root
    from gridgen.backends.sd.models.single_file import load_tokenizer

    configs = config_root() / "sdxl"
    torch.manual_seed(0)
    with torch.device("cuda"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(configs / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(configs / "vae"))
        text = CLIPTextModel(CLIPTextConfig.from_pretrained(configs / "text_encoder"))
        text_2 = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(configs / "text_encoder_2"))
    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=text, text_encoder_2=text_2, tokenizer=load_tokenizer(configs, "tokenizer"),
        tokenizer_2=load_tokenizer(configs, "tokenizer_2"), unet=unet,
        scheduler=EulerDiscreteScheduler.from_pretrained(configs / "scheduler"))
    pipe.to(torch.float16).save_pretrained(folder)
    return folder


def write_spec(folder: Path, preset: Preset, model: Path) -> Path:
    axes: dict = {"prompt": " || ".join(PROMPTS)}
    if preset.cfg_axis:
        axes["seed"] = ", ".join(map(str, preset.seeds))
        axes["cfg_scale"] = ", ".join(f"{c:g}" for c in preset.cfgs)
    else:  # each seed value brings its own CFG scale, so every batch mixes scales
        axes["seed"] = {"values": {str(s): {"params": {"seed": s, "cfg_scale": preset.cfg_of(s)}}
                                   for s in preset.seeds}}
    spec = {
        "grid": {"title": "throughput", "params": {"model": str(model), "steps": preset.steps,
                                                   "sampler": preset.sampler, "width": preset.size,
                                                   "height": preset.size}},
        "axes": axes,
    }
    path = folder / "throughput.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


OPTION_AXES = {
    "prompt": " || ".join(PROMPTS[:2]),
    "var_seed_strength": "0, 0.3, 0.7",
    "eta_noise_seed_delta": "0, 31337",
    "eta": "1, 0.5",  # Euler a's eta is per cell: it splits no batch
    "seed_resize_from_w": "0, 48",
    "styles": {"values": {"none": {"params": {"styles": ""}}, "framed": {"params": {"styles": "framed"}}}},
}


def options_case(rounds: int) -> int:
    """The options grid rendered in batches of up to 32 against one cell per batch, on the CPU."""
    from gridgen.backends.diffusers_backend import DiffusersBackend

    batches: list[int] = []
    original = DiffusersBackend._denoise
    DiffusersBackend._denoise = lambda self, batch: batches.append(len(batch)) or original(self, batch)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "styles.csv").write_text('name,prompt,negative_prompt\nframed,"a photo of {prompt}, framed",blurry\n')
        spec = {"grid": {"title": "options", "params": {"model": str(TINY_MODEL_DIR), "steps": 20, "sampler": "Euler a",
                                                        "width": 64, "height": 64, "seed": 3, "var_seed": 8,
                                                        "seed_resize_from_h": 48}},
                "axes": OPTION_AXES}
        path = folder / "options.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        per_cell, batched = Preset(64, 20, "Euler a", [3], [7.0], "fp32", 1, "tiny"), \
            Preset(64, 20, "Euler a", [3], [7.0], "fp32", 32, "tiny")
        run_gridgen(path, folder / "warm", per_cell, "cpu")
        ratios = []
        for round_ in range(rounds):
            batches.clear()
            count, one_s = run_gridgen(path, folder / f"one{round_}", per_cell, "cpu")
            one_batches = len(batches)
            batches.clear()
            _, grid_s = run_gridgen(path, folder / f"grid{round_}", batched, "cpu")
            ratios.append(one_s / grid_s)
            print(f"round {round_ + 1}: {count} cells; one cell per batch {one_s:.1f} s in {one_batches} batches; "
                  f"batched {grid_s:.1f} s in {len(batches)} batches (sizes {batches}); ratio {ratios[-1]:.2f}x")
    each = ", ".join(f"{r:.2f}" for r in ratios)
    print(f"ratio batched / one cell per batch: {statistics.median(ratios):.2f}x (median; rounds {each})")
    return 0


def run_gridgen(spec: Path, out: Path, preset: Preset, device: str, cpu_shards: int = 0) -> tuple[int, float]:
    options = RunOptions(out=out, batch_size=preset.batch_size, device=device, dtype=preset.dtype, overwrite=True,
                         cpu_shards=cpu_shards)
    prepared = prepare(spec, options)
    started = time.perf_counter()
    summary = execute(prepared, options, show_progress=False)
    return summary.rendered, time.perf_counter() - started


def load_plain_pipeline(model: Path, preset: Preset, device: str):
    from diffusers import (
        DPMSolverMultistepScheduler,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
    )

    dtype = torch.float16 if preset.dtype == "fp16" else torch.float32
    if preset.model == "sdxl-random":
        pipe = StableDiffusionXLPipeline.from_pretrained(model, dtype=dtype)
    else:
        pipe = StableDiffusionPipeline.from_pretrained(model, dtype=dtype, safety_checker=None,
                                                       requires_safety_checker=False)
    scheduler = EulerDiscreteScheduler if preset.sampler == "Euler" else DPMSolverMultistepScheduler
    pipe.scheduler = scheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def run_plain_loop(pipe, out: Path, preset: Preset) -> tuple[int, float]:
    out.mkdir(parents=True, exist_ok=True)
    count = 0
    started = time.perf_counter()
    for prompt, seed, cfg in preset.cells():
        image = pipe(prompt, num_inference_steps=preset.steps, guidance_scale=cfg, height=preset.size,
                     width=preset.size, generator=torch.Generator("cpu").manual_seed(seed)).images[0]
        image.save(out / f"{count}.png")
        count += 1
    return count, time.perf_counter() - started


def whole_process_seconds(command: list[str]) -> float:
    """Wall time of `command` as a fresh process, from its start to its exit."""
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def gridgen_process(spec: Path, out: Path, preset: Preset, device: str) -> list[str]:
    arguments = ["run", str(spec), "--out", str(out), "--quiet", "--overwrite", "--device", device,
                 "--dtype", preset.dtype, "--batch-size", str(preset.batch_size)]
    return [sys.executable, "-c", f"import sys; from gridgen.cli import main; sys.exit(main({arguments!r}))"]


def loop_process(model: Path, out: Path, preset_name: str, device: str) -> list[str]:
    return [sys.executable, __file__, "--preset", preset_name, "--device", device, "--loop-process", str(model),
            str(out)]


def grid_peak_rss_mb(cells: int, folder: Path) -> float:
    """Peak RSS of a fresh `gridgen run` process over a `cells`-cell grid of the embedded model (1 step, 32 px)."""
    spec = folder / f"memory-{cells}.yaml"
    spec.write_text(yaml.safe_dump({
        "grid": {"params": {"model": "gridgen-tiny", "steps": 1, "width": 32, "height": 32, "sampler": "Euler"}},
        "axes": {"seed": f"1-{cells}"}}))
    # VmHWM is the child's own peak; getrusage's ru_maxrss would carry this process's over the exec.
    code = ("import re, sys\n"
            "from gridgen.cli import main\n"
            f"code = main(['run', {str(spec)!r}, '--out', {str(folder / f'memory-{cells}')!r}, '--quiet'])\n"
            "status = open('/proc/self/status').read()\n"
            "print(int(re.search(r'VmHWM:\\s+(\\d+) kB', status).group(1)) / 1024)\n"
            "sys.exit(code)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


# One value of the `control` axis per latent control, and one cell without any.
LATENT_CONTROLS = {"none": {}, "rescale": {"cfg_rescale": 0.7}, "dynthres": {"mimic_scale": 5},
                   "grade": {"cc_brightness": 1.5, "cc_saturation": 1.5}, "mirror": {"mirror_mode": "Blend Average"},
                   "antiburn": {"antiburn_steps": 3}, "grade alt": {"cc_alt": True, "cc_brightness": 1.5},
                   "hdr": {"hdr_brackets": 3}}  # three rows of the batch for one cell


def latent_controls_case(folder: Path, preset: Preset, device: str) -> None:
    """Batches and seconds of a grid mixing the latent controls against one of as many plain cells."""
    from gridgen.backends.diffusers_backend import DiffusersBackend

    batches: list[int] = []
    original = DiffusersBackend._denoise
    DiffusersBackend._denoise = lambda self, batch: batches.append(len(batch)) or original(self, batch)
    cfgs = [5 + index for index in range(len(LATENT_CONTROLS))]
    grids = {"latent controls": {name: {"params": {"cfg_scale": 8, **params}}
                                 for name, params in LATENT_CONTROLS.items()},
             "plain, CFG only": {str(cfg): {"params": {"cfg_scale": cfg}} for cfg in cfgs}}
    results = {}
    for title, values in grids.items():
        spec = folder / f"{len(results)}.yaml"
        spec.write_text(yaml.safe_dump({
            "grid": {"title": title, "params": {"model": str(TINY_MODEL_DIR), "steps": preset.steps,
                                                "sampler": preset.sampler, "width": preset.size,
                                                "height": preset.size, "prompt": PROMPTS[0]}},
            "axes": {"seed": ", ".join(map(str, preset.seeds)), "control": {"values": values}}}))
        run_gridgen(spec, folder / f"warm{len(results)}", preset, device)  # loads the model, warms the kernels
        batches.clear()
        count, seconds = run_gridgen(spec, folder / f"out{len(results)}", preset, device)
        results[title] = (count, list(batches), seconds)
        print(f"{title}: {count} cells in {len(batches)} denoising batch(es) of {batches}, {seconds:.1f} s")
    DiffusersBackend._denoise = original
    (_, mixed, mixed_s), (_, plain, plain_s) = results.values()
    print(f"batches with controls / without: {len(mixed)} / {len(plain)}; time ratio {mixed_s / plain_s:.2f}x "
          f"(rows {sum(mixed)} / {sum(plain)}: an HDR cell denoises one row per bracket)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted([*PRESETS, "cpu-tiny-options"]), default="cpu-tiny")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--rounds", type=int, default=1, help="times each side renders the grid, in turns")
    parser.add_argument("--cpu-shards", type=int, default=0,
                        help="gridgen's --cpu-shards (default: one per thread; 1 shows the gain of sharding)")
    parser.add_argument("--memory", action="store_true",
                        help="also measure the peak RSS of 250- and 1,000-cell grids of the embedded model")
    parser.add_argument("--latent-controls", action="store_true",
                        help="only show that cells mixing the latent controls share denoising batches (embedded model)")
    parser.add_argument("--loop-process", nargs=2, metavar=("MODEL", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.preset == "cpu-tiny-options":
        return options_case(args.rounds)
    preset = PRESETS[args.preset]
    if args.latent_controls:
        device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        with tempfile.TemporaryDirectory() as tmp:
            latent_controls_case(Path(tmp), PRESETS["cpu-tiny"], device)
        return 0
    if args.loop_process:  # the per-image loop as a process of its own, timed whole by the parent
        model, out = (Path(value) for value in args.loop_process)
        run_plain_loop(load_plain_pipeline(model, preset, args.device), out, preset)
        return 0
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if preset.model != "tiny" and device != "cuda":
        print(f"preset {args.preset} needs a CUDA device; this machine has none", file=sys.stderr)
        return 2
    builders = {"tiny": lambda _folder: TINY_MODEL_DIR, "sd15-random": sd15_random, "sdxl-random": sdxl_random}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = builders[preset.model](folder / "model")
        spec = write_spec(folder, preset, model)
        card = torch.cuda.get_device_name() if device == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
        print(f"preset {args.preset} on {card}: {len(preset.cells())} cells, {preset.size}px, {preset.steps} steps, "
              f"{preset.sampler}, {preset.dtype}")
        pipe = load_plain_pipeline(model, preset, device)
        # Warm both paths once so neither pays first-call costs (allocator, kernels) in its timing.
        run_plain_loop(pipe, folder / "warm", Preset(preset.size, 2, preset.sampler, [1], [7.0], preset.dtype, 1,
                                                     preset.model))
        ratios, loop_rates, grid_rates, process_ratios = [], [], [], []
        for round_ in range(args.rounds):
            loop_count, loop_s = run_plain_loop(pipe, folder / f"loop{round_}", preset)
            grid_count, grid_s = run_gridgen(spec, folder / f"grid{round_}", preset, device, args.cpu_shards)
            loop_rates.append(loop_count / loop_s)
            grid_rates.append(grid_count / grid_s)
            ratios.append(grid_rates[-1] / loop_rates[-1])
            print(f"round {round_ + 1}: plain per-image loop {loop_count} images in {loop_s:.1f} s = "
                  f"{loop_rates[-1]:.2f} img/s; gridgen {grid_count} images in {grid_s:.1f} s = "
                  f"{grid_rates[-1]:.2f} img/s; ratio {ratios[-1]:.2f}x")
            loop_whole = whole_process_seconds(loop_process(model, folder / f"loop-process{round_}", args.preset,
                                                            device))
            grid_whole = whole_process_seconds(gridgen_process(spec, folder / f"grid-process{round_}", preset,
                                                               device))
            process_ratios.append(loop_whole / grid_whole)
            print(f"round {round_ + 1}, whole processes (start-up included): plain per-image loop "
                  f"{loop_whole:.1f} s, gridgen run {grid_whole:.1f} s; ratio {process_ratios[-1]:.2f}x")
    print(f"plain per-image loop: {statistics.median(loop_rates):.2f} img/s (median of {args.rounds})")
    print(f"gridgen:              {statistics.median(grid_rates):.2f} img/s (median of {args.rounds})")
    each = ", ".join(f"{r:.2f}" for r in ratios)
    print(f"ratio gridgen / loop: {statistics.median(ratios):.2f}x (median; rounds {each})")
    each = ", ".join(f"{r:.2f}" for r in process_ratios)
    print(f"whole-process ratio:  {statistics.median(process_ratios):.2f}x (median; rounds {each})")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    if device == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    if args.memory:
        with tempfile.TemporaryDirectory() as tmp:
            small, large = (grid_peak_rss_mb(cells, Path(tmp)) for cells in (250, 1000))
        print(f"peak RSS of a gridgen run: {small:.0f} MB for 250 cells, {large:.0f} MB for 1,000 cells "
              f"({large - small:+.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
