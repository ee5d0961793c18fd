"""Run model code "on CUDA" without a GPU, to catch device and dtype mix-ups (test support).

Inside `FakeCuda()`, PyTorch's FakeTensorMode stands in for the device: tensors created on
"cuda" carry only shape, dtype and device, every op checks that its inputs share a device
(`FakeTensorDeviceMismatchError` otherwise) and no arithmetic is done. What a CUDA machine
would add on top is stubbed for the duration:

* torch.cuda.is_bf16_supported / synchronize / set_device and autocast's "CUDA missing"
  check, so that autocast and the gradient scaler run their CUDA branches. is_available stays
  False (torch.tensor(..., device="cuda") would otherwise try to start the driver): code that
  asks it is given device="cuda" explicitly by the audit;
* the Triton deformable-attention kernels: their launches check that every tensor argument is
  on the value's device and contiguous, and the wrapper around them (index tables, output and
  gradient buffers, dtype casts) runs as on a GPU;
* dtype agreement, which fake tensors do not check: matrix products, convolutions, sampling,
  embedding bags and indexed writes with floating-point inputs of different dtypes raise here as
  they do in eager PyTorch (half precision mix-ups);
* data-dependent steps (`aten._local_scalar_dense`: `.item()`, `bool(t)`, `float(t)`,
  `.tolist()`, and `nonzero`'s output size): the value does not exist, so the step gets a
  stand-in (True / 1 / 1.0, the gradient scaler's found-inf 0.0; nonzero: every element) and
  runs on; every such site is recorded in `stand_ins` (file:line and the value used), because
  the code after it ran on that value, not on a real one; `mode.scalar_reads` counts the reads
  (each one a GPU sync on real hardware).

Steps that need real numbers (NMS, Hungarian assignment, numpy post-processing) are cut at
their input: the audit checks what arrives there (device, dtype, shape) and hands the step
real tensors of the same shapes (`real_like`, run for real with `on_host`), so the code after
it runs as well. The audit lists those cut points (NOT_AUDITED in test_fake_cuda_audit.py).
"""
from __future__ import annotations

import contextlib
import os
import traceback
from typing import Dict, List, Tuple

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.utils._python_dispatch import _disable_current_modes

CUDA = torch.device("cuda", 0)
_OWN_CODE = (os.sep + "unipose_model" + os.sep, os.sep + "unipose_train" + os.sep)


class _StandInMode(FakeTensorMode):
    """FakeTensorMode whose data-dependent scalars get a stand-in value instead of an error."""

    def __init__(self, sites: Dict[str, object]):
        super().__init__(allow_non_fake_inputs=True)
        self._sites = sites
        self.scalar_reads = 0  # device -> host reads: on a GPU, each one waits for the device

    def dispatch(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            t = args[0]
            self.scalar_reads += 1
            value = True if t.dtype == torch.bool else (1.0 if t.dtype.is_floating_point else 1)
            if _asker().filename.endswith("grad_scaler.py"):
                value = 0.0  # the scaler's found-inf count: 0 lets the optimizer step run
            self._sites.setdefault(_caller(), value)
            return value
        if func.overloadpacket in _SAME_DTYPE:
            _check_same_dtype(func, args)
        if func is torch.ops.aten.nonzero.default:
            # data-dependent size: stand in with the upper bound (every element non-zero)
            t = args[0]
            self._sites.setdefault(_caller(), "nonzero: all elements")
            return super().dispatch(torch.ops.aten.empty.memory_format, types, ((t.numel(), t.dim()),),
                                    dict(dtype=torch.int64, device=t.device))
        return super().dispatch(func, types, args, kwargs or {})


aten = torch.ops.aten
# Ops whose eager kernels refuse floating-point inputs of different dtypes (fake tensors do not
# check it): matrix products, convolutions, sampling, embedding bags, indexed writes.
_SAME_DTYPE = {aten.mm, aten.bmm, aten.addmm, aten.baddbmm, aten.addbmm, aten.mv, aten.dot,
               aten.convolution, aten.grid_sampler_2d, aten._embedding_bag,
               aten._embedding_bag_forward_only, aten.index_put, aten.index_put_,
               aten._index_put_impl_, aten.masked_scatter, aten.masked_scatter_}


def _check_same_dtype(func, args) -> None:
    flat = []
    for a in args:
        flat.extend(a if isinstance(a, (list, tuple)) else [a])
    dtypes = {a.dtype for a in flat if isinstance(a, torch.Tensor) and a.dtype.is_floating_point}
    if len(dtypes) > 1:
        raise RuntimeError(f"{func}: floating-point inputs of different dtypes {sorted(map(str, dtypes))} "
                           f"(eager PyTorch refuses this on the device)")


_MACHINERY = (os.sep + "_subclasses" + os.sep, os.sep + "utils" + os.sep, os.sep + "_dynamo" + os.sep,
              os.sep + "_compile.py", os.path.basename(__file__))


def _asker():
    """The innermost frame outside the fake-tensor machinery: the code that asked for the value."""
    for frame in reversed(traceback.extract_stack()):
        if not any(part in frame.filename for part in _MACHINERY):
            return frame
    return frame


def _caller() -> str:
    """file:line of the innermost frame in this project's code (the site of a data-dependent step)."""
    for frame in reversed(traceback.extract_stack()):
        if any(part in frame.filename for part in _OWN_CODE):
            root = frame.filename.split(os.sep)
            for i in range(len(root) - 1, -1, -1):
                if root[i] in ("unipose_model", "unipose_train"):
                    return f"{'/'.join(root[i:])}:{frame.lineno} ({frame.line.strip()[:60]})"
    return "outside the project"


class KernelLaunchCheck:
    """Stands in for a Triton kernel: `kernel[grid](*args)` checks the tensor arguments only."""

    def __init__(self, name: str, launches: List[Tuple[str, tuple]]):
        self.name, self.launches = name, launches

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            tensors = [a for a in args if isinstance(a, torch.Tensor)]
            devices = {t.device for t in tensors}
            if len(devices) != 1:
                raise AssertionError(f"Triton {self.name}: tensor arguments on several devices {devices}")
            loose = [i for i, t in enumerate(tensors) if not t.is_contiguous()]
            if loose:
                raise AssertionError(f"Triton {self.name}: non-contiguous tensor arguments {loose} "
                                     f"(the kernel indexes raw pointers)")
            self.launches.append((self.name, tuple((t.dtype, t.device.type) for t in tensors)))
        return launch


class FakeCuda:
    """Context: fake CUDA tensors, CUDA stubs, Triton launch checks, stand-ins for scalars.

    `stand_ins`: {site: value} of every data-dependent step met; `kernel_launches`: the Triton
    launches checked. `module(m)` moves a real module's parameters and buffers to fake CUDA.
    """

    def __init__(self):
        self.stand_ins: Dict[str, object] = {}
        self.kernel_launches: List[Tuple[str, tuple]] = []
        self.mode = _StandInMode(self.stand_ins)
        self._stack = contextlib.ExitStack()
        self._converted: Dict[int, torch.Tensor] = {}
        self.active = False

    def module(self, module: nn.Module, device: torch.device = CUDA) -> nn.Module:
        """Replace every parameter and buffer by a fake tensor on `device` (in place; shared
        tensors stay shared). nn.Module.to cannot do it: it swaps real for fake tensors."""
        for m in module.modules():
            for store in (m._parameters, m._buffers):
                for key, t in list(store.items()):
                    if t is None or isinstance(t, FakeTensor):
                        continue
                    fake = self._converted.get(id(t))
                    if fake is None:
                        with _disable_current_modes():
                            fake = self.mode.from_tensor(t.detach())
                        with contextlib.ExitStack() as s:
                            if not self.active:
                                s.enter_context(self.mode)
                            fake = fake.to(device)
                        if isinstance(t, nn.Parameter):
                            fake = nn.Parameter(fake, requires_grad=t.requires_grad)
                        self._converted[id(t)] = fake
                    store[key] = fake
        return module

    def __enter__(self) -> "FakeCuda":
        s = self._stack
        cuda = torch.cuda
        s.enter_context(_patched(cuda, "is_bf16_supported", lambda *a, **k: True))
        s.enter_context(_patched(cuda, "synchronize", lambda *a, **k: None))
        s.enter_context(_patched(cuda, "set_device", lambda *a, **k: None))
        s.enter_context(_patched(cuda, "device_count", lambda: 1))
        s.enter_context(_patched(cuda.amp.common, "amp_definitely_not_available", lambda: False))
        try:
            from unipose_model.ops import ms_deform_attn, triton_deform_attn
            s.enter_context(_patched(ms_deform_attn, "_TRITON_STATE", {"ok": True}))
            s.enter_context(_patched(triton_deform_attn, "_fwd_kernel",
                                     KernelLaunchCheck("forward kernel", self.kernel_launches)))
            s.enter_context(_patched(triton_deform_attn, "_bwd_kernel",
                                     KernelLaunchCheck("backward kernel", self.kernel_launches)))
        except ImportError:  # no triton: the "auto" choice on CUDA is the PyTorch reference
            pass
        s.enter_context(self.mode)
        self.active = True
        return self

    def __exit__(self, *exc):
        self.active = False
        return self._stack.__exit__(*exc)


@contextlib.contextmanager
def _patched(owner, name: str, value):
    old = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, old)


def on_host(fn):
    """`fn` run outside fake mode: host-side code (numpy -> CPU tensors, e.g. preprocessing) runs
    for real, and its CPU tensors then enter the fake device as real inputs do."""
    def run(*args, **kwargs):
        with _disable_current_modes():
            return fn(*args, **kwargs)
    return run


def real_like(t: torch.Tensor, fill=None) -> torch.Tensor:
    """A real CPU tensor with `t`'s shape and dtype (zeros, or `fill(shape)`), made outside fake mode."""
    with _disable_current_modes():
        shape = tuple(int(s) for s in t.shape)
        out = torch.zeros(shape, dtype=t.dtype) if fill is None else fill(shape).to(t.dtype)
    return out
