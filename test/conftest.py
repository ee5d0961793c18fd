"""Shared test setup: never touch the network."""
import os

# Must be set before huggingface_hub is imported anywhere (it reads these once).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running test (still part of CI)")
    config.addinivalue_line("markers", "gpu: has checks that run on a CUDA device when one is present "
                                       "(scripts/gpu_check.py runs them: pytest -m gpu)")
