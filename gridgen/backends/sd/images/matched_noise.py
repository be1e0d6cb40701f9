"""The fill of A1111's "Outpainting mk2": noise whose spectrum and colours match the image it extends.

The known pixels (the new area set to their mean colour) give a spectrum: magnitudes, which say how much
detail each scale has, and phases, which say where it sits. Low-frequency noise, mostly grey, is shaped by
that spectrum (its power times the image's magnitude, with the image's phases), so its structure has the
image's scales; each channel's values over the new area are then mapped onto the known pixels' distribution,
so the fill has the image's colours. The model starts from this rather than from streaks or a flat colour.

Two settings of the script shape it: the fall-off exponent (`falloff`, the power of the image's magnitudes: lower
keeps more fine detail, higher only the broad shapes) and the colour variation (how much of the starting noise is
coloured rather than grey). A fixed seed makes the fill a function of the image and these two alone, as in the
script: a seed axis varies the diffusion.
"""

from __future__ import annotations

import numpy as np

FALLOFF = 1.0  # the script's default "fall-off exponent"
COLOUR_VARIATION = 0.05  # the script's default "color variation"
NOISE_SEED = 0


def _spectrum(data: np.ndarray) -> np.ndarray:
    """Each channel's orthonormal 2D spectrum, zero frequency at the centre."""
    return np.fft.fftshift(np.fft.fft2(data, axes=(0, 1), norm="ortho"), axes=(0, 1))


def _from_spectrum(spectrum: np.ndarray) -> np.ndarray:
    return np.real(np.fft.ifft2(np.fft.ifftshift(spectrum, axes=(0, 1)), axes=(0, 1), norm="ortho"))


def _low_pass(height: int, width: int) -> np.ndarray:
    """The script's window over the centred spectrum: 1 / ((x^2 + 1)(y^2 + 1)), coordinates in [-1, 1] along
    the shorter side and stretched along the longer one."""
    short = min(height, width)
    x = (np.arange(width) / width * 2 - 1) * (width / short)
    y = (np.arange(height) / height * 2 - 1) * (height / short)
    return 1 / ((y[:, None] ** 2 + 1) * (x[None, :] ** 2 + 1))


def match_distribution(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """`values` (1D) mapped rank for rank onto `reference`'s quantiles: histogram matching of one channel."""
    ranks = np.empty(values.size)
    ranks[np.argsort(values, kind="stable")] = np.arange(values.size)
    quantiles = (ranks + 0.5) / values.size
    return np.interp(quantiles, (np.arange(reference.size) + 0.5) / reference.size, np.sort(reference))


def matched_noise(image: np.ndarray, new_area: np.ndarray, falloff: float = FALLOFF,
                  colour_variation: float = COLOUR_VARIATION) -> np.ndarray:
    """`image` (H, W, 3) in [0, 1] with its `new_area` (H, W, bool) replaced by matched noise, shaped by the
    image's magnitudes to the power `falloff`, from noise whose share `colour_variation` is coloured."""
    known = ~new_area
    weights = known[..., None].astype(np.float64)
    windowed = image * weights
    windowed /= max(windowed.max(), 1e-6)
    windowed += image[known].mean() * (1 - weights)  # the new area at the mean colour, not black
    source = _spectrum(windowed)
    magnitude = np.abs(source)
    phase = source / np.maximum(magnitude, 1e-12)

    rng = np.random.default_rng(NOISE_SEED)
    noise = rng.random(image.shape)
    grey = noise.mean(axis=2, keepdims=True)
    noise = colour_variation * noise + (1 - colour_variation) * grey
    noise = _from_spectrum(_spectrum(noise) * _low_pass(*image.shape[:2])[..., None])
    shaped = _from_spectrum(np.abs(_spectrum(noise)) ** 2 * magnitude ** falloff * phase)
    shaped -= shaped.min()
    shaped /= max(shaped.max(), 1e-12)

    filled = image.astype(np.float64).copy()
    if new_area.any() and known.any():
        for channel in range(image.shape[2]):
            filled[new_area, channel] = match_distribution(shaped[new_area, channel], image[known, channel])
    return np.clip(filled, 0, 1)
