"""scripts/profile_ops.py, its CPU-side logic: op classification of profiler event names, the
attribution of everything inside the sampling core, the markdown report, argument errors, and one
real profiled forward of the tiny model (shares add up; no timing asserted). Also cpu_info."""
import importlib.util
import sys
from types import SimpleNamespace

import pytest

from shared_paths import REPO
from unipose_model.cpu_info import parse_cpuinfo


@pytest.fixture(scope="module")
def po():
    spec = importlib.util.spec_from_file_location("profile_ops", REPO / "scripts" / "profile_ops.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["profile_ops"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("profile_ops", None)


@pytest.mark.parametrize("name, cls", [
    ("aten::addmm", "matmul"), ("aten::bmm", "matmul"), ("aten::mm", "matmul"), ("aten::mkldnn_convolution", "matmul"),
    ("aten::grid_sampler_2d", "sampling"),
    ("aten::_softmax", "softmax_norm"), ("aten::native_layer_norm", "softmax_norm"),
    ("aten::native_group_norm", "softmax_norm"),
    ("aten::add_", "elementwise"), ("aten::mul", "elementwise"), ("aten::clamp_min", "elementwise"),
    ("aten::gelu", "elementwise"), ("aten::masked_fill_", "elementwise"),
    ("aten::copy_", "copy_cast"), ("aten::_to_copy", "copy_cast"), ("aten::cat", "copy_cast"),
    ("aten::roll", "copy_cast"), ("aten::gather", "copy_cast"),
    ("aten::topk", "other"), ("aten::view", "other"), ("aten::empty", "other"), ("some_python_scope", "other"),
])
def test_op_classes(po, name, cls):
    assert po.classify_op(name) == cls
    assert po.classify_op(name, in_sampling=True) == "sampling"


def _event(name, self_us, parent=None):
    return SimpleNamespace(name=name, self_cpu_time_total=self_us, cpu_parent=parent)


def test_summary_puts_ops_inside_the_sampling_core_in_sampling(po):
    forward = _event(po.FORWARD_SCOPE, 50_000)
    linear = _event("aten::linear", 1_000, forward)
    core = _event(po.SAMPLING_SCOPE, 20_000, forward)
    addmm = _event("aten::addmm", 400_000, linear)
    events = [forward, linear, addmm, _event("aten::copy_", 5_000, addmm), core,
              _event("aten::gather", 300_000, core), _event("aten::mul", 100_000, _event("aten::sum", 0, core)),
              _event("aten::_to_copy", 30_000, forward), _event("aten::copy_", 40_000, forward)]
    contiguous = _event("aten::contiguous", 0, _event("aten::reshape", 0, forward))
    events += [_event("aten::copy_", 20_000, _event("aten::clone", 0, contiguous)),
               _event("aten::copy_", 10_000, _event("aten::_to_copy", 0, forward))]
    s = po.summarize_events(events)
    c = s["by_class_s"]
    assert c["matmul"] == pytest.approx(0.406)  # addmm's own bias copy included
    assert c["sampling"] == pytest.approx(0.42)  # its own Python, its gather and the mul below a sum in it
    assert c["copy_cast"] == pytest.approx(0.1) and c["elementwise"] == 0
    assert c["other"] == pytest.approx(0.05) and s["python_s"] == pytest.approx(0.05)
    assert s["profiled_total_s"] == pytest.approx(0.976)
    assert s["by_op_s"]["sampling: aten::gather"] == pytest.approx(0.3)
    assert "aten::gather" not in s["by_op_s"]
    assert s["copy_callers_s"] == pytest.approx({"(top level)": 0.04, "reshape": 0.02, "cast": 0.04})


def _report(po):
    shares = dict(zip(po.CLASSES, (0.8, 0.2, 0.1, 0.4, 0.3, 0.2)))
    run = {"size": "480x640", "dtype": "fp32", "forward_s": 2.0, "flops": 248e9, "by_class_s": shares,
           "profiled_total_s": 2.0, "python_s": 0.05, "by_op_s": {"aten::addmm": 0.6, "aten::copy_": 0.25},
           "copy_callers_s": {"cast": 0.02, "reshape": 0.2}}
    return {"machine": {"cpu_described": "Test CPU; avx512f yes, avx512_bf16 no, amx_bf16 no", "cpu_capability": "AVX512",
                        "torch": "2.x", "threads": 2, "logical_cpus": 4, "bf16_native": False,
                        "load_average": [1.0, 2.0, 3.0]},
            "matmul_gflops": {"fp32": 248.0}, "runs": [run], "load_average_end": [1.5, 2.0, 3.0]}


def test_markdown_report(po):
    text = po.markdown(_report(po))
    assert "Test CPU; avx512f yes" in text and "2 threads" in text and "1.0 / 2.0 / 3.0" in text
    assert "fp32 248 GFLOP/s" in text and "bf16 emulated" in text
    row = next(line for line in text.splitlines() if line.startswith("| 480x640"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # 248 GFLOP in 2 s is 124 GFLOP/s, half the measured 248 GFLOP/s limit
    assert cells[:5] == ["480x640", "fp32", "**2.00 s**", "248", "124 (50 %)"]
    assert cells[5:] == ["0.80 s (40 %)", "0.20 s (10 %)", "0.10 s (5 %)", "0.40 s (20 %)", "0.30 s (15 %)",
                         "0.20 s (10 %)"]
    assert "`addmm` 30 %, `copy_` 12 %; copies and casts by the op that asked for them: `reshape` 10 %, `cast` 1 %" in text
    assert len(row.split("|")) == len(text.splitlines()[4].split("|"))  # header and rows align


def test_arguments(po, capsys):
    a = po.parse_args(["--sizes", "480x640", "--dtypes", "bf16", "--repeats", "1"])
    assert a.size_list == [(480, 640)] and a.dtype_list == ["bf16"] and a.threads == 2
    assert po.parse_args([]).size_list == [(480, 640), (800, 1333)]
    for bad in (["--sizes", "480"], ["--sizes", "16x16"], ["--dtypes", "fp16"], ["--repeats", "0"]):
        with pytest.raises(SystemExit):
            po.parse_args(bad)
    assert "--dtypes 'fp16'" in capsys.readouterr().err


@pytest.mark.slow  # 1.5 s alone; 20-30 s on the loaded shared machine
def test_real_profile_of_the_tiny_model_adds_up(po, tmp_path, monkeypatch):
    md, js = tmp_path / "p.md", tmp_path / "p.json"
    info = po.machine_info
    monkeypatch.setattr(po, "machine_info", lambda threads: dict(info(threads), bf16_native=False))
    po.main(["--config", "unipose_tiny", "--sizes", "64x96", "--dtypes", "fp32,bf16", "--repeats", "1",
             "--threads", "1", "--mm-sizes", "128", "--markdown", str(md), "--json", str(js)])
    import json
    report = json.loads(js.read_text())
    (run,) = report["runs"]
    assert run["flops"] > 0 and run["forward_s"] > 0 and report["matmul_gflops"]["fp32"] > 0
    c = run["by_class_s"]
    assert sum(c.values()) == pytest.approx(run["profiled_total_s"])
    assert c["matmul"] > 0 and c["sampling"] > 0 and c["softmax_norm"] > 0  # the classes see the model's ops
    assert "| 64x96 | fp32 |" in md.read_text()
    # without native bf16 the bf16 forward is skipped, saying why, and its matrix throughput still shown
    assert "bf16 forward not profiled" in report["skipped"] and report["matmul_gflops"]["bf16"] > 0


def test_cpu_info_flags():
    text = ("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C\n"
            "flags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\nprocessor\t: 1\nmodel name\t: other\n")
    cpu = parse_cpuinfo(text)
    assert cpu.model_name == "Intel(R) Xeon(R) Platinum 8481C" and cpu.bf16_kind == "amx_bf16" and cpu.native_bf16
    assert cpu.describe() == "Intel(R) Xeon(R) Platinum 8481C; avx512f yes, avx512_bf16 yes, amx_bf16 yes"
    assert parse_cpuinfo("model name : X\nflags : avx512f avx512_bf16\n").bf16_kind == "avx512_bf16"
    epyc = parse_cpuinfo("model name : AMD EPYC\nflags : avx2 fma\n")
    assert epyc.bf16_kind is None and not epyc.native_bf16
    assert parse_cpuinfo("").model_name  # never empty


def test_reports_of_separate_runs_merge(po, tmp_path, capsys):
    import json
    a, b = _report(po), _report(po)
    b["runs"][0]["size"], b["matmul_gflops"] = "800x1333", {"fp32": 300.0, "bf16": 0.456}
    b["load_average_end"] = [4.0, 5.0, 6.0]
    paths = [tmp_path / "a.json", tmp_path / "b.json"]
    for p, r in zip(paths, (a, b)):
        p.write_text(json.dumps(r))
    po.main(["--from-json", ",".join(map(str, paths)), "--markdown", str(tmp_path / "m.md")])
    text = (tmp_path / "m.md").read_text()
    assert "| 480x640 | fp32 |" in text and "| 800x1333 | fp32 |" in text
    assert "fp32 300 GFLOP/s, bf16 0.456 GFLOP/s" in text and "4.0 / 5.0 / 6.0 at the end" in text
    assert "| 480x640 | fp32 | **2.00 s** | 248 | 124 (41 %)" in text  # against the best limit seen


def test_matmul_peak_stops_growing_once_a_product_is_slow(po, monkeypatch):
    import torch
    seen = []
    mm = torch.mm
    monkeypatch.setattr(torch, "mm", lambda a, b: seen.append(a.shape[0]) or mm(a, b))
    assert po.matmul_peak(torch.float32, (128, 64), repeats=2, max_s=60) > 0
    assert seen == [64] * 3 + [128] * 3  # ascending, warm-up + repeats each
    seen.clear()
    po.matmul_peak(torch.float32, (64, 4096), repeats=2, max_s=0.0)
    assert seen == [64]  # the first product already took "too long": no 4096 product


def test_markdown_says_why_bf16_was_not_profiled(po):
    report = _report(po)
    report["skipped"] = "bf16 forward not profiled: this CPU has no avx512_bf16 / amx_bf16"
    assert "bf16 forward not profiled: this CPU has no avx512_bf16 / amx_bf16." in po.markdown(report)
