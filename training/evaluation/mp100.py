"""Deprecated: `python -m training.evaluation.mp100` runs `python -m unipose_train.evaluation.mp100`."""
import runpy

if __name__ == "__main__":
    runpy.run_module("unipose_train.evaluation.mp100", run_name="__main__", alter_sys=True)
