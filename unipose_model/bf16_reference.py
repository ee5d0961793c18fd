"""bfloat16's accuracy, measured on a CPU without bf16 units, at float32 speed.

On an AVX2-only CPU oneDNN emulates bf16 matrix products at ~1 GFLOP/s (140x slower than float32,
docs/BENCHMARKS.md), too slow to run a Swin-T over a test set. But a native bf16 matrix product
(AVX512-BF16 dot products, AMX tiles) multiplies bf16 operands, accumulates in float32 and rounds
the result to bf16. A product of two bf16 numbers (8-bit mantissas) is exact in float32, so the
same result comes from converting the bf16 operands to float32, multiplying in float32 and
rounding the result to bf16: equal up to the order of the float32 accumulation.

`Bf16MatmulsInFloat32` does exactly that for the matrix-product ops that reach the dispatcher with
bf16 operands (after autocast has made its casts, so every other op runs as under real bf16). It
is a measuring instrument (scripts/eval_bf16_accuracy.py), not an inference mode: it is slower
than plain float32.
"""
from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map

aten = torch.ops.aten
# Matrix products as they reach a dispatch mode (composites such as linear before decomposing).
# Fused attention kernels (nn.MultiheadAttention's fast path) are left to run in real bf16: they
# round intermediates to bf16, which the float32 route would not; they are a small part of the work.
MATRIX_OPS = frozenset(op for op in (
    getattr(aten, name, None) for name in (
        "linear", "matmul", "mm", "addmm", "bmm", "baddbmm", "conv1d", "conv2d", "convolution"))
    if op is not None)


def _is_bf16(x) -> bool:
    return isinstance(x, torch.Tensor) and x.dtype == torch.bfloat16


class Bf16MatmulsInFloat32(TorchDispatchMode):
    """Within it, matrix products with bf16 operands compute in float32 and return bf16."""

    def __init__(self):
        super().__init__()
        self.calls = 0  # matrix products rerouted (a test checks the mode saw the model's)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.overloadpacket in MATRIX_OPS and any(_is_bf16(a) for a in tree_leaves((args, kwargs))):
            self.calls += 1
            up = lambda x: x.float() if _is_bf16(x) else x
            with torch.autocast(args[0].device.type, enabled=False):  # else autocast casts them back
                out = func(*tree_map(up, args), **tree_map(up, kwargs))
            return tree_map(lambda x: x.to(torch.bfloat16) if isinstance(x, torch.Tensor)
                            and x.dtype == torch.float32 else x, out)
        return func(*args, **kwargs)
