"""A1111 sampler names and schedule types, and the diffusers scheduler each one maps to.

This module is the single table from what users type (`Euler a`, `DPM++ 2M Karras`, ComfyUI's
`dpmpp_2m`) to a diffusers scheduler class plus the config flags that make it behave like the
A1111 sampler of that name. It imports no torch: the backend turns a `SchedulerChoice` into a
scheduler with `make_scheduler`.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Sampler:
    name: str  # the A1111 display name, used in output metadata
    scheduler: str  # diffusers class name
    config: dict[str, Any] = field(default_factory=dict)
    karras: bool = False  # the A1111 name implies the Karras schedule
    ancestral: bool = False  # injects fresh noise every step
    # How the sampler takes A1111's ancestral eta (`ancestral_eta`): per row of a batch, one per batch, or not.
    eta: str | None = None
    aliases: tuple[str, ...] = ()
    # The step count the sampler is normally run at: A1111's default of 20, except where the
    # sampler's home code set another (CompVis's txt2img script ran DDIM and PLMS at 50, and
    # diffusers' first Stable Diffusion pipeline ran LMS at 50). The 4th-order linear multistep
    # samplers (LMS, PLMS) are the ones that need it: they overshoot at 20 steps and high CFG.
    usual_steps: int = 20


SAMPLERS: tuple[Sampler, ...] = (
    Sampler("Euler", "EulerDiscreteScheduler", aliases=("k_euler",)),
    Sampler("Euler a", "EulerAncestralDiscreteScheduler", ancestral=True, eta="row",
            aliases=("euler ancestral", "k_euler_a", "k_euler_ancestral", "euler_ancestral")),
    Sampler("Heun", "HeunDiscreteScheduler", aliases=("k_heun",)),
    Sampler("LMS", "LMSDiscreteScheduler", aliases=("k_lms",), usual_steps=50),
    Sampler("LMS Karras", "LMSDiscreteScheduler", karras=True),
    Sampler("DPM2", "KDPM2DiscreteScheduler", aliases=("k_dpm_2", "dpm_2")),
    Sampler("DPM2 a", "KDPM2AncestralDiscreteScheduler", ancestral=True, eta="batch",
            aliases=("k_dpm_2_a", "dpm_2_ancestral", "dpm2 ancestral")),
    Sampler("DPM2 Karras", "KDPM2DiscreteScheduler", karras=True),
    Sampler("DPM2 a Karras", "KDPM2AncestralDiscreteScheduler", karras=True, ancestral=True, eta="batch"),
    # diffusers has no ancestral single-step solver; the second-order single-step DPM-Solver++
    # is the closest deterministic relative, and the sampler's description says so.
    Sampler("DPM++ 2S a", "DPMSolverSinglestepScheduler",
            {"algorithm_type": "dpmsolver++", "solver_order": 2, "lower_order_final": True},
            aliases=("dpmpp_2s_ancestral", "dpmpp_2s_a")),
    Sampler("DPM++ 2M", "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2},
            aliases=("dpmpp_2m", "dpm++2m")),
    Sampler("DPM++ 2M Karras", "DPMSolverMultistepScheduler",
            {"algorithm_type": "dpmsolver++", "solver_order": 2}, karras=True, aliases=("dpmpp_2m_karras",)),
    Sampler("DPM++ 2M SDE", "DPMSolverMultistepScheduler",
            {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}, ancestral=True, eta="row",
            aliases=("dpmpp_2m_sde",)),
    Sampler("DPM++ 2M SDE Karras", "DPMSolverMultistepScheduler",
            {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}, karras=True, ancestral=True, eta="row",
            aliases=("dpmpp_2m_sde_karras",)),
    Sampler("DPM++ SDE", "DPMSolverSDEScheduler", ancestral=True, eta="row", aliases=("dpmpp_sde",)),
    Sampler("DPM++ SDE Karras", "DPMSolverSDEScheduler", karras=True, ancestral=True, eta="row",
            aliases=("dpmpp_sde_karras",)),
    Sampler("DDIM", "DDIMScheduler", usual_steps=50),
    Sampler("PLMS", "PNDMScheduler", {"skip_prk_steps": True}, aliases=("pndm",), usual_steps=50),
    Sampler("UniPC", "UniPCMultistepScheduler", aliases=("uni_pc", "unipc_multistep")),
)

# Each schedule type is a config flag on the schedulers that support it.
SCHEDULES: dict[str, dict[str, Any]] = {
    "automatic": {},
    "karras": {"use_karras_sigmas": True},
    "exponential": {"use_exponential_sigmas": True},
    "beta": {"use_beta_sigmas": True},
    "sgm_uniform": {"timestep_spacing": "trailing"},
}
SCHEDULE_ALIASES = {"normal": "automatic", "default": "automatic", "auto": "automatic", "sgmuniform": "sgm_uniform"}


def _norm(text: str) -> str:
    return re.sub(r"[\s_\-]+", "", str(text).lower()).removeprefix("k")


def _index() -> dict[str, Sampler]:
    table: dict[str, Sampler] = {}
    for sampler in SAMPLERS:
        for alias in (sampler.name, *sampler.aliases):
            table[_norm(alias)] = sampler
    return table


_BY_NAME = _index()


def find_sampler(name: str) -> Sampler | None:
    """The sampler a user means by `name` (case, spaces, underscores and a `k_` prefix ignored).

    A part of a name (`2m karras`) names the one sampler whose spellings contain it, as Infinity
    Grid reads it; a part that several samplers share names none.
    """
    text = str(name).strip()
    exact = _BY_NAME.get(_norm(text)) or _BY_NAME.get(re.sub(r"[\s_\-]+", "", text.lower()))
    if exact is not None or not text:
        return exact
    part = re.sub(r"[\s_\-]+", "", text.lower())
    containing = {sampler.name: sampler for key, sampler in _BY_NAME.items() if part in key}
    return next(iter(containing.values())) if len(containing) == 1 else None


def find_schedule(name: str) -> str | None:
    key = re.sub(r"[\s\-]+", "_", str(name).strip().lower())
    key = SCHEDULE_ALIASES.get(key.replace("_", ""), SCHEDULE_ALIASES.get(key, key))
    return key if key in SCHEDULES else None


@dataclass(frozen=True)
class SchedulerChoice:
    """Everything needed to build a scheduler: the class name and its config overrides."""

    class_name: str
    config: tuple[tuple[str, Any], ...]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.config)


def scheduler_choice(sampler_name: str, schedule: str = "automatic") -> SchedulerChoice:
    """Map a sampler and schedule type to a scheduler class and config; raises ValueError if unsupported."""
    sampler = find_sampler(sampler_name)
    if sampler is None:
        raise ValueError(f"unknown sampler {sampler_name!r}")
    config = dict(sampler.config)
    schedule = find_schedule(schedule) or "automatic"
    if schedule == "automatic" and sampler.karras:
        schedule = "karras"
    config.update(SCHEDULES[schedule])
    return SchedulerChoice(sampler.scheduler, tuple(sorted(config.items())))


@functools.cache
def unsupported_schedule(sampler_name: str, schedule: str) -> str | None:
    """Why a sampler cannot use a schedule type, or None when it can (checked against the class signature)."""
    if (find_schedule(schedule) or "automatic") == "automatic":
        return None  # the sampler's own settings, which its scheduler takes: no need to load diffusers to know
    choice = scheduler_choice(sampler_name, schedule)
    missing = unaccepted_keys(choice)
    if missing:
        return (f"sampler {find_sampler(sampler_name).name!r} cannot use schedule type {schedule!r} "
                f"(its diffusers scheduler {choice.class_name} has no {', '.join(missing)})")
    return None


def unaccepted_keys(choice: SchedulerChoice) -> list[str]:
    """The settings of `choice` its diffusers scheduler class does not take."""
    import inspect

    import diffusers

    accepted = inspect.signature(getattr(diffusers, choice.class_name).__init__).parameters
    return [key for key in choice.as_dict() if key not in accepted]


def make_scheduler(choice: SchedulerChoice, base_config: dict[str, Any]):
    """Build the scheduler `choice` names from a model's own scheduler config."""
    import diffusers

    cls = getattr(diffusers, choice.class_name)
    return cls.from_config(base_config, **choice.as_dict())
