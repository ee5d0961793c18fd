"""Deprecated: `python -m training.unikpt.cli` runs `python -m unipose_train.unikpt.cli`."""
import runpy

if __name__ == "__main__":
    runpy.run_module("unipose_train.unikpt.cli", run_name="__main__", alter_sys=True)
