"""Grid specs: YAML files in a superset of the Infinity Grid format, loaded into `GridSpec`."""

from gridgen.spec.ids import slugify
from gridgen.spec.loader import load_spec, read_meta, read_spec
from gridgen.spec.model import Axis, AxisValue, GridMeta, GridSpec

__all__ = ["Axis", "AxisValue", "GridMeta", "GridSpec", "load_spec", "read_meta", "read_spec", "slugify"]
