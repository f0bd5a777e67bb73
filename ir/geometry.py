"""Sliding-window geometry (Conv, ConvTranspose, pooling), in one place for type
inference, the frontend's ``auto_pad`` and the runtime's kernels.

    window_out(56, k=3, stride=2, dil=1, pad_begin=1, pad_end=1)   -> 28
    same_pads(56, k=3, stride=2, dil=1, upper=True)                 -> (0, 1)
    transposed_out(28, k=4, stride=2, dil=1, pad_begin=1, pad_end=1) -> 56
"""

from __future__ import annotations

__all__ = ["effective_kernel", "same_pads", "transposed_out", "window_out"]


def effective_kernel(k: int, dil: int) -> int:
    """The extent of a dilated window."""
    return (k - 1) * dil + 1


def window_out(size: int, k: int, stride: int, dil: int, pad_begin: int, pad_end: int, ceil: bool = False) -> int:
    """Windows along one axis; with ``ceil`` (pooling's ceil_mode) the last window
    must still start inside the input or its left padding."""
    num = size + pad_begin + pad_end - effective_kernel(k, dil)
    out = (-(-num // stride) if ceil else num // stride) + 1
    if ceil and (out - 1) * stride >= size + pad_begin:
        out -= 1
    return out


def same_pads(size: int, k: int, stride: int, dil: int, upper: bool) -> tuple[int, int]:
    """``auto_pad = SAME_UPPER | SAME_LOWER``: pads giving ``ceil(size / stride)``
    outputs, the odd one at the end (upper) or the beginning (lower)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + effective_kernel(k, dil) - size, 0)
    small, big = total // 2, total - total // 2
    return (small, big) if upper else (big, small)


def transposed_out(size: int, k: int, stride: int, dil: int, pad_begin: int, pad_end: int,
                   output_padding: int = 0) -> int:
    """ConvTranspose's output length along one axis."""
    return stride * (size - 1) + output_padding + effective_kernel(k, dil) - pad_begin - pad_end
