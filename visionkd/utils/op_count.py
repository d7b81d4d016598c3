"""Count the ATen operator calls of a forward + backward pass.

On a GPU every ATen call is (at least) one kernel launch of a few
microseconds, so the count is what a loss costs where the tensors are small;
it is measured on the CPU with :mod:`torch.profiler`, which records one event
per ATen call (nested calls included, e.g. ``aten::linear`` and the
``aten::addmm`` it makes).
"""
from typing import Callable

import torch
from torch.profiler import ProfilerActivity, profile

__all__ = ['count_aten_calls']


def count_aten_calls(fn: Callable[[], torch.Tensor],
                     backward: bool = True) -> int:
    """Number of ATen operator events in ``fn()`` (and its backward).

    Args:
        fn: Computes a scalar tensor (e.g. a loss on prepared inputs).
        backward: Also run and count ``fn().backward()``.

    Returns:
        The number of profiler events whose name starts with ``aten::``.
    """
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        out = fn()
        if backward:
            out.backward()
    return sum(1 for e in prof.events() if e.name.startswith('aten::'))
