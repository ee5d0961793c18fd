"""scripts/gpu_check.py, the CPU side: arguments, budgets, skip reasons without CUDA, failures
recorded without stopping the run, the JSON and markdown report, and a dry run of the training
section's code on the CPU. (The CUDA sections themselves have never run here: no GPU.)"""
import importlib.util
import json
import sys
import time

import pytest
import torch

from shared_paths import REPO


@pytest.fixture(scope="module")
def gc():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("gpu_check", None)


def test_arguments_and_clear_errors(gc, capsys):
    args = gc.parse_args([])
    assert args.section_names == list(gc.SECTIONS) and args.budget_s == 480 and args.device == "cuda"
    assert gc.parse_args(["--sections", "triton, train"]).section_names == ["triton", "train"]
    for bad in (["--sections", "triton,warp"], ["--sections", ","], ["--budget-s", "0"], ["--frames", "0"]):
        with pytest.raises(SystemExit) as e:
            gc.parse_args(bad)
        assert e.value.code == 2
    err = capsys.readouterr().err
    assert "unknown section(s) warp; choose from tests, triton, swint" in err
    assert "must be positive" in err


def test_budgets_fit_eight_minutes_and_scale_down_together(gc):
    full = gc.section_budgets(list(gc.SECTIONS), 480)
    assert sum(full.values()) <= 480 and full == {k: v for k, v in gc.BUDGETS.items()}
    half = gc.section_budgets(["swint", "train"], 125)
    assert half["swint"] == pytest.approx(100) and half["train"] == pytest.approx(25)
    budget = gc.Budget(0.05)
    assert not budget.expired()
    time.sleep(0.06)
    assert budget.expired() and budget.left() < 0


def test_gpu_marked_test_files_are_found(gc):
    files = gc.gpu_test_files()
    assert "test/test_triton_deform_attn.py" in files and "test/test_gpu_check.py" not in files


def test_version_guard(gc):
    assert gc.torch_at_least("2.0", "2.11.0+cu128")
    assert not gc.torch_at_least("2.12", "2.11.0")
    assert gc.torch_at_least("2.11", "2.11.0a0+git123")
    assert gc.torch_at_least("1.13")  # the running torch


def test_a_failing_section_is_recorded_and_the_next_one_runs(gc):
    def broken(result, budget, args):
        raise ValueError("kernel exploded\nsecond line")

    def skipping(result, budget, args):
        raise gc.Skip("needs ROS")

    def fine(result, budget, args):
        result.rows.append({"what": "x | y", "median_ms": 1.5})

    args = gc.parse_args([])
    results = [gc.run_section(n, f, 1.0, args) for n, f in (("a", broken), ("b", skipping), ("c", fine))]
    assert [r.status for r in results] == ["failed", "skipped", "ok"]
    assert results[0].reason == "ValueError: kernel exploded" and "Traceback" in results[0].info["traceback"]
    assert results[1].reason == "needs ROS"
    md = gc.markdown({"gpu": "Test GPU", "gpu_memory_gib": 80.0, "driver": "999.1", "torch": "2.11.0",
                      "cuda_runtime": "12.8", "triton": "3.5.0", "python": "3.12.3"}, results)
    assert "GPU: Test GPU, 80.0 GiB; driver 999.1; torch 2.11.0 (CUDA 12.8); Triton 3.5.0; Python 3.12.3" in md
    assert "| a | failed | ValueError: kernel exploded |" in md
    assert "| c | ok | x / y | median_ms=1.5 |" in md  # a '|' cannot break the table


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA behaviour")
def test_without_cuda_every_gpu_section_is_skipped_with_its_reason_and_reported(gc, tmp_path, capsys):
    rc = gc.main(["--out", str(tmp_path), "--sections", "tests,triton,swint,train,predictor,tensorrt,ros"])
    assert rc == 0
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    env = report["environment"]
    assert env["torch"] == torch.__version__ and env["cuda_available"] is False and "triton" in env
    by_name = {s["name"]: s for s in report["sections"]}
    for name in ("tests", "triton", "swint", "train", "predictor"):
        assert by_name[name]["status"] == "skipped"
        assert by_name[name]["reason"] == "no CUDA device (torch.cuda.is_available() is False)"
    for name in ("tensorrt", "ros"):
        assert by_name[name]["status"] == "skipped" and by_name[name]["reason"]
    md = (tmp_path / "gpu_check.md").read_text()
    assert "GPU: none (no CUDA device)" in md and f"torch {torch.__version__}" in md
    assert md.count("| skipped |") == 7
    assert "wrote" in capsys.readouterr().out


def test_training_section_dry_run_on_the_cpu(gc, tmp_path):
    """--device cpu runs a section's own code (tiny model, float32): the AMP loop, the loss, the
    optimizer and the report row."""
    rc = gc.main(["--out", str(tmp_path), "--sections", "train", "--device", "cpu", "--train-steps", "1"])
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    train = report["sections"][0]
    assert rc == 0 and train["status"] == "ok", train
    row = train["rows"][0]
    assert row["steps"] == 1 and row["finite"] and row["median_ms"] > 0
