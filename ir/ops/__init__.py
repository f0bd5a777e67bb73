"""Op declarations, one module per namespace/family; importing this package
registers all of them (see `ir.registry`)."""

from ir.ops import attention, core, elementwise, fused, kv, llm, more, quant, shape  # noqa: F401
