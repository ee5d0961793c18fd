"""Deprecated: `python -m training.train_cli` runs `python -m unipose_train.train_cli`."""
import runpy

if __name__ == "__main__":
    runpy.run_module("unipose_train.train_cli", run_name="__main__", alter_sys=True)
