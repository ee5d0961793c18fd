"""UniKPT: one annotation format and one keypoint vocabulary for the 13 keypoint datasets.

- `format`: the unified annotation file (dataclasses, load/save, validation).
- `vocabulary`: the unified keypoint vocabulary (unipose_train/data/unikpt_vocabulary.json), shared
  with the model's prompt vocabulary.
- `converters`: one module per source format, registered by dataset name.
- `merge`, `stats`, `show`, `cli`: the `unipose-data` tool.
"""
from .format import Category, Image, Instance, Issue, UniKPT, UniKPTError, load, save

__all__ = ["Category", "Image", "Instance", "Issue", "UniKPT", "UniKPTError", "load", "save"]
