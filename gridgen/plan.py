"""Expands a `GridSpec` into `Cell`s, in an order that keeps expensive switches rare.

Cells are produced lazily, so a grid of hundreds of thousands of cells costs memory for one cell
at a time. The order is the cartesian product with the axes regrouped by what changing them
costs the backend: axes that change the loaded model vary slowest, then axes that change the
denoising batch (sampler, steps, size), then the rest. Consecutive cells therefore share a model
and, as far as possible, a batch, whatever the YAML order of the axes.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from gridgen import params as P
from gridgen import prompt_tags
from gridgen.backends.base import Backend, Cell
from gridgen.backends.sd.text.regions import loras_by_region
from gridgen.errors import Location, Problem
from gridgen.spec.model import Axis, AxisValue, GridSpec


def cell_key(coords: tuple[str, ...] | list[str]) -> str:
    return "/".join(coords)


def resolve_params(spec: GridSpec, values: list[AxisValue], defaults: dict[str, Any],
                   random_seed: int) -> tuple[dict[str, Any], dict[str, Location]]:
    """Merge defaults, the grid's params and each value's params (later wins; accumulating params add up)."""
    resolved = dict(defaults)
    locations = dict(spec.base_locations)
    layers = [(spec.base_params, spec.base_locations)] + [(v.params, v.param_locations) for v in values]
    accumulated: dict[str, list] = {}
    for layer, layer_locations in layers:
        for name, value in layer.items():
            if name in P.ACCUMULATING:
                accumulated.setdefault(name, []).extend(value)
            else:
                resolved[name] = value
            if name in layer_locations:
                locations[name] = layer_locations[name]
    resolved.update(accumulated)
    replaces = accumulated.get("prompt_replace")
    if replaces:
        resolved["prompt"] = P.apply_prompt_replace(resolved.get("prompt", ""), replaces)
        resolved["negative_prompt"] = P.apply_prompt_replace(resolved.get("negative_prompt", ""), replaces)
    if resolved.get("seed", 0) == -1:
        resolved["seed"] = random_seed
    return resolved, locations


def lora_tags_to_param(params: dict[str, Any]) -> bool:
    """Move `<lora:name:weight>` tags of the prompt into the `lora` param; True when there were any. A prompt whose
    regions are denoised apart keeps its tags: each region applies its own LoRAs, as in Regional Prompter's
    latent mode."""
    if loras_by_region(params):
        return False
    prompt, found = prompt_tags.take_loras(params.get("prompt") or "")
    if found:
        params["lora"] = [*(params.get("lora") or []), *found]
        params["prompt"] = prompt
    return bool(found)


def strip_extra_networks(params: dict[str, Any]) -> list[str]:
    """Remove A1111 extra-network tags no backend here applies; returns the kinds removed."""
    removed = []
    for name in ("prompt", "negative_prompt"):
        text, found = prompt_tags.strip_extra_networks(params.get(name) or "",
                                                       keep_loras=name == "prompt" and loras_by_region(params))
        if found:
            params[name] = text
            removed += found
    return removed


@dataclass
class Plan:
    spec: GridSpec
    backend: Backend
    random_seed: int
    defaults: dict[str, Any]
    order: list[int]  # indices into spec.axes, slowest-varying first
    warnings: list[Problem] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.spec.cell_count

    def cells(self) -> Iterator[Cell]:
        """Every cell, skipped ones included, in render order."""
        axes = self.spec.axes
        ordered_axes = [axes[i] for i in self.order]
        fmt = self.spec.meta.format
        warned: set[str] = set()
        takes_lora = "lora" in self.backend.supported_params()
        for picked in itertools.product(*(enumerate(axis.values) for axis in ordered_axes)):
            by_axis = {self.order[pos]: chosen for pos, chosen in enumerate(picked)}
            positions = [by_axis[i][0] for i in range(len(axes))]
            values = [by_axis[i][1] for i in range(len(axes))]
            coords = tuple(v.id for v in values)
            params, locations = resolve_params(self.spec, values, self.defaults, self.random_seed)
            if takes_lora and lora_tags_to_param(params):
                locations.setdefault("lora", locations.get("prompt"))
            for kind in strip_extra_networks(params):
                if kind not in warned:
                    warned.add(kind)
                    self.warnings.append(Problem(
                        f"<{kind}:...> prompt tags are not supported by this backend; they are removed "
                        "from the prompt", locations.get("prompt"), "warning"))
            key = cell_key(coords)
            ext = params.get("format") or fmt
            yield Cell(index=_product_index(axes, positions), key=key, coords=coords, params=params,
                       skip=any(v.skip for v in values), image_path=f"images/{key}.{ext}",
                       thumb_path=f"thumbs/{key}.webp", param_locations=locations)

    def loads(self) -> list[str]:
        """The model loads the run will make, in order (one per change of load key)."""
        described, last = [], object()
        for cell in self.cells():
            if cell.skip:
                continue
            key = self.backend.load_key(cell.params)
            if key != last:
                described.append(self.backend.describe_load(cell.params))
                last = key
        return described

    def validate(self) -> list[Problem]:
        """Every distinct problem the backend finds in any cell, located where the culprit param was set."""
        problems: dict[tuple, Problem] = {}
        for cell in self.cells():
            if cell.skip:
                continue
            for found in self.backend.validate(cell.params):
                # A param the problem blames but the spec never set (x4's init_image) points at the model.
                where = (cell.param_locations.get(found.param) if found.param else None) or \
                    cell.param_locations.get("model") or Location(self.spec.path, 1, 1)
                problems.setdefault((found.message, where), Problem(found.message, where, found.severity))
        return list(problems.values()) + self.warnings


def _product_index(axes: list[Axis], positions: list[int]) -> int:
    index = 0
    for axis, position in zip(axes, positions, strict=True):
        index = index * len(axis.values) + position
    return index


def _axis_cost(spec: GridSpec, axis: Axis, backend: Backend, defaults: dict[str, Any]) -> int:
    """2 when the axis changes the loaded model, 1 when it changes the batch, else 0."""
    variants = [resolve_params(spec, [value], defaults, 0)[0] for value in axis.values]
    if len({repr(backend.load_key(p)) for p in variants}) > 1:
        return 2
    if len({repr(backend.batch_key(p)) for p in variants}) > 1:
        return 1
    return 0


def make_plan(spec: GridSpec, backend: Backend, registry: P.Registry, random_seed: int) -> Plan:
    defaults = registry.defaults()
    costs = [_axis_cost(spec, axis, backend, defaults) for axis in spec.axes]
    order = sorted(range(len(spec.axes)), key=lambda i: -costs[i])  # stable: YAML order within a class
    return Plan(spec, backend, random_seed, defaults, order)
