"""The errors the Predictor raises for the user to fix (torch-free, so the CLI can name them
without importing the model)."""
from __future__ import annotations


class UserError(Exception):
    """A problem the user fixes (arguments, files): command lines print it as one line, exit 2.
    Other packages' commands (``unipose bag``) raise subclasses of it."""


class PredictorError(ValueError):
    """Bad arguments to the predictor (device, dtype, prompt size, settings, ...)."""


class CheckpointNotFoundError(FileNotFoundError):
    """The checkpoint file is not where it was expected."""


class UnknownPromptError(PredictorError):
    """A prompt outside the fixed vocabulary of a model that carries its own prompt features."""
