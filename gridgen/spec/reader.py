"""The spec reader's shared state and small readers: the problems and warnings found so far, scalars as text
with variables substituted, mappings checked, params looked up (in gridgen's spelling or a peer tool's) and
coerced, and the `variables:` block. The axis reader and the loader build on it; problems are gathered, not
raised, so a user fixes a file in one pass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gridgen import params as P
from gridgen.errors import Location, Problem
from gridgen.spec import limits as L
from gridgen.spec.model import AxisValue
from gridgen.spec.peer_names import Resolved, resolve
from gridgen.spec.yamlnodes import Node


def truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "yes", "on", "1")


class SpecReader:
    """One read of a spec file: fills `problems` and `warnings` as it walks the node tree."""

    def __init__(self, path: Path, registry: P.Registry, supported: set[str] | None, strict: bool,
                 limits: L.Limits = L.DEFAULT_LIMITS):
        self.path = path
        self.limits = limits
        self.registry = registry
        self.supported = supported
        self.strict = strict
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        self.warned_params: set[str] = set()
        self.variables: dict[str, str] = {}
        self.skip_invalid = False
        self.left_out: list[str] = []  # axes of ignored params only

    # -- reporting -------------------------------------------------------------------------------

    def error(self, message: str, where: Location | None) -> None:
        self.problems.append(Problem(message, where))

    def warn(self, message: str, where: Location | None) -> None:
        if self.strict:
            self.error(f"{message} (an error because of --strict)", where)
        else:
            self.warnings.append(Problem(message, where, "warning"))

    # -- small readers ---------------------------------------------------------------------------

    def text(self, node: Node | None, default: str = "", variables: bool = True) -> str:
        """A scalar as text, with variables substituted unless told not to; maps and lists are reported."""
        if node is None or node.kind == "scalar" and node.value is None:
            return default
        if node.kind != "scalar":
            self.error("expected text here, found a " + ("mapping" if node.kind == "map" else "list"),
                       node.location)
            return default
        text = str(node.value) if not isinstance(node.value, bool) else str(node.value).lower()
        return self.substitute(text, node.location) if variables else text

    def substitute(self, text: str, where: Location | None) -> str:
        # Variable names match whatever their case (Infinity Grid lower-cases them); the result is capped.
        return L.substitute_variables(text, self.variables, where)

    def raw_value(self, node: Node) -> Any:
        """A param value: scalars keep their YAML type (strings get variables); lists stay lists."""
        if node.kind == "seq":
            return [self.raw_value(item) for item in node.items]
        if node.kind == "map":
            return node.plain()
        return self.substitute(node.value, node.location) if isinstance(node.value, str) else node.value

    def mapping(self, node: Node | None, what: str) -> Node | None:
        if node is None:
            return None
        if node.kind != "map":
            found = "a list" if node.kind == "seq" else f"the value {node.value!r}"
            self.error(f"{what} must be a mapping of `key: value` lines, found {found}", node.location)
            return None
        return node

    @staticmethod
    def lowered(node: Node) -> dict[str, tuple[Location, Node]]:
        """Entries keyed case-insensitively (later duplicates win, as YAML readers do)."""
        return {key.lower().strip(): (where, value) for key, where, value in node.entries}

    # -- params ----------------------------------------------------------------------------------

    def param(self, name: str, raw: Any, where: Location) -> tuple[str, Any] | None:
        """Look up and coerce one param; None when it is reported and should be dropped."""
        resolved = self.resolve_param(name, where)
        if resolved is None:
            return None
        try:
            return resolved.name, P.coerce(resolved.param, resolved.value(raw))
        except ValueError as err:
            self.error(str(err), where)
            return None

    def resolve_param(self, name: str, where: Location, ignored: str = "is ignored") -> Resolved | None:
        """The param `name` means (gridgen's spelling or a peer tool's); None when it is unknown
        (an error) or known but not supported by this backend (a warning, once per param)."""
        resolved = resolve(self.registry, name)
        if resolved is None:
            hint = self.registry.suggest(name)
            advice = f"did you mean '{hint}'?" if hint else "run `gridgen params` to list them"
            self.error(f"unknown parameter '{name}'; {advice}", where)
            return None
        if resolved.param is None or self.supported is not None and resolved.name not in self.supported:
            self.warn_unsupported(resolved, name, where, ignored)
            return None
        return resolved

    def warn_unsupported(self, resolved: Resolved, written: str, where: Location, ignored: str) -> None:
        if resolved.name in self.warned_params:
            return
        self.warned_params.add(resolved.name)
        spelled = "" if P.normalize_key(written) == P.normalize_key(resolved.name) else f" ('{written}')"
        why = f" ({resolved.note})" if resolved.note else ""
        self.warn(f"parameter '{resolved.name}'{spelled} is not supported by this backend{why} and {ignored}", where)

    def settle_invalid(self, value: AxisValue, problems_before: int) -> None:
        """Problems with a skipped value's params, and with skip_invalid an invalid value's, are warnings:
        Infinity Grid does not check skipped values and skips the invalid ones."""
        found = self.problems[problems_before:]
        if not found or not (value.skip or self.skip_invalid):
            return
        why = "the value is skipped" if value.skip else "skip_invalid: the value is skipped"
        value.skip = True
        del self.problems[problems_before:]
        self.warnings.extend(Problem(f"{p.message} ({why})", p.location, "warning") for p in found)

    def params_block(self, node: Node | None, what: str) -> tuple[dict[str, Any], dict[str, Location]]:
        values: dict[str, Any] = {}
        locations: dict[str, Location] = {}
        block = self.mapping(node, what)
        if block is None:
            return values, locations
        for name, _, value_node in block.entries:
            parsed = self.param(name, self.raw_value(value_node), value_node.location)
            if parsed is None:
                continue
            canonical, value = parsed
            if canonical in values and self.registry.params[canonical].accumulate:
                value = values[canonical] + value
            values[canonical] = value
            locations[canonical] = value_node.location
        return values, locations


    def read_variables(self, node: Node, override: bool = True) -> None:
        block = self.mapping(node, "variables")
        if block is None:
            return
        for key, where, value in block.entries:
            if override or key not in self.variables:
                self.variables[key] = "" if value.value is None else str(value.plain())
            if key != key.lower():
                self.warn(f"variable '{key}' matches whatever its case here; Infinity Grid lower-cases variable "
                          f"names and would replace only '{key.lower()}'", where)
