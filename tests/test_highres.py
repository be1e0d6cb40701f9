"""High resolution beyond the model's size: the tiled VAE and tiled diffusion (MultiDiffusion) on gridgen-tiny."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL

from gridgen.backends import BackendContext
from gridgen.backends.base import Cell
from gridgen.backends.diffusers_backend import DiffusersBackend
from gridgen.backends.sd.denoise import multidiffusion
from gridgen.backends.sd.denoise.guidance import guide_for
from gridgen.backends.sd.images import tile_norms, vae_tiling
from gridgen.tiny import TINY_MODEL_DIR


@pytest.fixture(scope="module")
def vae() -> AutoencoderKL:
    return AutoencoderKL.from_pretrained(TINY_MODEL_DIR / "vae").eval()


def _picture(side: int) -> torch.Tensor:
    """Soft shapes on a gradient in [-1, 1], (1, 3, side, side): content the tiny VAE was trained on."""
    y, x = torch.meshgrid(torch.linspace(0, 1, side), torch.linspace(0, 1, side), indexing="ij")
    red = (((x - 0.3) ** 2 + (y - 0.4) ** 2) < 0.05).float()
    blue = ((x > 0.55) & (x < 0.9) & (y > 0.6) & (y < 0.85)).float()
    rgb = torch.stack([0.2 + 0.7 * red + 0.3 * x, 0.3 * y, 0.2 + 0.7 * blue])
    return (rgb.clamp(0, 1) * 2 - 1)[None]


@torch.inference_mode()
def test_tiled_vae_decode_matches_untiled_decode(vae):
    """Latents of stationary content, 96 cells a side: 16 of the tiny VAE's overlapping tiles. (Tiles of flat
    colour fields drift further: each tile's GroupNorm sees only its own statistics.)"""
    latents = torch.randn(1, 4, 96, 96, generator=torch.Generator().manual_seed(0))
    whole = vae_tiling.decode(vae, latents, "off")
    tiled = vae_tiling.decode(vae, latents, "on")
    assert tiled.shape == whole.shape == (1, 3, 384, 384)
    difference = (tiled - whole).abs()
    assert difference.max() > 0  # the tiled path ran (tiles do not see their neighbours' context)
    assert difference.mean() < 0.03 and difference.max() < 0.3, (difference.mean(), difference.max())
    assert difference.mean() < 0.15 * whole.abs().mean()


@torch.inference_mode()
def test_tiled_vae_encode_matches_untiled_encode(vae):
    """A texture whose statistics are the same in every tile (see the decode test on flat fields)."""
    y, x = torch.meshgrid(torch.arange(384.0), torch.arange(384.0), indexing="ij")
    pixels = torch.stack([torch.sin(x / 5), torch.cos(y / 7), torch.sin((x + y) / 9)])[None] * 0.8
    whole = vae_tiling.encode(vae, pixels, "off").mean
    tiled = vae_tiling.encode(vae, pixels, "on").mean
    assert tiled.shape == whole.shape
    assert (tiled - whole).abs().mean() < 0.05 * whole.abs().mean()


def test_vae_tiling_auto_tiles_only_above_four_tiles(vae):
    tile = vae_tiling.tile_pixels(vae)
    assert tile == vae_tiling.MIN_TILE_LATENTS * 4  # the tiny VAE's own sample_size (64 px) is raised
    assert not vae_tiling.uses_tiles(vae, "auto", 2 * tile, 2 * tile)
    assert vae_tiling.uses_tiles(vae, "auto", 2 * tile, 2 * tile + 4)
    assert vae_tiling.uses_tiles(vae, "on", 64, 64) and not vae_tiling.uses_tiles(vae, "off", 4096, 4096)


class _Unet(torch.nn.Module):
    """A stand-in UNet whose prediction at a latent cell depends on that cell and the text only, so averaging
    windows must reproduce the whole canvas's prediction exactly wherever the windows are cut."""

    dtype = torch.float32

    def forward(self, x, t, encoder_hidden_states, **_):
        from types import SimpleNamespace

        return SimpleNamespace(sample=torch.sin(x * 3) + encoder_hidden_states.mean(dim=(1, 2)).view(-1, 1, 1, 1))


@pytest.mark.parametrize("batch", [1, 3, 16])
def test_windows_average_to_the_whole_prediction_for_a_pointwise_model(batch):
    unet = _Unet()
    cond, uncond = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    guide = guide_for(unet, cond, uncond, [7.0, 1.0])
    x, t = torch.randn(2, 4, 40, 56), torch.tensor(500)
    whole = guide()(x, t)
    tiled = multidiffusion.tiled_guide(guide, multidiffusion.Windows(64, 32, batch), factor=4)()(x, t)
    assert torch.allclose(tiled, whole, atol=1e-6)


def test_window_boxes_cover_the_canvas_with_the_overlap():
    found = multidiffusion.boxes(40, 56, 16, 8)
    covered = torch.zeros(40, 56)
    for y, x, h, w in found:
        assert (h, w) == (16, 16)
        covered[y:y + h, x:x + w] += 1
    assert covered.min() >= 1
    assert multidiffusion.boxes(16, 16, 16, 8) == [(0, 0, 16, 16)]


def test_tile_diffusion_settings_are_checked():
    backend = DiffusersBackend(BackendContext(spec_dir=".", device="cpu"))
    try:
        problems = backend.validate({"tile_diffusion": True, "tile_diffusion_size": 62, "tile_diffusion_overlap": 66})
        names = sorted(problem.param for problem in problems)
        assert names == ["tile_diffusion_overlap", "tile_diffusion_overlap", "tile_diffusion_size"], problems
        assert not backend.validate({"tile_diffusion": True, "width": 256, "height": 64})
        assert backend.batch_key({"tile_diffusion": True}) != backend.batch_key({})
        assert backend.batch_key({"vae_tiling": "on"}) != backend.batch_key({})
    finally:
        backend.close()


@pytest.fixture()
def backend():
    instance = DiffusersBackend(BackendContext(spec_dir=".", device="cpu"))
    yield instance
    instance.close()


def _render(backend, **params) -> np.ndarray:
    base = {"prompt": "a red circle on a white background", "seed": 3, "steps": 4, "sampler": "Euler"}
    cell = Cell(index=0, key="0", coords=("0",), params={**base, **params})
    (result,) = backend.render([cell])
    return np.asarray(result.image.convert("RGB"), dtype=np.float32)


def test_one_window_as_large_as_the_canvas_renders_the_plain_image(backend):
    plain = _render(backend, width=64, height=64)
    windowed = _render(backend, width=64, height=64, tile_diffusion=True, tile_diffusion_size=64)
    np.testing.assert_array_equal(windowed, plain)


def _column_steps(image: np.ndarray) -> np.ndarray:
    """Mean absolute colour change between each pixel column and the next."""
    return np.abs(np.diff(image, axis=1)).mean(axis=(0, 2))


def test_many_windows_leave_no_seam_at_window_borders(backend):
    """A 64-px window every 32 px across a 256-px canvas: the columns where windows start or end change no
    more than the columns inside windows do (a seam is a jump exactly there)."""
    image = _render(backend, width=256, height=64, tile_diffusion=True, tile_diffusion_size=64,
                    tile_diffusion_overlap=32, tile_diffusion_batch=3)
    steps = _column_steps(image)
    borders = [x - 1 for x in range(32, 256, 32)]
    inside = np.delete(steps, borders)
    assert steps[borders].mean() <= 1.1 * inside.mean(), (steps[borders].mean(), inside.mean())


@pytest.mark.parametrize("mode", ["on", "off"])
def test_edit_kinds_encode_with_the_cells_vae_tiling(tmp_path, monkeypatch, mode):
    """img2img, inpaint and differential diffusion encode their images as the cell's vae_tiling says, not auto."""
    from tests.test_image_modes import picture, rectangle_mask

    picture(64, 64).save(tmp_path / "init.png")
    rectangle_mask((64, 64), (16, 16, 48, 48)).save(tmp_path / "mask.png")
    asked: list[str] = []
    encode = vae_tiling.encode
    monkeypatch.setattr(vae_tiling, "encode", lambda vae, pixels, tiling="auto": asked.append(tiling) or
                        encode(vae, pixels, tiling))
    backend = DiffusersBackend(BackendContext(spec_dir=tmp_path, device="cpu", cache_bytes=0))
    try:
        edits = [{}, {"mask": "mask.png"}, {"change_map": "mask.png"}]
        for index, extra in enumerate(edits):
            params = {"prompt": "a red circle", "seed": 1, "steps": 4, "sampler": "Euler", "init_image": "init.png",
                      "denoise": 0.6, "vae_tiling": mode, **extra}
            list(backend.render([Cell(index=index, key=str(index), coords=(str(index),), params=params)]))
    finally:
        backend.close()
    assert len(asked) >= len(edits) and set(asked) == {mode}, asked


def _recording_sdxl_guide(canvas_px: tuple[int, int]):
    """A guide on a tiny random SDXL UNet conditioned on a canvas of `canvas_px` (width, height), and the list
    each UNet call's size ids land in."""
    from gridgen.backends.sd.text.clip_xl import added_conditioning
    from tests.tiny_models import sdxl_unet

    torch.manual_seed(0)
    unet = sdxl_unet().eval()
    seen: list[torch.Tensor] = []
    unet.register_forward_pre_hook(lambda _, args, kwargs: seen.append(kwargs["added_cond_kwargs"]["time_ids"]),
                                   with_kwargs=True)
    cond, uncond = torch.randn(1, 77, 72), torch.randn(1, 77, 72)
    added = [added_conditioning(torch.randn(1, 32), *canvas_px) for _ in range(2)]
    return guide_for(unet, cond, uncond, [5.0], added_cond=added[0], added_uncond=added[1]), seen


@torch.inference_mode()
def test_sdxl_windows_carry_their_own_crop_coordinates():
    """Each window's rows are conditioned as a crop at the window's top-left corner of the canvas (SDXL DemoFusion's
    per-window size conditioning); original and target size stay the canvas's."""
    factor, canvas = 8, (24, 40)  # latent cells: 192 x 320 px
    guide, seen = _recording_sdxl_guide((canvas[1] * factor, canvas[0] * factor))
    windows = multidiffusion.Windows(16 * factor, 8 * factor, 2)
    multidiffusion.tiled_guide(guide, windows, factor)()(torch.randn(1, 4, *canvas), torch.tensor(500))
    ids = torch.cat(seen)
    expected = {(y * factor, x * factor) for y, x, _, _ in multidiffusion.boxes(*canvas, 16, 8)}
    assert {tuple(int(v) for v in row[2:4]) for row in ids} == expected and len(expected) == 8
    assert (ids[:, [0, 4]] == canvas[0] * factor).all() and (ids[:, [1, 5]] == canvas[1] * factor).all()


@torch.inference_mode()
def test_demofusion_patches_carry_their_crop_and_global_views_none():
    from gridgen.backends.sd.stages import demofusion

    factor, scale = 8, 2
    guide, seen = _recording_sdxl_guide((32 * factor, 32 * factor))
    settings = {"cosine_scale_1": 3.0, "cosine_scale_2": 1.0, "cosine_scale_3": 1.0, "sigma": 0.8}
    denoise = demofusion.fused_denoiser(guide, scale, 16, 8, 4, settings, 1000, factor)
    denoise(torch.randn(1, 4, 32, 32), torch.tensor(500))
    corners = [tuple(int(v) for v in row[2:4]) for row in torch.cat(seen)]
    local = {(y * factor, x * factor) for y, x, _, _ in multidiffusion.boxes(32, 32, 16, 8)}
    assert set(corners) == local  # the patches' own corners; (0, 0) is the first patch's and the global views'
    assert corners.count((0, 0)) > corners.count((8 * factor, 8 * factor))  # ... so it is there more often


def _fields(side: int) -> dict[str, torch.Tensor]:
    """A flat colour and a smooth gradient, (1, 3, side, side) in [-1, 1]."""
    y, x = torch.meshgrid(torch.linspace(0, 1, side), torch.linspace(0, 1, side), indexing="ij")
    flat = torch.stack([torch.full_like(x, 0.8), torch.full_like(x, 0.3), torch.full_like(x, 0.2)])
    gradient = torch.stack([0.2 + 0.6 * x, 0.3 + 0.4 * y, 0.7 - 0.5 * x])
    return {"flat": flat[None] * 2 - 1, "gradient": gradient[None] * 2 - 1}


@pytest.mark.parametrize("field", ["flat", "gradient"])
@torch.inference_mode()
def test_tiled_decode_of_flat_fields_shares_the_whole_images_group_norm_statistics(vae, field):
    """Per-tile GroupNorm statistics (diffusers' own tiled_decode) tint each tile of a flat colour or a gradient
    apart; statistics shared by every tile stay close to the untiled decode, and the VAE is left as it was."""
    latents = vae.encode(_fields(384)[field]).latent_dist.mean  # 96 latent cells a side: 3 x 3 tiles
    whole = vae_tiling.decode(vae, latents, "off")
    shared = (vae_tiling.decode(vae, latents, "on") - whole).abs().mean()
    per_tile = (vae.tiled_decode(latents).sample - whole).abs().mean()  # the tile size decode() just set
    assert shared < 0.02 and shared < 0.5 * per_tile, (float(shared), float(per_tile))
    assert not any(isinstance(module, tile_norms.RecordedGroupNorm) for module in vae.modules())
    assert torch.equal(vae_tiling.decode(vae, latents, "off"), whole)
