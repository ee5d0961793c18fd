"""Deprecated: `python -m training.evaluation.cli` runs `python -m unipose_train.evaluation.cli`."""
import runpy

if __name__ == "__main__":
    runpy.run_module("unipose_train.evaluation.cli", run_name="__main__", alter_sys=True)
