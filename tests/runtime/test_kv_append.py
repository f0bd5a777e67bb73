"""The kv.append kernel: Concat into the cache buffer, copying the past only
when it is not already the buffer's prefix."""

from __future__ import annotations

import numpy as np

from runtime.kernels import lookup_kernel
from runtime.kernels.kv import _is_prefix_of

fn = lookup_kernel("kv.append").fn


def test_a_past_that_is_the_cache_prefix_is_recognised_and_not_copied():
    buf = np.zeros((1, 2, 10, 4), np.float32)
    past = buf[:, :, :3, :]
    past[...] = 7.0
    out = buf[:, :, :5, :]
    assert _is_prefix_of(past, out)
    assert not _is_prefix_of(np.array(past), out)  # same values, other memory
    assert not _is_prefix_of(buf[:, :, 1:4, :], out)  # another offset
    new = np.ones((1, 2, 2, 4), np.float32)
    (r,) = fn([past, new], {"axis": 2}, [out])
    assert r is out and (buf[:, :, :3] == 7).all() and (buf[:, :, 3:5] == 1).all() and (buf[:, :, 5:] == 0).all()


def test_a_foreign_past_is_copied_in_and_no_buffer_means_concat():
    buf = np.zeros((1, 2, 10, 4), np.float32)
    past = np.full((1, 2, 3, 4), 2.0, np.float32)
    new = np.ones((1, 2, 1, 4), np.float32)
    (r,) = fn([past, new], {"axis": 2}, [buf[:, :, :4, :]])
    np.testing.assert_array_equal(r, np.concatenate([past, new], axis=2))
    (c,) = fn([past, new], {"axis": 2}, None)
    np.testing.assert_array_equal(c, np.concatenate([past, new], axis=2))
