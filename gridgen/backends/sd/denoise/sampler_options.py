"""A1111's per-step sampler options (eta and the sigma settings): which samplers honour each, the arguments a
scheduler's `step` gets for them, and the warning for a sampler that would ignore one.

diffusers takes these as `step` arguments, one value for the whole batch, so they are part of the batch key.
Whether a sampler honours an option is read from its scheduler's `step` signature, not kept in a list; the
ancestral samplers' eta is the exception, honoured by the schedulers of `ancestral_eta` as the sampler table's
`eta` says (per row where the sampler allows it, so it leaves the batch key).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from gridgen.backends.base import ParamProblem
from gridgen.backends.sd.denoise.samplers import SAMPLERS, find_sampler

# The param each option is set by, and the `step` argument diffusers names it.
STEP_OPTIONS = {"eta": "eta", "s_churn": "s_churn", "s_tmin": "s_tmin", "s_tmax": "s_tmax", "s_noise": "s_noise"}
# Every param a denoising recipe reads from its cells' params: a stage that hands its recipe the cell's params
# depends on these (its cache key holds them).
RECIPE_READS = (*STEP_OPTIONS, "eta_noise_seed_delta", "var_seed", "var_seed_strength", "seed_resize_from_w",
                "seed_resize_from_h")


@functools.cache
def _step_arguments(class_name: str) -> frozenset[str]:
    import diffusers

    return frozenset(inspect.signature(getattr(diffusers, class_name).step).parameters)


def honours(sampler_name: str, option: str) -> bool:
    """Whether the sampler's diffusers scheduler takes `option` in its `step`."""
    sampler = find_sampler(sampler_name)
    if sampler is None:
        return False
    return STEP_OPTIONS[option] in _step_arguments(sampler.scheduler) or (
        option == "eta" and sampler.eta is not None)


def honouring(option: str) -> list[str]:
    """The samplers, by A1111 name, that honour `option`."""
    return [sampler.name for sampler in SAMPLERS if honours(sampler.name, option)]


def batch_part(params: dict[str, Any]) -> tuple:
    """The options' values as the cell's sampler reads them: a batch shares one of each, except an eta its sampler
    takes per row."""
    sampler = str(params["sampler"])
    found = find_sampler(sampler)
    per_row_eta = found is not None and found.eta == "row"
    return tuple((option, params.get(option)) for option in STEP_OPTIONS
                 if params.get(option) is not None and honours(sampler, option)
                 and not (option == "eta" and per_row_eta))


def step_kwargs(params: dict[str, Any], step_arguments: frozenset[str] | set[str]) -> dict[str, Any]:
    """The `step` arguments of a batch whose first cell has `params`, for a scheduler taking `step_arguments`."""
    return {STEP_OPTIONS[option]: float(params[option]) for option in STEP_OPTIONS
            if params.get(option) is not None and STEP_OPTIONS[option] in step_arguments}


def problems(params: dict[str, Any]) -> list[ParamProblem]:
    """A warning for each option set on a sampler that ignores it, naming the samplers that honour it."""
    sampler = str(params["sampler"])
    return [ParamProblem(option, f"{option} is ignored by sampler {find_sampler(sampler).name!r}; it is honoured by "
                                 f"{', '.join(honouring(option))}", "warning")
            for option in STEP_OPTIONS if params.get(option) is not None and not honours(sampler, option)]
