"""Deprecated: `python -m training.heatmap_refiner_train` runs `python -m unipose_train.heatmap_refiner_train`."""
import runpy

if __name__ == "__main__":
    runpy.run_module("unipose_train.heatmap_refiner_train", run_name="__main__", alter_sys=True)
