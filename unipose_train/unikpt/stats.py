"""Per-dataset counts of UniKPT files: images, instances, labelled keypoints, categories."""
from __future__ import annotations

from collections import OrderedDict
from typing import Iterable

from .format import UniKPT

__all__ = ["dataset_stats", "stats_rows", "markdown_table"]

COLUMNS = ["dataset", "images", "instances", "labelled keypoints", "keypoint names", "categories"]


def dataset_stats(data: UniKPT) -> dict:
    return {"dataset": data.dataset, "images": len(data.images), "instances": len(data.instances),
            "labelled keypoints": int(sum(i.num_keypoints for i in data.instances)),
            "keypoint names": len({n for c in data.categories for n in c.keypoints}),
            "categories": len({c.name for c in data.categories}),
            "_names": {n for c in data.categories for n in c.keypoints},
            "_cats": {c.name for c in data.categories}}


def stats_rows(datasets: Iterable[UniKPT]) -> list[dict]:
    """One row per dataset name (files of the same dataset are added up) and a total row."""
    rows: "OrderedDict[str, dict]" = OrderedDict()
    for data in datasets:
        s = dataset_stats(data)
        row = rows.setdefault(s["dataset"], {k: 0 for k in COLUMNS} | {"dataset": s["dataset"],
                                                                       "_names": set(), "_cats": set()})
        for k in ("images", "instances", "labelled keypoints"):
            row[k] += s[k]
        row["_names"] |= s["_names"]
        row["_cats"] |= s["_cats"]
    total = {k: 0 for k in COLUMNS} | {"dataset": "total", "_names": set(), "_cats": set()}
    for row in rows.values():
        row["keypoint names"], row["categories"] = len(row["_names"]), len(row["_cats"])
        for k in ("images", "instances", "labelled keypoints"):
            total[k] += row[k]
        total["_names"] |= row["_names"]
        total["_cats"] |= row["_cats"]
    total["keypoint names"], total["categories"] = len(total["_names"]), len(total["_cats"])
    out = list(rows.values()) + [total]
    return [{k: r[k] for k in COLUMNS} for r in out]


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> str:
    columns = columns or list(rows[0])
    head = "| " + " | ".join(columns) + " |"
    rule = "|" + "|".join("---" if c == columns[0] else "---:" for c in columns) + "|"
    body = ["| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if v >= 0 else "-"
    return str(v)
