"""The interface every backend implements, and the data that crosses it.

A backend is the only code that touches torch. The executor hands it batches of `Cell`s whose
`batch_key`s are equal and receives one `Result` per cell, in any order.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from gridgen.errors import Location

if TYPE_CHECKING:
    from PIL import Image

    from gridgen.params import Param


@dataclass
class Cell:
    """One cell of the grid, as the plan hands it to a backend."""

    index: int  # position in the cartesian product, in the spec's axis order
    key: str  # value ids joined by "/", in the spec's axis order
    coords: tuple[str, ...]
    params: dict[str, Any]  # every param resolved: defaults <- grid params <- each axis value
    skip: bool = False
    image_path: str = ""  # relative to the output folder
    thumb_path: str = ""
    param_locations: dict[str, Location] = field(default_factory=dict, repr=False)


@dataclass
class BackendContext:
    """What a backend needs to know about the run it serves."""

    spec_dir: Path  # relative paths in the spec resolve against this folder
    out_dir: Path | None = None  # the grid's output folder (stage caches may spill here)
    models_dir: Path | None = None  # bare model names resolve here, as in A1111's models/ folder
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1"
    dtype: str = "auto"  # "auto" (fp16 on CUDA, fp32 on CPU), "fp32", "fp16", "bf16"
    max_batch: int = 8
    cache_bytes: int = 1 << 30  # in-memory budget of the stage cache; the rest spills to out_dir/.cache
    model_cache_bytes: int | None = None  # loaded models kept for reuse; None: a quarter of RAM, at most 16 GiB
    compile: bool = False  # torch.compile the UNet and the VAE decoder (CUDA; compiles once per shape)
    channels_last: bool = False  # NHWC memory format for the convolutions (faster on recent GPUs)
    cpu_shards: int = 0  # CPU: split each UNet batch across this many single-threaded workers; 0 one per thread


class BatchOutOfMemory(Exception):
    """The device ran out of memory on a batch; the executor retries it in halves."""

    def __init__(self, size: int):
        super().__init__(f"out of device memory on a batch of {size}")
        self.size = size


@dataclass
class Result:
    """One rendered cell. Its image may still be in the making (a Future, e.g. a VAE decode on another
    thread): `image` waits for it, and `timings` are complete once it has."""

    cell: Cell
    pending: Image.Image | Future
    metadata: dict[str, Any] = field(default_factory=dict)  # facts the backend wants recorded
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    files: dict[str, Image.Image] = field(default_factory=dict)  # extra images saved next to it, by name (mask)

    @property
    def image(self) -> Image.Image:
        return self.pending.result() if isinstance(self.pending, Future) else self.pending


@dataclass(frozen=True)
class ParamProblem:
    """A problem with one cell's params; `param` names the culprit so the CLI can locate it."""

    param: str | None
    message: str
    severity: str = "error"


class Backend(Protocol):
    name: str

    def supported_params(self) -> set[str]:
        """Canonical names of the registry params this backend acts on."""

    def extra_params(self) -> list[Param]:
        """Params this backend adds to the registry."""

    def validate(self, params: dict[str, Any]) -> list[ParamProblem]:
        """Problems with one cell's params, found without loading any model."""

    def load_key(self, params: dict[str, Any]) -> Hashable:
        """Cells with different load keys need a different model in memory (the plan groups by it)."""

    def batch_key(self, params: dict[str, Any]) -> Hashable:
        """Cells with equal keys can share one denoising batch."""

    def describe_load(self, params: dict[str, Any]) -> str:
        """One line naming what `load_key` loads, for the dry run."""

    def fit_batch(self, params: dict[str, Any], wanted: int) -> int:
        """How many cells of this batch key fit the device at once (at most `wanted`)."""

    def render(self, cells: list[Cell]) -> Iterator[Result]:
        """Render cells that share a batch key."""

    def stats(self) -> list[str]:
        """Lines for the run summary (cache hits and the like)."""

    def close(self) -> None:
        """Free models and caches."""
