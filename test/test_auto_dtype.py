"""dtype "auto" (cpu_info.auto_dtype): bf16 only on CPUs with bf16 units, and the bf16 measuring route."""
import pytest
import torch

from unipose_model import cpu_info
from unipose_model import predictor as predictor_module
from unipose_model.bf16_reference import Bf16MatmulsInFloat32
from unipose_model.cli import build_parser
from unipose_model.cpu_info import CpuInfo, auto_dtype

AMX = CpuInfo("Intel Xeon", frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16"}))
ZEN4 = CpuInfo("AMD EPYC 9B14", frozenset({"avx2", "avx512f", "avx512_bf16"}))
AVX512_ONLY = CpuInfo("Intel Xeon Skylake", frozenset({"avx2", "avx512f"}))
AVX2 = CpuInfo("AMD EPYC", frozenset({"avx2"}))


@pytest.mark.parametrize("cpu, expected", [(AMX, "bfloat16"), (ZEN4, "bfloat16"), (AVX512_ONLY, "float32"),
                                           (AVX2, "float32")])
def test_auto_is_bfloat16_only_on_cpus_with_bf16_units(cpu, expected):
    assert auto_dtype("cpu", cpu, onednn_bf16=True) == expected


def test_auto_needs_onednn_to_agree_and_the_accuracy_bar(monkeypatch):
    assert auto_dtype("cpu", AMX, onednn_bf16=False) == "float32"  # flags say bf16, oneDNN cannot use it
    monkeypatch.setattr(cpu_info, "BF16_ACCURATE_MEETS_BAR", False)
    assert auto_dtype("cpu", AMX, onednn_bf16=True) == "float32"


def test_auto_keeps_float32_on_cuda():
    assert auto_dtype("cuda", AMX, onednn_bf16=True) == "float32"


def test_predictor_and_cli_resolve_auto_with_the_rule(monkeypatch):
    from unipose_model import loading
    from unipose_model.settings import AUTO

    monkeypatch.setattr(predictor_module, "auto_dtype", lambda device_type: "bfloat16")
    monkeypatch.setattr(loading, "native_bf16", lambda device: True)  # as on a bf16 CPU
    p = predictor_module.Predictor("unipose_tiny", "reference", device="cpu", text_encoder="hash", dtype="auto")
    assert p.dtype == torch.bfloat16 and p.settings.dtype == "bfloat16"
    # AUTO in a later settings change is resolved by the same rule (the node rebuilds its settings)
    p.settings = p.settings.replace(dtype="float32")
    assert p.dtype == torch.float32
    p.settings = p.settings.replace(dtype=AUTO)
    assert p.dtype == torch.bfloat16
    monkeypatch.setattr(predictor_module, "auto_dtype", lambda device_type: "float32")
    p = predictor_module.Predictor("unipose_tiny", "reference", device="cpu", text_encoder="hash", dtype="auto")
    assert p.dtype == torch.float32
    args = build_parser().parse_args(["predict", "x.jpg", "-o", "out", "--prompt", "person"])
    assert args.dtype == "auto"


def test_the_environment_pins_what_auto_means_on_this_machine(monkeypatch):
    monkeypatch.setattr(cpu_info, "read_cpu_info", lambda: AVX2)   # the rule alone says float32 here
    monkeypatch.setenv("UNIPOSE_AUTO_DTYPE", "bfloat16")
    assert auto_dtype("cpu") == "bfloat16"                          # the machine's answer is pinned
    assert auto_dtype("cpu", AVX2, onednn_bf16=True) == "float32"   # given flags: the rule itself
    monkeypatch.delenv("UNIPOSE_AUTO_DTYPE")
    assert auto_dtype("cpu") == "float32"


def test_node_precision_defaults_to_auto():
    from unipose_ros.parameters import DETECTOR_PARAMETERS

    precision = next(p for p in DETECTOR_PARAMETERS if p.name == "precision")
    assert precision.default == "auto" and "auto" in precision.choices


def test_bf16_products_in_float32_round_like_bf16():
    """The measuring route: bf16 operands, float32 products, bf16 results (not float32's numbers)."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 32)
    x = torch.randn(16, 64)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        with Bf16MatmulsInFloat32() as mode:
            out = layer(x)
    assert mode.calls == 1 and out.dtype == torch.bfloat16
    exact = torch.nn.functional.linear(x.bfloat16().float(), layer.weight.bfloat16().float(),
                                       layer.bias.bfloat16().float())
    assert torch.equal(out, exact.bfloat16())
    assert not torch.equal(out.float(), layer(x))  # float32 inputs would give other numbers
