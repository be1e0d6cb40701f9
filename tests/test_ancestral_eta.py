"""A1111's eta on the ancestral samplers (Euler a, DPM2 a, DPM++ SDE, DPM++ 2M SDE), measured on the embedded
gridgen-tiny model: eta 1 is diffusers' own step, eta 0 the deterministic step of the sampler's twin."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import EulerAncestralDiscreteScheduler

from gridgen.backends.sd.denoise import ancestral_eta, sampler_options
from gridgen.metadata import a1111_parameters
from tests.batch_checks import assert_one_batch_renders_as_alone
from tests.test_sampler_options import cell, differ, folder, render, same  # noqa: F401 (folder is a fixture)


@pytest.mark.parametrize("sampler", ["Euler a", "DPM2 a Karras", "DPM++ SDE", "DPM++ 2M SDE Karras"])
def test_eta_1_renders_exactly_as_the_sampler_does_without_eta(backend, sampler):
    assert np.array_equal(render(backend, sampler=sampler, eta=1.0), render(backend, sampler=sampler))


@pytest.mark.parametrize(("ancestral", "deterministic"), [("Euler a", "Euler"), ("DPM2 a", "DPM2"),
                                                           ("DPM++ 2M SDE", "DPM++ 2M")])
def test_eta_0_is_the_deterministic_twin_and_half_is_neither(backend, ancestral, deterministic):
    twin = render(backend, sampler=deterministic)
    usual = render(backend, sampler=ancestral)
    assert differ(usual, twin)
    assert same(render(backend, sampler=ancestral, eta=0.0), twin)
    half = render(backend, sampler=ancestral, eta=0.5)
    assert differ(half, twin) and differ(half, usual)


def test_euler_a_step_scales_the_fresh_noise_by_each_rows_eta():
    parent = EulerAncestralDiscreteScheduler()
    variant = ancestral_eta.EtaEulerAncestralDiscreteScheduler.from_config(parent.config)
    variant.etas = torch.tensor([1.0, 0.0, 0.5])
    for scheduler in (parent, variant):
        scheduler.set_timesteps(5)
    sample, output = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0)), torch.randn(3, 4, 8, 8)
    expected_full = parent.step(output, parent.timesteps[0], sample,
                                generator=[torch.Generator().manual_seed(s) for s in (1, 2, 3)]).prev_sample
    stepped = variant.step(output, variant.timesteps[0], sample,
                           generator=[torch.Generator().manual_seed(s) for s in (1, 2, 3)]).prev_sample
    sigma, sigma_next = parent.sigmas[0], parent.sigmas[1]
    assert torch.equal(stepped[0], expected_full[0])
    assert torch.allclose(stepped[1], sample[1] + output[1] * (sigma_next - sigma), atol=1e-5)  # plain Euler
    noise = torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(3))
    down, up = ancestral_eta.ancestral_sigmas(sigma, sigma_next, torch.tensor(0.5))
    assert up == 0.5 * (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5
    assert torch.allclose(stepped[2], sample[2] + output[2] * (down - sigma) + noise * up, atol=1e-5)


def test_dpm_sde_at_eta_0_adds_no_noise(backend):
    # Its step noise is gone, so moving it to another stream (ENSD) changes nothing.
    zero = render(backend, sampler="DPM++ SDE", eta=0.0)
    assert same(render(backend, sampler="DPM++ SDE", eta=0.0, eta_noise_seed_delta=31337), zero)
    usual = render(backend, sampler="DPM++ SDE")
    assert differ(render(backend, sampler="DPM++ SDE", eta_noise_seed_delta=31337), usual)
    half = render(backend, sampler="DPM++ SDE", eta=0.5)
    assert differ(zero, usual) and differ(half, zero) and differ(half, usual)


def test_euler_a_eta_is_per_cell_in_a_mixed_batch(folder, monkeypatch):  # noqa: F811
    cells = [cell("a", sampler="Euler a"), cell("b", sampler="Euler a", seed=3, eta=0.0),
             cell("c", sampler="Euler a", seed=4, eta=0.5, eta_noise_seed_delta=31337),
             cell("d", sampler="Euler a", eta=0.25, var_seed=9, var_seed_strength=0.3)]
    assert_one_batch_renders_as_alone(folder, cells, monkeypatch)


@pytest.mark.parametrize("sampler", ["DPM++ SDE", "DPM++ 2M SDE"])
def test_sde_eta_is_per_cell_in_a_mixed_batch(folder, monkeypatch, sampler):  # noqa: F811
    cells = [cell("a", sampler=sampler), cell("b", sampler=sampler, seed=3, eta=0.0),
             cell("c", sampler=sampler, seed=4, eta=0.5, eta_noise_seed_delta=31337)]
    assert_one_batch_renders_as_alone(folder, cells, monkeypatch)


def test_dpm2_a_eta_splits_batches_and_euler_a_eta_does_not(backend):
    def key(**params):
        return backend.batch_key(cell(**params).params)

    for sampler in ("Euler a", "DPM++ SDE", "DPM++ 2M SDE"):
        assert key(sampler=sampler, eta=0.3) == key(sampler=sampler)
    assert len({key(sampler="DPM2 a"), key(sampler="DPM2 a", eta=0.3), key(sampler="DPM2 a", eta=0.6)}) == 3


def test_ancestral_samplers_no_longer_warn_about_eta(backend):
    for sampler in ("Euler a", "DPM2 a", "DPM2 a Karras", "DPM++ SDE", "DPM++ 2M SDE Karras"):
        assert not [p for p in backend.validate(cell(sampler=sampler, eta=0.5).params) if p.param == "eta"]
    (warning,) = [p for p in backend.validate(cell(sampler="LMS", eta=0.5).params) if p.param == "eta"]
    assert {"DDIM", "Euler a", "DPM2 a"} <= set(warning.message.split("honoured by ", 1)[1].split(", "))
    assert {"DDIM", "Euler a", "DPM2 a", "DPM2 a Karras", "DPM++ SDE", "DPM++ 2M SDE"} <= set(
        sampler_options.honouring("eta"))
    assert not [p for p in backend.validate(cell(sampler="DPM++ 2M").params) if p.param == "eta"]
    assert [p for p in backend.validate(cell(sampler="DPM++ 2M", eta=0.5).params) if p.param == "eta"]


def test_png_parameters_write_ancestral_eta_as_a1111_does():
    def fields(sampler):
        text = a1111_parameters({"prompt": "x", "seed": 1, "sampler": sampler, "eta": 0.5})
        return dict(item.split(": ", 1) for item in text.splitlines()[-1].split(", "))

    assert fields("Euler a")["Eta"] == "0.5" and "Eta DDIM" not in fields("Euler a")
    assert fields("DDIM")["Eta DDIM"] == "0.5" and "Eta" not in fields("DDIM")


def test_every_sampler_the_table_gives_an_ancestral_eta_has_an_eta_scheduler():
    from gridgen.backends.sd.denoise.samplers import SAMPLERS

    takers = {sampler.scheduler for sampler in SAMPLERS if sampler.eta}
    assert takers == set(ancestral_eta.VARIANTS)
    assert all(sampler.ancestral for sampler in SAMPLERS if sampler.eta)
