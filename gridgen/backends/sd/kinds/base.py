"""What a model kind is to the backend: the `Kind` every kind module subclasses once, and the `Batch` it denoises.

The backend resolves a cell's kind once (`registry.kind_of`) and asks it, and nothing else, what depends on the
kind: the params it alone reads, its validation problems, the params as it reads them, its share of the batch
key, its size, its denoising and what its images record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gridgen.backends.base import ParamProblem

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from gridgen.backends.sd.denoise.guidance import Guide
    from gridgen.backends.sd.denoise.recipe import Recipe
    from gridgen.backends.sd.images.inputs import ImageInputs
    from gridgen.backends.sd.models.locate import ModelInfo

# How a cell's decoded image becomes its output (pasted back into its init image, resized to it).
Finish = Callable[["Image.Image"], "Image.Image"]


@dataclass
class Batch:
    """A batch of cells of one kind, ready to denoise: the cells' params, the loaded model, the working size, the
    recipe (scheduler and per-cell generators) and the guidance with the batch's text conditioning bound."""

    cells: list[dict[str, Any]]
    parts: Any  # models.load.Components
    info: ModelInfo
    size: tuple[int, int]
    recipe: Recipe
    guide: Guide
    inputs: ImageInputs
    services: Any  # the backend, for the kind-owned caches it keeps (depth maps, image embeddings)

    @property
    def steps(self) -> int:
        return int(self.cells[0]["steps"])

    @property
    def factor(self) -> int:
        """The VAE's scale: image pixels per latent cell along a side."""
        return 2 ** (len(self.parts.vae.config.block_out_channels) - 1)


class Kind:
    """A model kind. Subclasses set `name` (the `pipeline` value) and override what differs from txt2img."""

    name = ""
    # Params only this kind reads: a cell that sets one on a model of another kind is an error.
    exclusive: frozenset[str] = frozenset()
    # Params the base image of this kind reads that otherwise belong to a later stage.
    base_reads: frozenset[str] = frozenset()
    # UNet rows per cell in a guided step: the conditional and unconditional halves, and any more.
    guidance_rows = 2

    def problems(self, params: dict[str, Any], info: ModelInfo, services: Any) -> list[ParamProblem]:
        """What is wrong with a cell of this kind, from configs and image headers alone."""
        return []

    def as_read(self, params: dict[str, Any]) -> dict[str, Any]:
        """The params as this kind reads them (a value it ignores set to one that cannot tell cells apart)."""
        return params

    def batch_part(self, params: dict[str, Any]) -> tuple:
        """What of the kind cells must share to denoise together."""
        from gridgen.backends.sd.kinds import edit

        return edit.batch_part(params)

    def size(self, params: dict[str, Any], info: ModelInfo | None, inputs: ImageInputs) -> tuple[int, int] | None:
        """The working size when width and height do not both give it; None for the UNet's native size."""
        return None

    def denoise(self, batch: Batch) -> tuple[torch.Tensor, list[Finish]]:
        """The batch's denoised latents and each cell's finish."""
        raise NotImplementedError

    def metadata(self, params: dict[str, Any]) -> dict[str, Any]:
        """What an image of this kind records besides the common metadata."""
        return {}


def unchanged(image: Image.Image) -> Image.Image:
    return image
