"""Deprecated: `python -m training.model_export` runs `python -m unipose_train.model_export`."""
import runpy

if __name__ == "__main__":
    runpy.run_module("unipose_train.model_export", run_name="__main__", alter_sys=True)
