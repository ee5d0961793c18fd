"""Deprecated alias package; see training/__init__.py."""
