"""The sampler table builds real diffusers schedulers from the tiny model's scheduler config."""

from __future__ import annotations

import json

import pytest

from gridgen.backends.sd.denoise.samplers import (
    SAMPLERS,
    SCHEDULES,
    find_sampler,
    find_schedule,
    make_scheduler,
    scheduler_choice,
    unaccepted_keys,
    unsupported_schedule,
)
from gridgen.tiny import TINY_MODEL_DIR

BASE_CONFIG = json.loads((TINY_MODEL_DIR / "scheduler" / "scheduler_config.json").read_text())


def test_table_has_the_nineteen_a1111_samplers():
    assert len(SAMPLERS) == 19
    assert len({s.name for s in SAMPLERS}) == 19


@pytest.mark.parametrize("sampler", SAMPLERS, ids=lambda s: s.name)
def test_every_sampler_builds_from_the_tiny_config(sampler):
    scheduler = make_scheduler(scheduler_choice(sampler.name), BASE_CONFIG)
    assert type(scheduler).__name__ == sampler.scheduler
    for key, value in sampler.config.items():
        assert scheduler.config[key] == value
    if "use_karras_sigmas" in scheduler.config:
        assert scheduler.config.use_karras_sigmas is sampler.karras
    # SD's noise schedule carries over from the model's config
    assert scheduler.config.beta_schedule == "scaled_linear"
    assert scheduler.config.beta_start == pytest.approx(0.00085)
    scheduler.set_timesteps(4)
    assert len(scheduler.timesteps) >= 4


def test_sd_settings_for_ddim_ride_along_in_the_tiny_config():
    ddim = make_scheduler(scheduler_choice("DDIM"), BASE_CONFIG)
    assert ddim.config.clip_sample is False
    assert ddim.config.set_alpha_to_one is False


@pytest.mark.parametrize("alias, name", [
    ("euler a", "Euler a"),
    ("k_euler_a", "Euler a"),
    ("Euler Ancestral", "Euler a"),
    ("DPM++ 2M Karras", "DPM++ 2M Karras"),
    ("dpmpp_2m_karras", "DPM++ 2M Karras"),
    ("dpmpp_2m", "DPM++ 2M"),
    ("k_lms", "LMS"),
    ("pndm", "PLMS"),
])
def test_aliases_resolve(alias, name):
    assert find_sampler(alias).name == name


def test_unknown_sampler_is_none_and_scheduler_choice_refuses_it():
    assert find_sampler("not a sampler") is None
    with pytest.raises(ValueError, match="unknown sampler"):
        scheduler_choice("not a sampler")


@pytest.mark.parametrize("schedule", [s for s in SCHEDULES if s != "automatic"])
def test_each_schedule_type_sets_its_flag(schedule):
    sampler = next(s for s in SAMPLERS if not s.karras and unsupported_schedule(s.name, schedule) is None)
    scheduler = make_scheduler(scheduler_choice(sampler.name, schedule), BASE_CONFIG)
    for key, value in SCHEDULES[schedule].items():
        assert scheduler.config[key] == value
    scheduler.set_timesteps(5)


def test_karras_samplers_use_karras_sigmas_on_automatic():
    scheduler = make_scheduler(scheduler_choice("DPM++ 2M Karras", "automatic"), BASE_CONFIG)
    assert scheduler.config.use_karras_sigmas is True
    plain = make_scheduler(scheduler_choice("DPM++ 2M", "automatic"), BASE_CONFIG)
    assert plain.config.use_karras_sigmas is False


def test_schedule_aliases():
    assert find_schedule("Normal") == "automatic"
    assert find_schedule("SGM Uniform") == "sgm_uniform"
    assert find_schedule("Karras") == "karras"
    assert find_schedule("nope") is None


def test_unsupported_combo_is_reported():
    reason = unsupported_schedule("DDIM", "karras")
    assert reason is not None
    assert "DDIM" in reason and "karras" in reason
    assert unsupported_schedule("Euler", "karras") is None


def test_every_samplers_automatic_schedule_is_one_its_scheduler_takes():
    # unsupported_schedule answers "automatic" without loading diffusers; this is what lets it.
    for sampler in SAMPLERS:
        assert unaccepted_keys(scheduler_choice(sampler.name, "automatic")) == [], sampler.name
