"""The Triton deformable-attention kernel against the PyTorch reference, forward and backward.

On the CPU the kernels run in Triton's interpreter (TRITON_INTERPRET=1) on tiny shapes. The
interpreter must be chosen before anything imports triton.language, which other test modules
(torch.export) do, so `test_in_interpreter` reruns this file's checks in a fresh process; on a
CUDA machine the checks also run here, compiled. Limit: 1e-5 relative (float32).
"""
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("triton")
pytestmark = pytest.mark.gpu  # compiled on CUDA when present (scripts/gpu_check.py)

CHILD = os.environ.get("UNIPOSE_TRITON_CHILD") == "1"
DEVICES = ["cpu"] if CHILD else (["cuda"] if torch.cuda.is_available() else [])
if DEVICES:
    try:
        from unipose_model.ops import triton_deform_attn
    except Exception as e:  # noqa: BLE001 - a triton that cannot run here
        pytest.skip(f"triton cannot run here: {e}", allow_module_level=True)

from unipose_model.ops import get_deform_attn_impl, ms_deform_attn_pytorch  # noqa: E402


@pytest.mark.skipif(CHILD, reason="the child process runs the checks themselves")
def test_in_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1", UNIPOSE_TRITON_CHILD="1")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout, proc.stdout[-2000:]


REL = 1e-5


def inputs(device, shapes=((5, 7), (3, 4), (2, 1)), B=2, M=2, D=6, Q=21, P=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    S, L = sum(h * w for h, w in shapes), len(shapes)
    value = torch.randn(B, S, M, D, generator=g)
    loc = torch.rand(B, Q, M, L, P, 2, generator=g) * 1.4 - 0.2  # some points fall outside the maps
    attn = torch.rand(B, Q, M, L, P, generator=g).softmax(-1)
    return [t.to(device).requires_grad_() for t in (value, loc, attn)], list(shapes)


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp(min=1e-12)).item()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("D,P", [(6, 3), (16, 4)])
def test_forward_matches_reference(device, D, P):
    (value, loc, attn), shapes = inputs(device, D=D, P=P)
    ours = triton_deform_attn.ms_deform_attn_triton(value, shapes, loc, attn)
    ref = ms_deform_attn_pytorch(value, shapes, loc, attn)
    assert ours.shape == ref.shape
    assert rel_err(ours, ref) <= REL


@pytest.mark.parametrize("device", DEVICES)
def test_backward_matches_autograd_of_reference(device):
    (value, loc, attn), shapes = inputs(device, seed=1)
    grad_out = torch.randn(value.shape[0], loc.shape[1], value.shape[2] * value.shape[3],
                           generator=torch.Generator().manual_seed(2)).to(device)
    ours = torch.autograd.grad(triton_deform_attn.ms_deform_attn_triton(value, shapes, loc, attn),
                               (value, loc, attn), grad_out)
    ref = torch.autograd.grad(ms_deform_attn_pytorch(value, shapes, loc, attn), (value, loc, attn), grad_out)
    for name, a, b in zip(("value", "sampling_locations", "attention_weights"), ours, ref):
        assert a.shape == b.shape
        assert rel_err(a, b) <= REL, name


@pytest.mark.skipif(not DEVICES, reason="needs the interpreter or CUDA")
def test_registered_and_chosen_for_cuda_only():
    assert get_deform_attn_impl("triton") is triton_deform_attn.ms_deform_attn_triton
    assert get_deform_attn_impl(device=torch.device("cuda")) is triton_deform_attn.ms_deform_attn_triton
    from unipose_model.ops.gather_deform_attn import ms_deform_attn_gather
    assert get_deform_attn_impl(device=torch.device("cpu")) is ms_deform_attn_gather
