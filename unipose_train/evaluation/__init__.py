"""Evaluation: OKS AP (COCO protocol, per-dataset sigmas), PCK@0.2, box AP, reports.

`unipose-eval` (cli.py) scores COCO-format results against UniKPT ground truth and writes the
per-dataset table (markdown + JSON) and overlays of the worst cases.
"""
