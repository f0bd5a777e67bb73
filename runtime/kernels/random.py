"""Random ops onnx.reference has no implementation of.  Each call draws anew
(the compiler marks these steps nondeterministic, so the Session never folds them);
a ``seed`` attribute makes the draw repeatable, as in onnxruntime.

    %s = Multinomial(%logits) {sample_size = 4, dtype = 6} : (tensor<2x10xf32>) -> tensor<2x4xi32>
"""

from __future__ import annotations

import numpy as np

from runtime.kernels import kernel

__all__: list[str] = []

_ONNX_INT = {6: np.int32, 7: np.int64}


@kernel("Multinomial")
def _multinomial(inputs, attrs, out):
    """Samples class indices from unnormalized log-probabilities ``[batch, classes]``."""
    logits = np.asarray(inputs[0], np.float64)
    seed = attrs.get("seed")
    rng = np.random.default_rng(None if seed is None else int(np.float32(seed).view(np.uint32)))
    p = np.exp(logits - logits.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    n = int(attrs.get("sample_size", 1))
    cdf = np.cumsum(p, axis=-1)
    u = rng.random((logits.shape[0], n))
    idx = np.minimum((u[:, :, None] > cdf[:, None, :]).sum(axis=-1), logits.shape[-1] - 1)
    return [idx.astype(_ONNX_INT.get(int(attrs.get("dtype", 6)), np.int32))]
