"""What LoRAs by region cost on gridgen-tiny: a batch of regional cells (latent calculation, two columns) rendered
three ways, in one run and in turn:

- no LoRA;
- a LoRA on the whole cell (the `lora` param: one UNet call per step, as without regions);
- the same LoRA in the left region's prompt only (`<lora:...>` in that region: the rows are split into one UNet
  call per LoRA set per step, the adapters switched between the calls);

and prints each's seconds per cell (best of `--repeats`) and the ratios of the split batch to the other two. The
LoRA is a random-weight one made with peft on the tiny UNet, written to a temporary folder. Not a test: nothing
asserts.

    .venv/bin/python bench/region_loras.py [--cells 8] [--steps 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from gridgen.backends import BackendContext
from gridgen.backends.base import Cell
from gridgen.backends.diffusers_backend import DiffusersBackend
from gridgen.params import Registry
from gridgen.tiny import TINY_MODEL_DIR

LEFT, RIGHT = "a red circle on a white background", "a blue square on a white background"


def write_lora(folder: Path) -> None:
    """A random rank-4 LoRA on the tiny UNet's attention, as diffusers writes one."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_pretrained(TINY_MODEL_DIR / "unet")
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    StableDiffusionPipeline.save_lora_weights(folder, safe_serialization=True,
                                              unet_lora_layers=convert_state_dict_to_diffusers(
                                                  get_peft_model_state_dict(unet)))


def seconds_per_cell(backend: DiffusersBackend, cells: list[Cell], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        list(backend.render(cells))
        best = min(best, time.perf_counter() - started)
    return best / len(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        write_lora(Path(folder) / "loras" / "style")
        backend = DiffusersBackend(BackendContext(spec_dir=Path(folder), device="cpu", max_batch=args.cells,
                                                  cache_bytes=0))
        base = {**Registry().defaults(), "steps": args.steps, "sampler": "DPM++ 2M", "width": 128, "height": 64,
                "regions": "Columns", "region_calc": "latent"}

        def cells(prompt: str, **params) -> list[Cell]:
            return [Cell(seed, str(seed), (str(seed),), {**base, "prompt": prompt, "seed": seed, **params})
                    for seed in range(1, args.cells + 1)]

        cases = {"no LoRA": cells(f"{LEFT} BREAK {RIGHT}"),
                 "LoRA on the whole cell": cells(f"{LEFT} BREAK {RIGHT}", lora=["style:1"]),
                 "LoRA in the left region": cells(f"{LEFT} <lora:style:1> BREAK {RIGHT}")}
        for batch in cases.values():
            list(backend.render(batch[:1]))  # loads the model and the adapter before timing
        timed = {name: seconds_per_cell(backend, batch, args.repeats) for name, batch in cases.items()}
        backend.close()
    print(f"{args.cells} regional cells per batch, {args.steps} steps, 128x64, best of {args.repeats}")
    for name, seconds in timed.items():
        print(f"  {name:<26} {seconds:7.3f} s per cell")
    split = timed["LoRA in the left region"]
    print(f"LoRA in one region / no LoRA:              {split / timed['no LoRA']:.2f}")
    print(f"LoRA in one region / LoRA on the whole cell: {split / timed['LoRA on the whole cell']:.2f}")


if __name__ == "__main__":
    main()
