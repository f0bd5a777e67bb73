"""Op declarations, one module per namespace/family; importing this package
registers all of them (see `ir.registry`)."""

from ir.ops import core, elementwise, fused, more, quant, shape  # noqa: F401
