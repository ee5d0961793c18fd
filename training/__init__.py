"""Deprecated name of `unipose_train` (renamed so an installed copy cannot collide with another
project's top-level `training` package). Kept in the checkout only, for `python -m training...`
commands written before the rename; it is not installed by pip. Removal: the release after 0.2.
"""
import sys

print("unipose: `training` is now `unipose_train`; use `python -m unipose_train...` "
      "(the old name will be removed)", file=sys.stderr)
