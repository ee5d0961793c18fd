"""The model's inference entry points through ``torch.compile`` (inductor).

Inductor fuses the element-wise work between the matrix products and, with *freezing*, treats
the weights as constants: their bfloat16 copies under autocast and oneDNN's packed layouts are
made once at compile time instead of on every call. On the 2-core CPU of docs/BENCHMARKS.md that
is most of the gain; the matrix products themselves are unchanged.

Compiling happens at the first call for each input size (and again when a speed profile changes
the query counts): minutes for Swin-T on a small CPU, cached on disk by inductor for the next
process. Weights must not change afterwards (they are frozen into the compiled graph). Where
compiling fails (no C++ compiler, an unsupported op), the plain model runs instead, with a
warning, and the reason is kept in ``failed``.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

ENTRY_POINTS = ("forward", "encode", "decode")


def call_entry(model: nn.Module, entry: str, *args):
    """The plain (uncompiled) model's entry point; forward through the module's __call__."""
    return (model if entry == "forward" else getattr(model, entry))(*args)


class CompiledModel:
    """Lazily compiled ``forward`` / ``encode`` / ``decode`` of one model (inference only)."""

    def __init__(self, model: nn.Module, backend: str = "inductor"):
        self.model = model
        self.backend = backend  # torch.compile's backend; the tests use "eager" (tracing only, fast)
        self.failed: str | None = None
        self._functions: dict[str, object] = {}

    def __call__(self, entry: str, *args):
        if self.failed is None:
            try:
                import torch._inductor.config as inductor_config

                with inductor_config.patch(freezing=True):
                    return self._function(entry)(*args)
            except torch._dynamo.exc.TorchDynamoException as exc:
                first_line = (str(exc).strip().splitlines() or [""])[0][:300]
                self.failed = f"{type(exc).__name__}: {first_line}"
                warnings.warn(f"torch.compile failed ({self.failed}); running the plain model", RuntimeWarning,
                              stacklevel=2)
        return call_entry(self.model, entry, *args)

    def _function(self, entry: str):
        if entry not in ENTRY_POINTS:
            raise ValueError(f"unknown entry point {entry!r}; one of {', '.join(ENTRY_POINTS)}")
        if entry not in self._functions:
            target = self.model if entry == "forward" else getattr(self.model, entry)
            self._functions[entry] = torch.compile(target, backend=self.backend, dynamic=False)
        return self._functions[entry]
