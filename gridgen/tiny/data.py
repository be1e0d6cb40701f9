"""The procedural data set gridgen-tiny is trained on: one filled shape on a plain background.

Every image is 64x64 RGB: a circle, square or triangle of one of six colors, 16-40 px across, at a
random position on a white, black or gray background, captioned `a {color} {shape} on a
{background} background`. Nothing is stored: `make_batch(seed, n)` draws the same images from the
same seed on every machine (numpy's PCG64), so training and evaluation need no files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SIZE = 64
MIN_SHAPE, MAX_SHAPE = 16, 40

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 40),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 30),
    "purple": (140, 40, 180),
    "orange": (250, 140, 20),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
}
# Every word a caption can hold, in a fixed order: the tokenizer's vocabulary is built from it.
GRAMMAR_WORDS: tuple[str, ...] = ("a", "on", "background", *COLORS, *SHAPES, *BACKGROUNDS)


def caption(color: str, shape: str, background: str) -> str:
    return f"a {color} {shape} on a {background} background"


def background_caption(background: str) -> str:
    """The caption of an image with no shape: what an inpainting prompt asks for to remove one."""
    return f"a {background} background"


def blank(background: str) -> np.ndarray:
    """A (64, 64, 3) uint8 image of the plain background."""
    image = np.empty((SIZE, SIZE, 3), dtype=np.uint8)
    image[:] = BACKGROUNDS[background]
    return image


@dataclass(frozen=True)
class Sample:
    """One drawn image with what it shows; `box` is (x0, y0, x1, y1), exclusive ends, in pixels."""

    image: np.ndarray  # (64, 64, 3) uint8
    mask: np.ndarray  # (64, 64) bool, True on the shape
    color: str
    shape: str
    background: str
    box: tuple[int, int, int, int]

    @property
    def caption(self) -> str:
        return caption(self.color, self.shape, self.background)


def shape_mask(shape: str, x0: int, y0: int, size: int, side: int = SIZE) -> np.ndarray:
    """The pixels of `shape` whose bounding box is the `size`-px square at (x0, y0), on a `side`-px canvas."""
    ys, xs = np.mgrid[0:side, 0:side].astype(np.float32) + 0.5  # pixel centers
    u = (xs - x0) / size  # 0..1 across the bounding box
    v = (ys - y0) / size
    inside = (u >= 0) & (u <= 1) & (v >= 0) & (v <= 1)
    if shape == "square":
        return inside
    if shape == "circle":
        return (u - 0.5) ** 2 + (v - 0.5) ** 2 <= 0.25
    if shape == "triangle":
        # upright: apex at the top middle, base along the bottom edge
        return inside & (np.abs(u - 0.5) <= v / 2)
    raise ValueError(f"unknown shape {shape!r}; use one of {', '.join(SHAPES)}")


def draw(color: str, shape: str, background: str, x0: int, y0: int, size: int) -> Sample:
    mask = shape_mask(shape, x0, y0, size)
    image = blank(background)
    image[mask] = COLORS[color]
    return Sample(image, mask, color, shape, background, (x0, y0, x0 + size, y0 + size))


def random_sample(rng: np.random.Generator) -> Sample:
    color = list(COLORS)[rng.integers(len(COLORS))]
    shape = SHAPES[rng.integers(len(SHAPES))]
    background = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
    size = int(rng.integers(MIN_SHAPE, MAX_SHAPE + 1))
    x0, y0 = (int(v) for v in rng.integers(0, SIZE - size + 1, size=2))
    return draw(color, shape, background, x0, y0, size)


def make_batch(seed: int, n: int) -> list[Sample]:
    """`n` samples drawn from `seed`; the same seed gives the same samples everywhere."""
    rng = np.random.default_rng(seed)
    return [random_sample(rng) for _ in range(n)]


def to_tensor_array(samples: list[Sample]) -> np.ndarray:
    """(n, 3, 64, 64) float32 in [-1, 1], the range the VAE is trained on."""
    return images_to_array([s.image for s in samples])


def images_to_array(images: list[np.ndarray]) -> np.ndarray:
    """(n, 3, H, W) float32 in [-1, 1] from (H, W, 3) uint8 images."""
    return np.stack(images).astype(np.float32).transpose(0, 3, 1, 2) / 127.5 - 1.0
