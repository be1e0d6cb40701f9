"""Batch sharding on the CPU: one batched model call split into contiguous slices of the batch, each
slice run on its own single-threaded worker.

The convolutions and attention of a small UNet parallelise poorly inside one op: with two cores, one
call over 32 rows on two intra-op threads runs slower than two 16-row calls side by side on one
thread each (`bench/grid_throughput.py --cpu-shards 1` measures the difference). Each row is computed
by the same kernels either way, so a cell's image does not change (the batch-equivalence tests cover
it). On CUDA the device does the parallel work and nothing is sharded.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields, is_dataclass
from typing import Any

import torch


def default_workers() -> int:
    """One worker per intra-op thread torch would otherwise use."""
    return max(1, torch.get_num_threads())


class BatchShards:
    """A pool of single-threaded workers that runs a batched call as slices of its batch."""

    def __init__(self, workers: int):
        self.workers = max(1, workers)
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="gridgen-shard")

    def wrap(self, forward: Callable[..., Any]) -> Callable[..., Any]:
        """`forward` with every batched argument sliced across the workers and the outputs joined again.

        The batch is the first argument's leading dimension; any tensor (also inside a dict) with that
        leading size is sliced alongside it, everything else goes to every slice as it is.
        """

        def sharded(sample: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            rows = sample.shape[0]
            if rows < 2 or sample.device.type != "cpu":
                return forward(sample, *args, **kwargs)
            bounds = _bounds(rows, min(self.workers, rows))
            calls = [(_take(sample, rows, s), _take(args, rows, s), _take(kwargs, rows, s)) for s in bounds]
            modes = (torch.is_inference_mode_enabled(), torch.is_grad_enabled())
            threads = torch.get_num_threads()
            try:
                futures = [self._pool.submit(_single_threaded, modes, forward, *call) for call in calls]
                return _join([future.result() for future in futures])
            finally:
                # A worker's set_num_threads(1) also lowers process-wide counts (MKL's): give them back.
                torch.set_num_threads(threads)

        return sharded

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def _single_threaded(modes: tuple[bool, bool], forward: Callable[..., Any], sample: torch.Tensor, args: tuple,
                     kwargs: dict) -> Any:
    torch.set_num_threads(1)
    # Autograd modes are per thread: a worker runs in its caller's, so it records no graph the caller did not ask for.
    inference, grad = modes
    with torch.inference_mode(inference), torch.set_grad_enabled(grad):
        return forward(sample, *args, **kwargs)


def _bounds(rows: int, parts: int) -> list[slice]:
    step, extra = divmod(rows, parts)
    bounds, start = [], 0
    for part in range(parts):
        end = start + step + (part < extra)
        bounds.append(slice(start, end))
        start = end
    return bounds


def _take(value: Any, rows: int, rows_slice: slice) -> Any:
    if isinstance(value, torch.Tensor):
        return value[rows_slice] if value.dim() > 0 and value.shape[0] == rows else value
    if isinstance(value, dict):
        return {key: _take(item, rows, rows_slice) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_take(item, rows, rows_slice) for item in value)
    return value


def _join(outputs: list[Any]) -> Any:
    first = outputs[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(outputs)
    if is_dataclass(first):  # diffusers' model outputs
        return type(first)(**{f.name: _join([getattr(out, f.name) for out in outputs]) for f in fields(first)})
    if isinstance(first, tuple):
        return tuple(_join(list(items)) for items in zip(*outputs, strict=True))
    return first
