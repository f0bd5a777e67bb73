"""`PassOptions`: every compile option a pass reads, typed and frozen.

The driver builds it from `compiler.driver.CompileOptions` (the CLI fills the
fields of the same names); a pass reads ``ctx.options.<field>``.  Tests build it
directly, or give `PassContext` a dict, checked key by key:

    ctx = PassContext(soc=soc, options=PassOptions(precision_mode="allow_quantize"))
    ctx = PassContext(options={"mem_limit": 1 << 20})
    PassContext(options={"overrides": "Softmax=aicpu"})   # UsageError: no option 'overrides'

None means "not set": the pass then uses its own default (place: high_performance;
quantize acts unless a precision mode other than allow_quantize is set).
Options written in pipeline text (``tile{size=256}``, ``place{overrides=...}``)
are fields of the pass itself, not of this class.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ir.errors import UsageError
from passes.calibrator import Calibrator

__all__ = ["PassOptions"]


@dataclass(frozen=True)
class PassOptions:
    # read by cast-precision (which fp16 mode) and quantize (only allow_quantize)
    precision_mode: str | None = None
    # place: high_performance (f32 Cube ops may run as f16) or high_precision (they go to Vector)
    op_select_implmode: str | None = None
    # place: per-op-kind engine, "Softmax=aicpu,MatMul=vector" (``--op_engine``); see place.parse_overrides
    op_engine: str | None = None
    # cast-precision and quantize: op names, result names or OpType::X kept in the original
    # precision (comma/newline separated), or the path of a file listing them
    keep_dtype: str | None = None
    # assign-buffers: a memory budget in bytes, checked besides the SoC's DDR
    mem_limit: int | None = None
    # quantize: activation ranges given directly ({value name: amax}, or an object with
    # `.amax`) instead of a calibrator; not a CLI option (IR tests, the Python API)
    calibration: Any = None
    # quantize: the compile's calibration data and how ranges are measured on it
    # (`passes.calibrator`; the driver builds it with compiler.calibration.compile_calibrator)
    calibrator: Calibrator | None = None
    # quantize-weights: weight-only quantization W8A16 | W4A16 (W8A8 is precision_mode allow_quantize),
    # the group size along K, rtn | gptq rounding, symmetric (zero point 0) or asymmetric groups
    quant_type: str | None = None
    weight_group_size: int = 128
    weight_rounding: str = "rtn"
    weight_symmetric: bool = True
    # kv-cache: the cache's storage dtype: None (the model's), fp16 or int8 (per token and head scales)
    kv_cache_dtype: str | None = None
    # passes that read weight values do not (quantize-weights writes placeholders of the right size):
    # a plan of a model whose weights were never loaded (`atcpy --mode=3` of a 7B shape)
    weights_meta_only: bool = False

    def __post_init__(self) -> None:
        for name in ("precision_mode", "op_select_implmode", "op_engine", "keep_dtype", "quant_type",
                     "weight_rounding", "kv_cache_dtype"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, str):
                raise UsageError(f"pass option {name} must be a string, got {type(v).__name__} {v!r}")
        if self.mem_limit is not None and (isinstance(self.mem_limit, bool) or not isinstance(self.mem_limit, int)):
            raise UsageError(f"pass option mem_limit must be an int (bytes), got {self.mem_limit!r}")
        if self.quant_type not in (None, "W8A16", "W4A16"):
            raise UsageError(f"pass option quant_type must be W8A16 or W4A16, got {self.quant_type!r}")
        if isinstance(self.weight_group_size, bool) or not isinstance(self.weight_group_size, int) \
                or self.weight_group_size < 2 or self.weight_group_size % 2:
            raise UsageError(f"weight_group_size must be an even int >= 2, got {self.weight_group_size!r}")
        if self.weight_rounding not in ("rtn", "gptq"):
            raise UsageError(f"weight_rounding must be rtn or gptq, got {self.weight_rounding!r}")
        if self.kv_cache_dtype not in (None, "fp32", "fp16", "int8"):
            raise UsageError(f"kv_cache_dtype must be fp32, fp16 or int8, got {self.kv_cache_dtype!r}")
        cal = self.calibration
        if cal is not None and not isinstance(cal, Mapping) and not hasattr(cal, "amax"):
            raise UsageError(f"pass option calibration must map value names to amax, got {type(cal).__name__}")
        if self.calibrator is not None and not isinstance(self.calibrator, Calibrator):
            raise UsageError(f"pass option calibrator must be a passes.calibrator.Calibrator, "
                             f"got {type(self.calibrator).__name__}")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, options: Mapping[str, Any]) -> PassOptions:
        """``{"mem_limit": 1024}`` → `PassOptions`; a key that is not a field is a `UsageError`."""
        unknown = sorted(set(options) - set(cls.names()))
        if unknown:
            raise UsageError(f"unknown pass option(s) {', '.join(map(repr, unknown))}; "
                             f"pass options are: {', '.join(cls.names())}")
        return cls(**options)
