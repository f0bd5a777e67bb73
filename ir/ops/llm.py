"""LLM block ops (``fused.*``) that `passes.fuse_llm` builds out of exported decoder graphs.
Each runs as one Vector step; the MatMuls around them stay Cube ops (so tiling and
quantization still see plain MatMuls).

    %y = fused.rms_norm(%x, %w) {epsilon = 1e-06}
        : (tensor<"batch"x"seq"x64xf32>, tensor<64xf32>) -> tensor<"batch"x"seq"x64xf32>
    %q = fused.rotary(%x, %cos, %sin) {interleaved = 0}
        : (tensor<"batch"x4x"seq"x16xf32>, tensor<"batch"x1x"seq"x16xf32>, tensor<"batch"x1x"seq"x16xf32>)
        -> tensor<"batch"x4x"seq"x16xf32>
    %h = fused.swiglu(%gate, %up) : (tensor<"seq"x128xf32>, tensor<"seq"x128xf32>) -> tensor<"seq"x128xf32>

LayerNorm and GELU need no new op: the fused forms are ONNX's own
``LayerNormalization`` and ``Gelu {approximate = "none" | "tanh"}`` (`ir.ops.core`,
`ir.ops.elementwise`), with fast Vector kernels.

Cost model: all three are Vector ops priced by element count (`passes.target.cost`);
their work is a few passes over the largest operand, which is what the generic
estimate assumes, so none needs its own work estimate.
"""

from __future__ import annotations

from ir.ops._infer import broadcast_all
from ir.registry import ELEMENTWISE, FP16_SAFE, VECTOR_ONLY, Attr, define

__all__: list[str] = []

# not FP16_SAFE: the mean of squares overflows fp16 for |x| > 256; the kernel reduces in fp32
define("fused.rms_norm", operands=(1, 2), infer=broadcast_all(), engines=VECTOR_ONLY,
       attrs={"epsilon": Attr("float", 1e-6)}, origin="RMSNormalization",
       doc="""RMSNorm over the last axis: y = x / sqrt(mean(x^2, -1) + epsilon) * weight (weight optional).

    %p = Pow(%x, %two)                  %m = ReduceMean(%p, %axes_m1) {keepdims = 1}
    %a = Add(%m, %eps)                  %s = Sqrt(%a)
    %r = Div(%one, %s)                  %n = Mul(%x, %r)
    %y = Mul(%w, %n)
  ==>
    %y = fused.rms_norm(%x, %w) {epsilon = 1e-06}""")

# FP16_SAFE: |cos|, |sin| <= 1, so the result is no larger than sqrt(2)·|x|; no reduction
define("fused.rotary", operands=3, infer=broadcast_all(), engines=VECTOR_ONLY, traits={FP16_SAFE},
       attrs={"interleaved": Attr("int", 0)}, origin="RotaryEmbedding",
       doc="""Rotary position embedding: y = x * cos + rotate(x) * sin over the last axis (head_dim D),
with cos/sin full width (D) and broadcast to x.  rotate is rotate_half (interleaved = 0:
[-x[D/2:], x[:D/2]], LLaMA/Qwen2/NeoX) or rotate_every_two (interleaved = 1:
[-x1, x0, -x3, x2, ...], GPT-J).

    %a = Slice(%x, [0], [8], [3])       %b = Slice(%x, [8], [INT64_MAX], [3])
    %n = Neg(%b)                        %r = Concat(%n, %a) {axis = -1}
    %c = Mul(%x, %cos)                  %s = Mul(%r, %sin)
    %y = Add(%c, %s)
  ==>
    %y = fused.rotary(%x, %cos, %sin) {interleaved = 0}""")

# FP16_SAFE: silu(g) = g * sigmoid(g) is bounded by |g| and computed without overflow
define("fused.swiglu", operands=2, infer=broadcast_all(), engines=VECTOR_ONLY, traits={ELEMENTWISE, FP16_SAFE},
       doc="""The SiLU-gated MLP's activation: y = silu(gate) * up = gate * sigmoid(gate) * up.
The gate/up/down MatMuls stay Cube ops around it.

    %s = Sigmoid(%g)    %a = Mul(%g, %s)    %y = Mul(%a, %up)
  ==>
    %y = fused.swiglu(%g, %up)""")
