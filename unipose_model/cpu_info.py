"""What this CPU is and which bfloat16 instructions it has, from /proc/cpuinfo.

Used to name the machine beside speed figures (scripts/profile_ops.py, docs/BENCHMARKS.md) and to
say whether bfloat16 is native here: AMX (amx_bf16, the tile matrix units) or AVX512-BF16 (dot
products in the vector units) run bf16 matrix products faster than float32; without either,
bf16 is emulated and slower than float32 (on an AVX2-only EPYC: 0.46 GFLOP/s against 54 in float32,
docs/BENCHMARKS.md). The flags are what the kernel reports; the Predictor allows bf16 by oneDNN's own
check (predictor.cpu_supports_bf16), which can be broader than these flags.
"""
from __future__ import annotations

import os

import platform
from dataclasses import dataclass, field
from pathlib import Path

BF16_FLAGS = ("amx_bf16", "avx512_bf16")
REPORTED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


@dataclass(frozen=True)
class CpuInfo:
    model_name: str
    flags: frozenset = field(default_factory=frozenset)

    @property
    def bf16_kind(self) -> str | None:
        """"amx_bf16", "avx512_bf16" (the faster first) or None where bf16 is emulated."""
        return next((f for f in BF16_FLAGS if f in self.flags), None)

    @property
    def native_bf16(self) -> bool:
        return self.bf16_kind is not None

    def describe(self) -> str:
        """'AMD EPYC 9B14; avx512f yes, avx512_bf16 no, amx_bf16 no' (the flags that matter here)."""
        marks = ", ".join(f"{f} {'yes' if f in self.flags else 'no'}" for f in ("avx512f", "avx512_bf16", "amx_bf16"))
        return f"{self.model_name}; {marks}"


def parse_cpuinfo(text: str) -> CpuInfo:
    """The first processor's model name and flags from the text of /proc/cpuinfo."""
    name, flags = "", frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not name:
            name = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
        if name and flags:
            break
    return CpuInfo(name or platform.processor() or "unknown CPU", flags)


def read_cpu_info(path: str | Path = "/proc/cpuinfo") -> CpuInfo:
    """This machine's CpuInfo; an unknown CPU with no flags where /proc/cpuinfo is missing (not Linux)."""
    try:
        return parse_cpuinfo(Path(path).read_text())
    except OSError:
        return CpuInfo(platform.processor() or "unknown CPU")


# Whether bf16 at the `accurate` settings (full input size, all queries; autocast, sampling positions
# in float32) met the accuracy bar: the bundled fly model's held-out PCK@0.2 within 0.005 of float32
# and the same flies found in every frame. Measured by scripts/eval_bf16_accuracy.py
# (docs/BENCHMARKS.md, "bf16 accurate"); set from that measurement, not from a guess.
BF16_ACCURATE_MEETS_BAR = True


def auto_dtype(device_type: str, cpu: CpuInfo | None = None, onednn_bf16: bool | None = None) -> str:
    """The inference dtype that `dtype="auto"` (CLI `--dtype auto`, node `precision: auto`) means.

    On the CPU: "bfloat16" where the CPU has bf16 units (AMX or AVX512-BF16, from its flags), oneDNN
    uses them (`onednn_bf16`; asked from torch when None) and bf16 met the accuracy bar
    (BF16_ACCURATE_MEETS_BAR); "float32" elsewhere, where bf16 is emulated and ~100x slower.
    Other devices (CUDA): "float32", as before `auto` existed.
    $UNIPOSE_AUTO_DTYPE pins what auto means on this machine (e.g. float32 for results that must
    not depend on which CPU ran them: the test suite sets it); it applies to the machine's own
    answer only (not when `cpu` is given).
    """
    pinned = os.environ.get("UNIPOSE_AUTO_DTYPE", "").strip()
    if pinned and cpu is None and onednn_bf16 is None:
        return pinned
    if device_type != "cpu":
        return "float32"
    cpu = cpu or read_cpu_info()
    if not (BF16_ACCURATE_MEETS_BAR and cpu.native_bf16):
        return "float32"
    if onednn_bf16 is None:
        import torch
        try:
            onednn_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            onednn_bf16 = False
    return "bfloat16" if onednn_bf16 else "float32"
