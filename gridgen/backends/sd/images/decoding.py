"""The VAE decode off the render thread: one worker turns each batch's latents into finished images
while the render thread goes on denoising the next batch.

Each cell gets a future of its image (`Result.image` waits on it), so PNG encoding and journal
writes wait on the decode, never the denoising. On CUDA the worker decodes on its own stream,
ordered after the denoising that made the latents. Out of memory during a batch's decode falls back
to decoding its images one at a time, so a batch that denoised is not lost to its decode.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from typing import TYPE_CHECKING

from PIL import Image

from gridgen.errors import GridError

if TYPE_CHECKING:
    import torch


Finish = Callable[[Image.Image], Image.Image]


class Decoder:
    """One decode worker; `submit` hands it a batch's latents, `drain` waits until it is idle."""

    def __init__(self):
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="gridgen-decode")
        self._pending: list[Future] = []
        self._streams: dict[torch.device, torch.cuda.Stream] = {}

    def submit(self, vae, latents: torch.Tensor, finish: Sequence[Finish], timings: Sequence[dict[str, float]],
               tiling: str = "auto") -> list[Future]:
        """Futures of the batch's finished images; each cell's `timings` gets its share of the decode time.
        `tiling` is the batch's `vae_tiling`."""
        import torch

        futures = [Future() for _ in finish]
        ready = None
        if latents.is_cuda:
            ready = torch.cuda.Event()
            ready.record()  # on the render thread's stream, after the last denoising step
        work = self._pool.submit(self._decode, vae, latents, tiling, ready, list(finish), list(timings), futures)
        self._pending = [f for f in self._pending if not f.done()] + [work]
        return futures

    def _decode(self, vae, latents: torch.Tensor, tiling: str, ready, finish: list[Finish],
                timings: list[dict[str, float]], futures: list[Future]) -> None:
        import torch

        started = time.perf_counter()
        try:
            with torch.inference_mode(), self._stream_for(latents, ready):
                decoded = _decode_or_one_by_one(vae, latents, tiling)
            finished = [done(image) for done, image in zip(finish, decoded, strict=True)]
        except Exception as exc:  # the cells' writes report it; the render thread has moved on
            for future in futures:
                future.set_exception(exc)
            return
        share = (time.perf_counter() - started) / len(futures)
        for future, image, cell_timings in zip(futures, finished, timings, strict=True):
            cell_timings["decode"] = share
            future.set_result(image)

    def _stream_for(self, latents: torch.Tensor, ready):
        import torch

        if ready is None:
            return nullcontext()
        if latents.device not in self._streams:
            self._streams[latents.device] = torch.cuda.Stream(latents.device)
        stream = self._streams[latents.device]
        stream.wait_event(ready)
        # The images reach the CPU before this task ends, so no tensor of the side stream outlives its work.
        return torch.cuda.stream(stream)

    def drain(self) -> None:
        """Wait for every submitted decode: before the models it uses are moved, swapped or measured."""
        for future in self._pending:
            future.exception()
        self._pending = []

    def close(self) -> None:
        self.drain()
        self._pool.shutdown(wait=True)


def _decode_or_one_by_one(vae, latents: torch.Tensor, tiling: str) -> list[Image.Image]:
    import torch

    from gridgen.backends.sd.images import images

    try:
        return images.decode(vae, latents, tiling)
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
    # Under `auto` an image too large to decode whole is decoded in tiles; `off` was asked for and is kept.
    retry = "off" if tiling == "off" else "on"
    try:
        return [image for row in latents.split(1) for image in images.decode(vae, row, retry)]
    except torch.OutOfMemoryError:
        raise GridError(f"out of device memory decoding a {tuple(latents.shape[-2:])}-latent image; lower "
                        "width/height, use --dtype fp16 or set vae_tiling: on") from None
