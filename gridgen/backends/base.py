"""The interface every backend implements, the data that crosses it, and every contract a backend relies on.

A backend is the only code that touches torch. It is a class registered in the `gridgen.backends`
entry-point group under its `name`, built as `cls(context)` with the run's complete `BackendContext`.
Before anything renders, the plan asks it about every cell's params (`validate`, `load_key`,
`batch_key`); the executor then hands it batches of `Cell`s whose `batch_key`s are equal and receives
one `Result` per cell, in any order. A backend needs nothing from gridgen beyond this module: the
registry's `Param` (for `extra_params`) and the `GridError` family are re-exported here.

What the executors rely on:
- `render` is all or nothing: it raises before the executor writes any of the batch, and the batch is
  retried or failed as a whole (an executor collects every result before writing one).
- `BatchOutOfMemory` says the device ran out of memory: the executor retries the batch in halves and
  keeps the smaller size for that batch key. A `GridError` fails that batch's cells (journaled, rendered
  again by the next run; the ray executor tries 3 times first) and the run goes on; any other exception
  stops the run (the ray executor instead replaces the worker, whose device may be unusable, and
  re-queues the batch).
- The ray executor builds one backend per worker, `load_backend(backend.name, context)`, from a pickled
  copy of the context (device as the worker sees it, no `out_dir`): the backend must be installed on
  every node and must not rely on state of the driver's instance. Cells travel pickled; images come back
  as RGB (or L) pixel arrays; `metadata` and `timings` travel as they are, so they hold plain values.
- Keys (`load_key`, `batch_key`) are compared between processes: build them from plain values (tuples,
  strings, numbers), never from object identity.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from gridgen.errors import GridError, Location, ModelError
from gridgen.param_decl import Param

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

__all__ = ["Backend", "BackendContext", "BatchOutOfMemory", "Cell", "GridError", "Location", "ModelError", "Param",
           "ParamProblem", "Result"]


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


@dataclass(frozen=True)
class BackendContext:
    """What a backend needs to know about the run it serves: complete when the backend is built, never
    changed after. It crosses process boundaries (Ray workers build their backends from a copy), so it
    holds plain values only."""

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
    """The device ran out of memory on a batch; the executor retries it in halves. Raise it only after
    freeing what the batch allocated: the backend renders the halves next."""

    def __init__(self, size: int):
        super().__init__(f"out of device memory on a batch of {size}")
        self.size = size


@dataclass
class Result:
    """One rendered cell. Its image may still be in the making (a Future, e.g. a VAE decode on another
    thread): `image` waits for it, and `timings` are complete once it has."""

    cell: Cell
    pending: Image.Image | Future
    # Facts the backend wants recorded, JSON-able: saved in the image's gridgen JSON and the journal. These keys
    # also override the cell's params in the A1111 `parameters` text the page shows and each image embeds:
    # width and height (the image's real size), prompt and negative_prompt (the text as rendered, after
    # wildcards), image_cfg_scale (as the model read it).
    metadata: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    files: dict[str, Image.Image] = field(default_factory=dict)  # extra images saved next to it, by name (mask)
    # The image's own pixels at 16 bits per channel (height, width, 3 uint16 RGB) when the backend made them (an
    # HDR merge): the store writes them to a PNG image file; `image` is their 8-bit rendering.
    deep: np.ndarray | None = None

    @property
    def image(self) -> Image.Image:
        return self.pending.result() if isinstance(self.pending, Future) else self.pending


@dataclass(frozen=True)
class ParamProblem:
    """A problem with one cell's params. `param` names the culprit (its canonical name) so the problem is
    reported at the file, line and column that set it for that cell; None for the cell as a whole. An
    "error" stops the run before anything renders; a "warning" is printed (an error with --strict)."""

    param: str | None
    message: str
    severity: str = "error"


class Backend(Protocol):
    name: str  # the name it is registered under in the `gridgen.backends` entry-point group

    def __init__(self, context: BackendContext) -> None:
        """Keep the context; load nothing yet (validation and `gridgen validate` build a backend too)."""

    def supported_params(self) -> set[str]:
        """Canonical names of gridgen's params this backend acts on (a spec setting another is warned); its
        `extra_params` count as supported."""

    def extra_params(self) -> list[Param]:
        """Params this backend adds to the registry; their `kind` is the type values are checked against."""

    def validate(self, params: dict[str, Any]) -> list[ParamProblem]:
        """Problems with one cell's params (every param resolved, defaults included), found without loading
        any model. Called for every cell before anything renders."""

    def load_key(self, params: dict[str, Any]) -> Hashable:
        """Cells with different load keys need a different model in memory (the plan groups by it, and the
        ray executor sends a batch to a worker that has its model loaded)."""

    def batch_key(self, params: dict[str, Any]) -> Hashable:
        """Cells with equal keys can share one `render` call; only such cells are batched together."""

    def describe_load(self, params: dict[str, Any]) -> str:
        """One line naming what `load_key` loads, for the dry run."""

    def fit_batch(self, params: dict[str, Any], wanted: int) -> int:
        """How many cells of this batch key fit the device at once (at most `wanted`); asked once per batch
        key, by the process that owns the device, before its first batch."""

    def render(self, cells: list[Cell]) -> Iterator[Result]:
        """Render cells that share a batch key, one Result each: all of them, or raise (see above)."""

    def locate(self, param: str, value: str) -> Path | None:
        """The file or folder that `value` of a path- or model-kind param makes `render` read, found where
        `render` finds it, or None when the value reads no file (such as `auto`); raises GridError when it
        names nothing usable. Loads nothing: the viewer asks before running a spec sent from a browser."""

    def stats(self) -> list[str]:
        """Lines for the run summary (cache hits and the like)."""

    def close(self) -> None:
        """Free models and caches; the run calls it once rendering ends."""
