"""How long a user waits for the first image of `gridgen run`, against what the libraries alone cost to import.

Each round times, as fresh processes in turn:
- `import torch`;
- the import floor: torch plus the diffusers and transformers classes every Stable Diffusion render needs
  (UNet, VAE, CLIP text encoder and tokenizer), which no backend built on those libraries can avoid;
- `gridgen validate SPEC`, which imports none of them;
- `gridgen run SPEC` into a fresh folder: the time to its first image file and to the end of the run.

It prints each round and the medians, and what gridgen adds to the floor before its first image.

    python bench/startup.py [--spec grids/demo.yaml] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GRIDGEN = Path(sys.executable).with_name("gridgen")
FLOOR = ("import torch; from diffusers import UNet2DConditionModel, AutoencoderKL; "
         "from transformers import CLIPTextModel, CLIPTokenizer")


def seconds(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def first_image(spec: Path) -> tuple[float, float]:
    """Seconds to the first image file under the run's output folder, and to the end of the run."""
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp) / "out" / "images"
        started = time.perf_counter()
        run = subprocess.Popen([str(GRIDGEN), "run", str(spec), "--out", str(Path(tmp) / "out"), "--quiet"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        first = None
        while run.poll() is None:
            if first is None and images.is_dir() and next(images.rglob("*.png"), None) is not None:
                first = time.perf_counter() - started
            time.sleep(0.01)
        whole = time.perf_counter() - started
        if run.returncode != 0:
            raise SystemExit(f"gridgen run {spec} failed with exit code {run.returncode}")
        return (first if first is not None else whole), whole


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", type=Path, default=Path(__file__).parent.parent / "grids" / "demo.yaml")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rows: dict[str, list[float]] = {"import torch": [], "import floor": [], "gridgen validate": [],
                                    "gridgen run, first image": [], "gridgen run, whole": []}
    for round_ in range(1, args.rounds + 1):
        rows["import torch"].append(seconds([sys.executable, "-c", "import torch"]))
        rows["import floor"].append(seconds([sys.executable, "-c", FLOOR]))
        rows["gridgen validate"].append(seconds([str(GRIDGEN), "validate", str(args.spec)]))
        first, whole = first_image(args.spec)
        rows["gridgen run, first image"].append(first)
        rows["gridgen run, whole"].append(whole)
        print(f"round {round_}: " + ", ".join(f"{name} {values[-1]:.2f} s" for name, values in rows.items()))
    medians = {name: statistics.median(values) for name, values in rows.items()}
    for name, value in medians.items():
        print(f"{name:26} {value:6.2f} s (median of {args.rounds})")
    print(f"gridgen's own share before its first image: "
          f"{medians['gridgen run, first image'] - medians['import floor']:.2f} s over the import floor")
    return 0


if __name__ == "__main__":
    sys.exit(main())
