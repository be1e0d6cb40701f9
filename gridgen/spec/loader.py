"""Builds a `GridSpec` from a YAML grid file, collecting every problem with its location: owns the top level
and the `grid:` block, and hands axes to `gridgen.spec.axes` and includes to `gridgen.spec.includes`.

The format is a superset of the Infinity Grid Generator's: its files load unchanged. Keys are
matched the way that script matches them (case-insensitively, and parameter names also ignore
spaces and underscores). Problems are gathered, not raised one at a time, so a user fixes a file
in one pass: `read_spec` keeps them on the spec for the backend's checks to join (see
`gridgen.runner.plan_spec`); `load_spec` raises `SpecError` holding all of them at the end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gridgen import params as P
from gridgen.errors import Location, SpecError
from gridgen.spec import limits as L
from gridgen.spec.axes import AxisReader
from gridgen.spec.ids import slugify, unique_ids
from gridgen.spec.includes import included_axes
from gridgen.spec.model import PAGE_DEFAULTS, Axis, GridMeta, GridSpec
from gridgen.spec.reader import truthy
from gridgen.spec.report import in_file_order
from gridgen.spec.resolved import resolved_form
from gridgen.spec.yamlnodes import Node, read_yaml

_GRID_KEYS = {
    "title", "author", "description", "params", "format", "stylesheet", "outpath", "skipinvalid",
    "backend", "modelsdir", *(P.normalize_key(k) for k in PAGE_DEFAULTS),
}
_TOP_KEYS = {"grid", "axes", "variables", "include"}
_NONE_WORDS = {"", "none", "null"}
__all__ = ["load_spec", "read_meta", "read_spec", "slugify"]


class _Loader(AxisReader):
    """One load of a whole spec file."""

    # -- grid block --------------------------------------------------------------------------------

    def meta(self, node: Node | None, with_params: bool = True) -> tuple[GridMeta, dict[str, Any], dict[str, Location]]:
        meta = GridMeta(title=self.path.stem)
        block = self.mapping(node, "grid")
        if block is None:
            return meta, {}, {}
        base, base_locations = {}, {}
        for key, where, value in block.entries:
            name = P.normalize_key(key)
            if name == "params":
                if with_params:
                    base, base_locations = self.params_block(value, "grid params")
            elif name in ("title", "author", "description", "stylesheet", "outpath", "backend"):
                setattr(meta, name, self.text(value))
            elif name == "modelsdir":
                meta.models_dir = self.text(value) or None
            elif name == "format":
                try:
                    meta.format = P.coerce(self.registry.params["format"], self.text(value)) if self.text(value) \
                        else "png"
                except ValueError as err:
                    self.error(str(err), value.location)
            elif name == "skipinvalid":
                meta.skip_invalid = self.skip_invalid = truthy(self.text(value))
            elif name in {P.normalize_key(k): k for k in PAGE_DEFAULTS}:
                page_key = {P.normalize_key(k): k for k in PAGE_DEFAULTS}[name]
                if page_key.endswith("axis"):
                    axis = self.text(value).strip()
                    meta.page[page_key] = None if axis.lower() in _NONE_WORDS else axis
                else:
                    meta.page[page_key] = truthy(self.text(value))
            else:
                import difflib

                close = difflib.get_close_matches(name, sorted(_GRID_KEYS), n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                self.warn(f"unknown grid setting '{key}' is ignored{hint}", where)
        return meta, base, base_locations

    # -- the whole file --------------------------------------------------------------------------

    def load(self, root: Node, overrides: dict[str, str]) -> GridSpec:
        if self.mapping(root, "a grid file") is None:
            raise SpecError(self.problems)
        fields = self.lowered(root)
        for key, (where, _) in fields.items():
            if key not in _TOP_KEYS:
                self.warn(f"unknown top-level key '{key}' is ignored (expected grid, axes, variables, include)",
                          where)
        if "variables" in fields:
            self.read_variables(fields["variables"][1])
        axis_entries = included_axes(self, root, self.path.parent, (self.path.resolve(),))
        included = len(axis_entries)
        grid_node = fields.get("grid", (None, None))[1]
        meta, base, base_locations = self.meta(grid_node)
        for name, raw in overrides.items():
            parsed = self.param(name, raw, Location(None))
            if parsed is not None:
                base[parsed[0]] = parsed[1]
                base_locations[parsed[0]] = Location(None)
        axes_entry = fields.get("axes")
        if axes_entry is not None and self.mapping(axes_entry[1], "axes") is not None:
            axis_entries.extend(axes_entry[1].entries)
        axes: list[Axis] = []
        from_include: list[bool] = []
        for position, (key, where, node) in enumerate(axis_entries):
            axis = self.axis(key, where, node)
            if axis is None:
                continue
            # An axis replaces an included one of the same id; two of the spec's own (`cfg scale`, `cfg_scale`)
            # are both kept, as Infinity Grid keeps them.
            earlier = next((i for i, old in enumerate(axes) if old.id == axis.id and from_include[i]), None)
            if earlier is None:
                axes.append(axis)
                from_include.append(position < included)
            else:
                axes[earlier], from_include[earlier] = axis, position < included
        for axis, axis_id in zip(axes, unique_ids([axis.id for axis in axes]), strict=True):
            axis.id = axis_id
        spec = GridSpec(self.path, meta, base, axes, base_locations)
        too_many = L.cells_problem(spec.axes, self.limits, axes_entry[0] if axes_entry else Location(self.path, 1, 1))
        if too_many is not None:
            self.problems.append(too_many)
        self.check_grid(spec, axes_entry[0] if axes_entry else Location(self.path, 1, 1))
        spec.warnings = self.warnings
        spec.problems = self.problems
        spec.resolved = resolved_form(spec)
        return spec

    def check_grid(self, spec: GridSpec, axes_where: Location) -> None:
        if not spec.axes and not self.problems:
            left_out = f" (axes {', '.join(self.left_out)} vary only ignored parameters)" if self.left_out else ""
            self.error(f"the grid has no axes{left_out}, so it has zero cells; add at least one axis under `axes:`",
                       axes_where)
            return
        skipped = next((axis for axis in spec.axes if all(value.skip for value in axis.values)), None)
        if skipped is not None:
            self.warn(f"every value of axis '{skipped.title}' is skipped, so the grid has zero cells to render",
                      skipped.location)
        ids = {axis.id for axis in spec.axes}
        for page_key in ("x_axis", "y_axis", "x_super_axis", "y_super_axis"):
            chosen = spec.meta.page.get(page_key)
            if chosen and slugify(chosen) not in ids:
                self.warn(f"`{page_key.replace('_', ' ')}: {chosen}` names no axis; the page picks one itself",
                          axes_where)
                spec.meta.page[page_key] = None
            elif chosen:
                spec.meta.page[page_key] = slugify(chosen)



def read_spec(path: str | Path, *, overrides: dict[str, str] | None = None,
              registry: P.Registry | None = None, supported: set[str] | None = None,
              strict: bool = False, limits: L.Limits = L.DEFAULT_LIMITS) -> GridSpec:
    """Read a grid spec, keeping what is valid and listing the errors in `spec.problems` (warnings in
    `spec.warnings`), so later checks can add theirs; raises SpecError only when the file is not a grid at all
    (unreadable, not YAML, not a mapping).

    `overrides` are `--set` values that replace base params; `supported` names the params the
    chosen backend acts on (others warn, or fail with `strict`); `limits` caps the values per axis and the cells.
    """
    path = Path(path)
    loader = _Loader(path, registry or P.Registry(), supported, strict, limits)
    return loader.load(read_yaml(path), overrides or {})


def load_spec(path: str | Path, *, overrides: dict[str, str] | None = None,
              registry: P.Registry | None = None, supported: set[str] | None = None,
              strict: bool = False, limits: L.Limits = L.DEFAULT_LIMITS) -> GridSpec:
    """Load and validate a grid spec (the arguments as `read_spec`'s); raises SpecError listing every problem
    found, in file and line order."""
    spec = read_spec(path, overrides=overrides, registry=registry, supported=supported, strict=strict, limits=limits)
    if spec.problems:
        raise SpecError(in_file_order(spec.problems + spec.warnings, spec.path))
    return spec


def read_meta(path: str | Path) -> GridMeta:
    """A spec's `grid:` settings (backend, models_dir, outpath, ...), variables and includes applied, read
    before its backend is known: the full load needs the backend's params. Problems are left to `load_spec`."""
    path = Path(path)
    loader = _Loader(path, P.Registry(), None, strict=False)
    root = read_yaml(path)
    if root.kind != "map":
        return GridMeta(title=path.stem)
    fields = loader.lowered(root)
    if "variables" in fields:
        loader.read_variables(fields["variables"][1])
    included_axes(loader, root, path.parent, (path.resolve(),))  # the included files' variables
    return loader.meta(fields.get("grid", (None, None))[1], with_params=False)[0]
