"""Deprecated: `python -m training.evaluation.support_ranking` runs `python -m unipose_train.evaluation.support_ranking`."""
import runpy

if __name__ == "__main__":
    runpy.run_module("unipose_train.evaluation.support_ranking", run_name="__main__", alter_sys=True)
