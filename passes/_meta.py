"""Weights a plan must not read: ``weights_meta_only`` (``atcpy --mode=3`` of a model
whose external weights are mapped but were never written, or are too big to read).

A weight imported from external data is a read-only view of a file mapping
(`compiler.frontend.external_data`); one a pass built in their place is a
zero-stride `placeholder` (`np.broadcast_to` of one zero: the shape, dtype and
``nbytes`` of the real thing, no bytes behind it).  Under ``weights_meta_only``
a pass neither reads such an array's values (hashing, comparing, folding) nor
computes a new weight from it: it makes a placeholder of the result's shape.

    unread(w, ctx.options)                  # True: w is mapped and the plan is meta-only
    placeholder((4096, 12288), np.float16)  # .nbytes == 100663296, reads nothing
"""

from __future__ import annotations

import mmap
from collections.abc import Sequence

import numpy as np

__all__ = ["is_mapped_or_placeholder", "placeholder", "unread"]


def placeholder(shape: Sequence[int], dtype) -> np.ndarray:
    """A read-only zero-stride array of `shape` and `dtype` standing for a weight."""
    return np.broadcast_to(np.zeros((), dtype), tuple(int(d) for d in shape))


def is_mapped_or_placeholder(a: np.ndarray) -> bool:
    """`a` views a file mapping, or is a zero-stride placeholder of more than one element."""
    if a.size > 1 and 0 in a.strides:
        return True
    base = a
    while base is not None:
        if isinstance(base, (np.memmap, mmap.mmap)):
            return True
        base = getattr(base, "base", None)
    return False


def unread(a: np.ndarray | None, options) -> bool:
    """Under ``weights_meta_only``, `a` is a weight whose bytes must not be read."""
    return a is not None and bool(getattr(options, "weights_meta_only", False)) and is_mapped_or_placeholder(a)
