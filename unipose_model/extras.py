"""Optional dependencies: import one, or fail with one line naming the pip extra that installs it.

Inference needs none of the extras (setup.py); training, `unipose bag` and ONNX export import
theirs through `require` at the point of use, so a plain `pip install unipose_ros` still runs
`unipose predict`, and a missing extra is reported as `pip install 'unipose_ros[train]'`.
"""
from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtra(ImportError):
    """An optional package is not installed; the message says which extra installs it."""


def missing_extra_message(module: str, extra: str, purpose: str) -> str:
    return (f"{purpose} needs the '{module.split('.')[0]}' package, which is not installed: "
            f"pip install 'unipose_ros[{extra}]'")


def require(module: str, extra: str, purpose: str, error: type[Exception] = MissingExtra) -> ModuleType:
    """Import `module`; if it is missing raise `error` (one line, with the pip extra to install)."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        if e.name is not None and module != e.name and not module.startswith(e.name + "."):
            raise  # the package is there but one of its own imports failed: show the real cause
        raise error(missing_extra_message(module, extra, purpose)) from None
