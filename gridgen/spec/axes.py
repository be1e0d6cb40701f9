"""Reads a spec's axes: the list form (`seed: 1, 2, 3`, ranges, A1111 ranges), the full form of values
(`15: steps=15` and mappings with title, description, params, skip, show), and an axis's `default:`.
"""

from __future__ import annotations

from typing import Any

from gridgen import params as P
from gridgen.errors import Location, Problem
from gridgen.spec import limits as L
from gridgen.spec.ids import slugify, unique_ids
from gridgen.spec.model import Axis, AxisValue
from gridgen.spec.reader import SpecReader, truthy
from gridgen.spec.values import expand_numbers, split_list
from gridgen.spec.yamlnodes import Node


class AxisReader(SpecReader):
    """A spec reader that also reads axes and their values."""

    def axis(self, key: str, key_where: Location, node: Node) -> Axis | None:
        problems_before = len(self.problems)
        axis = Axis(id=slugify(key), title=str(key), location=key_where)
        default_node, listed = None, True
        if node.kind in ("scalar", "seq"):
            values = self.list_values(key, node)
        elif node.kind == "map":
            fields = self.lowered(node)
            axis.title = self.text(fields.get("title", (None, None))[1], str(key)) or str(key)
            axis.description = self.text(fields.get("description", (None, None))[1])
            for field_key, (where, _) in fields.items():
                if field_key not in ("title", "description", "default", "values"):
                    self.warn(f"unknown axis setting '{field_key}' in axis '{key}' is ignored "
                              "(expected title, description, default, values)", where)
            values_entry = fields.get("values")
            if values_entry is None:
                self.error(f"axis '{key}' has no `values:`; list its values or write `{key}: a, b, c`",
                           key_where)
                return None
            values_node = values_entry[1]
            if values_node.kind == "map":
                listed = False
                values = [v for v in (self.full_value(k, w, n) for k, w, n in values_node.entries) if v]
            else:
                values = self.list_values(key, values_node)
            default_node = fields.get("default", (None, None))[1]
        else:
            values = []
        if values is None:
            self.left_out.append(str(key))  # it varies only an ignored param; the warning says so
            return None
        axis.values = values
        if not axis.values:
            if len(self.problems) > problems_before:
                return None  # its values are already reported; "empty" would only repeat them
            where = node.location if node.kind != "map" else key_where
            self.error(f"axis '{key}' is empty; give it at least one value", where)
            return None
        for value, value_id in zip(axis.values, unique_ids([slugify(v.key) for v in axis.values]), strict=True):
            value.id = value_id
        too_many = L.axis_problem(axis, self.limits)
        if too_many is not None:
            self.problems.append(too_many)
            return None
        if default_node is not None:
            axis.default = self.default(axis, default_node, listed)
        return axis

    def default(self, axis: Axis, node: Node, listed: bool) -> str | None:
        """The value `default:` names: by key, id or title; on a listed axis also by position (1 = first),
        which is how Infinity Grid reads it there."""
        wanted = self.text(node)
        by_value = next((v.id for v in axis.values if wanted in (v.key, v.id) or slugify(wanted) == v.id), None)
        by_position = None
        if listed and wanted.strip().isdigit() and 1 <= int(wanted) <= len(axis.values):
            by_position = axis.values[int(wanted) - 1].id
        if by_value is not None and by_position is not None and by_value != by_position:
            self.warn(f"default '{wanted}' picks the value {wanted} of axis '{axis.title}'; Infinity Grid reads a "
                      f"listed axis's default as a position and would pick value {wanted} in order "
                      f"('{axis.value(by_position).title}')", node.location)
        chosen = by_value or by_position
        if chosen is None:
            names = ", ".join(v.key for v in axis.values)
            self.warn(f"default '{wanted}' names no value of axis '{axis.title}', so the page starts on its first "
                      f"value; use one of: {names}", node.location)
        return chosen

    def list_values(self, axis_key: str, node: Node) -> list[AxisValue] | None:
        """`seed: 1, 2, 3` and friends: each item sets the param the axis is named after.

        None when that param is known but ignored here (warned): the axis is left out, since its values
        would render the same image. Variables are substituted after the split, as Infinity Grid does,
        so a variable holding a comma stays one value.
        """
        problems_before = len(self.problems)
        resolved = self.resolve_param(axis_key, node.location, ignored="the axis is left out")
        if resolved is None:
            return [] if len(self.problems) > problems_before else None
        param = resolved.param
        if node.kind == "seq":
            items = [str(self.raw_value(item)).strip() for item in node.items]
        else:
            written = self.text(node, variables=False)
            items = split_list(written)
            if len(items) <= self.limits.max_axis_values:  # over the cap it is refused below, unsubstituted
                items = [self.substitute(item, node.location) for item in items]
            if '"' in written and "||" not in written and len(items) != len(written.split(",")):
                self.warn(f"axis '{axis_key}': quotes keep commas inside a value, as in A1111; Infinity Grid "
                          f"splits on every comma", node.location)
        too_many = L.values_over_cap(len(items), self.limits, f"axis '{axis_key}'")
        if too_many:
            self.problems.append(L.OverCap(too_many, node.location))
            return []
        raw_items: list[Any] = items
        if param.kind in ("int", "seed", "float"):
            notes: list[str] = []
            try:
                raw_items = expand_numbers(items, integer=param.kind != "float", notes=notes, limits=self.limits)
            except ValueError as err:
                found = L.OverCap if isinstance(err, L.CapExceeded) else Problem
                self.problems.append(found(f"axis '{axis_key}': {err}", node.location))
                return []
            for message in notes:
                self.warn(f"axis '{axis_key}': {message}", node.location)
        titles = [_title_of(raw) for raw in raw_items]
        if resolved.name == "prompt_replace" and raw_items and not any("=" in str(raw) for raw in raw_items):
            # The short form of Infinity Grid and A1111's Prompt S/R: the first value is the text each replaces.
            raw_items = [f"{raw_items[0]}={raw}" for raw in raw_items]
        values = []
        for raw, title in zip(raw_items, titles, strict=True):
            value = AxisValue(id="", key=title, title=title, location=node.location)
            problems_before = len(self.problems)
            try:
                value.params = {resolved.name: P.coerce(param, resolved.value(raw))}
                value.param_locations = {resolved.name: node.location}
            except ValueError as err:
                self.error(str(err), node.location)
            self.settle_invalid(value, problems_before)
            values.append(value)
        return values

    def full_value(self, key: str, key_where: Location, node: Node) -> AxisValue | None:
        value = AxisValue(id="", key=str(key), title=str(key), location=key_where)
        problems_before = len(self.problems)
        if node.kind == "scalar":
            text = self.text(node)
            if "=" not in text:
                self.error(f"value '{key}': expected `param=value` (like `15: steps=15`) or a mapping "
                           f"with title and params, found {text!r}", node.location)
                return None
            name, raw = (part.strip() for part in text.split("=", 1))
            parsed = self.param(name, raw, node.location)
            if parsed is not None:
                value.params = {parsed[0]: parsed[1]}
                value.param_locations = {parsed[0]: node.location}
            value.title = raw
            self.settle_invalid(value, problems_before)
            return value
        if node.kind != "map":
            self.error(f"value '{key}': expected `param=value` or a mapping with title and params, "
                       "found a list", node.location)
            return None
        fields = self.lowered(node)
        for field_key, (where, _) in fields.items():
            if field_key not in ("title", "description", "params", "skip", "show"):
                self.warn(f"unknown value setting '{field_key}' in value '{key}' is ignored "
                          "(expected title, description, params, skip, show)", where)
        if "title" in fields:
            value.title = self.text(fields["title"][1], str(key))
        value.description = self.text(fields.get("description", (None, None))[1])
        value.skip = truthy(self.text(fields["skip"][1])) if "skip" in fields else False
        value.show = not (str(self.text(fields["show"][1])).strip().lower() == "false") if "show" in fields else True
        if "params" in fields:
            problems_before = len(self.problems)
            value.params, value.param_locations = self.params_block(fields["params"][1], f"params of value '{key}'")
            self.settle_invalid(value, problems_before)
        return value


def _title_of(raw: Any) -> str:
    return f"{raw:g}" if isinstance(raw, float) else str(raw)
