"""COCO-style AP/AR over a UniKPT ground-truth file, for keypoints (OKS) and boxes (IoU).

A pure-numpy re-implementation of the COCO evaluation protocol (matching, 101-point interpolated
precision, area ranges, max detections, crowd and no-keypoint ground truth ignored), with one
generalisation: OKS sigmas are per category, so files whose categories use different layouts
are scored in one pass. Tests check it equals xtcocotools and pycocotools to 1e-6; `library_eval`
runs those tools themselves (``--backend xtcocotools|pycocotools`` in `unipose-eval`).

Quirks kept on purpose so numbers stay comparable with published tables:
- a detection's area (for the area-range filter) is its box area when the results carry a
  ``bbox``, else the extent of its keypoints (what ``COCO.loadRes`` does);
- ground truth with no labelled keypoint is ignored in keypoint AP;
- with ``use_area=False`` the ground truth's size is box area * 0.53 (xtcocotools).
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..unikpt.format import UniKPT
from .oks import XTCOCO_BOX_AREA_FACTOR, box_iou_matrix, oks_matrix

__all__ = ["EvalParams", "COCOStyleEval", "evaluate_keypoints", "KEYPOINT_STATS", "BBOX_STATS",
           "library_eval", "available_backends", "check_results"]

KEYPOINT_STATS = ["AP", "AP50", "AP75", "APM", "APL", "AR", "AR50", "AR75", "ARM", "ARL"]
BBOX_STATS = ["AP", "AP50", "AP75", "APS", "APM", "APL", "AR1", "AR10", "AR100", "ARS", "ARM", "ARL"]


@dataclass
class EvalParams:
    iou_type: str = "keypoints"  # or "bbox"
    iou_thrs: np.ndarray = field(default_factory=lambda: np.linspace(.5, 0.95, int(np.round((0.95 - .5) / .05)) + 1))
    rec_thrs: np.ndarray = field(default_factory=lambda: np.linspace(.0, 1.00, int(np.round((1.00 - .0) / .01)) + 1))
    max_dets: list[int] = field(default_factory=list)
    area_rngs: list[tuple[float, float]] = field(default_factory=list)
    area_names: list[str] = field(default_factory=list)

    def __post_init__(self):
        if not self.max_dets:
            self.max_dets = [20] if self.iou_type == "keypoints" else [1, 10, 100]
        if not self.area_rngs:
            if self.iou_type == "keypoints":
                self.area_rngs = [(0, 1e5 ** 2), (32 ** 2, 96 ** 2), (96 ** 2, 1e5 ** 2)]
                self.area_names = ["all", "medium", "large"]
            else:
                self.area_rngs = [(0, 1e5 ** 2), (0, 32 ** 2), (32 ** 2, 96 ** 2), (96 ** 2, 1e5 ** 2)]
                self.area_names = ["all", "small", "medium", "large"]


def check_results(gt: UniKPT, results: Sequence[dict], iou_type: str) -> None:
    """Raise ValueError for results the COCO tools would refuse (unknown image, missing field)."""
    image_ids = {im.id for im in gt.images}
    cats = {c.id: c for c in gt.categories}
    for n, r in enumerate(results):
        if r.get("image_id") not in image_ids:
            raise ValueError(f"result #{n}: image_id {r.get('image_id')!r} is not in the ground truth")
        if r.get("category_id") not in cats:
            raise ValueError(f"result #{n}: category_id {r.get('category_id')!r} is not in the ground truth")
        if "score" not in r:
            raise ValueError(f"result #{n}: no 'score'")
        if iou_type == "keypoints":
            k = len(cats[r["category_id"]].keypoints)
            if len(r.get("keypoints", [])) != 3 * k:
                raise ValueError(f"result #{n}: {len(r.get('keypoints', [])) // 3} keypoints, category "
                                 f"{r['category_id']} has {k}")
        elif len(r.get("bbox") or []) != 4:
            raise ValueError(f"result #{n}: no 4-number 'bbox'")


class COCOStyleEval:
    """evaluate() -> per image/category matches; accumulate() -> precision/recall; stats."""

    def __init__(self, gt: UniKPT, results: Sequence[dict], iou_type: str = "keypoints",
                 sigmas: dict[int, Sequence[float]] | Sequence[float] | None = None,
                 use_area: bool = True, params: EvalParams | None = None):
        self.gt = gt
        self.params = params or EvalParams(iou_type)
        self.iou_type = iou_type
        self.use_area = use_area
        check_results(gt, results, iou_type)
        self.cat_ids = sorted(c.id for c in gt.categories)
        self.img_ids = sorted(im.id for im in gt.images)
        self.sigmas = self._sigmas(sigmas) if iou_type == "keypoints" else {}
        self._gts: dict[tuple[int, int], list[dict]] = {}
        self._dts: dict[tuple[int, int], list[dict]] = {}
        for inst in gt.instances:
            area = inst.area if use_area else inst.bbox[2] * inst.bbox[3] * XTCOCO_BOX_AREA_FACTOR
            ignore = bool(inst.iscrowd) or (iou_type == "keypoints" and inst.num_keypoints == 0)
            self._gts.setdefault((inst.image_id, inst.category_id), []).append(
                {"id": inst.id, "area": area, "bbox": inst.bbox, "kpts": inst.keypoints,
                 "iscrowd": int(inst.iscrowd), "ignore": ignore})
        # COCO.loadRes's rule (the first result decides), made safe for results where only some
        # entries have a box: those then all use their keypoints' extent
        box_area = bool(results) and all(r.get("bbox") for r in results)
        for n, r in enumerate(results):
            if iou_type == "keypoints" and not box_area:
                k = np.asarray(r["keypoints"], dtype=np.float64).reshape(-1, 3)
                x0, x1, y0, y1 = k[:, 0].min(), k[:, 0].max(), k[:, 1].min(), k[:, 1].max()
                area, bbox = (x1 - x0) * (y1 - y0), (x0, y0, x1 - x0, y1 - y0)
            else:
                bbox = tuple(float(v) for v in r["bbox"])
                area = bbox[2] * bbox[3]
            d = {"id": n + 1, "score": float(r["score"]), "area": area, "bbox": bbox}
            if iou_type == "keypoints":
                d["kpts"] = np.asarray(r["keypoints"], dtype=np.float64).reshape(-1, 3)
            self._dts.setdefault((r["image_id"], r["category_id"]), []).append(d)
        self.ious: dict[tuple[int, int], np.ndarray] = {}
        self.eval_imgs: list[dict | None] = []
        self.precision = self.recall = None
        self.stats: dict[str, float] = {}

    def _sigmas(self, sigmas) -> dict[int, np.ndarray]:
        out = {}
        for c in self.gt.categories:
            s = sigmas.get(c.id) if isinstance(sigmas, dict) else sigmas
            s = c.sigmas if s is None else s
            if s is None:
                raise ValueError(f"category {c.name!r} (id {c.id}) has no OKS sigmas; give sigmas or "
                                 "use PCK for this dataset")
            if len(s) != len(c.keypoints):
                raise ValueError(f"{len(s)} sigmas for category {c.name!r} with {len(c.keypoints)} keypoints")
            out[c.id] = np.asarray(s, dtype=np.float64)
        return out

    # ------------------------------------------------------------------ matching
    def _sorted_dts(self, key) -> list[dict]:
        dts = self._dts.get(key, [])
        order = np.argsort([-d["score"] for d in dts], kind="mergesort")
        return [dts[i] for i in order][: self.params.max_dets[-1]]

    def _compute_ious(self, key) -> np.ndarray:
        gts, dts = self._gts.get(key, []), self._sorted_dts(key)
        if not gts or not dts:
            return np.zeros((0, 0))
        if self.iou_type == "keypoints":
            return oks_matrix(np.stack([d["kpts"] for d in dts]), np.stack([g["kpts"] for g in gts]),
                              np.array([g["area"] for g in gts]), np.array([g["bbox"] for g in gts]),
                              self.sigmas[key[1]])
        return box_iou_matrix(np.array([d["bbox"] for d in dts]), np.array([g["bbox"] for g in gts]),
                              np.array([g["iscrowd"] for g in gts]))

    def _evaluate_img(self, key, area_rng, max_det) -> dict | None:
        gts, dts = self._gts.get(key, []), self._dts.get(key, [])
        if not gts and not dts:
            return None
        g_ignore = np.array([1 if g["ignore"] or not area_rng[0] <= g["area"] <= area_rng[1] else 0
                             for g in gts], dtype=int)
        gt_order = np.argsort(g_ignore, kind="mergesort")
        gts = [gts[i] for i in gt_order]
        g_ignore = g_ignore[gt_order]
        dts = self._sorted_dts(key)[:max_det]
        crowd = [g["iscrowd"] for g in gts]
        ious = self.ious[key]
        ious = ious[:, gt_order] if ious.size else ious
        thrs = self.params.iou_thrs
        gtm = np.zeros((len(thrs), len(gts)))
        dtm = np.zeros((len(thrs), len(dts)))
        dt_ignore = np.zeros((len(thrs), len(dts)))
        if ious.size:
            for t, thr in enumerate(thrs):
                for di, d in enumerate(dts):
                    best, m = min(thr, 1 - 1e-10), -1
                    for gi in range(len(gts)):
                        if gtm[t, gi] > 0 and not crowd[gi]:
                            continue  # already matched, and not a crowd region
                        if m > -1 and g_ignore[m] == 0 and g_ignore[gi] == 1:
                            break  # ignored gts are sorted last: a real match beats them
                        if ious[di, gi] < best:
                            continue
                        best, m = ious[di, gi], gi
                    if m == -1:
                        continue
                    dt_ignore[t, di] = g_ignore[m]
                    dtm[t, di] = gts[m]["id"]
                    gtm[t, m] = d["id"]
        out_of_range = np.array([not area_rng[0] <= d["area"] <= area_rng[1] for d in dts]).reshape(1, -1)
        dt_ignore = np.logical_or(dt_ignore, np.logical_and(dtm == 0, np.repeat(out_of_range, len(thrs), 0)))
        return {"dt_matches": dtm, "dt_scores": np.array([d["score"] for d in dts]),
                "gt_ignore": g_ignore, "dt_ignore": dt_ignore}

    def evaluate(self) -> None:
        keys = [(i, c) for i in self.img_ids for c in self.cat_ids]
        self.ious = {k: self._compute_ious(k) for k in keys}
        self.eval_imgs = [self._evaluate_img((i, c), a, self.params.max_dets[-1])
                          for c in self.cat_ids for a in self.params.area_rngs for i in self.img_ids]

    # ------------------------------------------------------------------ precision / recall
    def accumulate(self) -> None:
        p = self.params
        T, R, K, A, M = len(p.iou_thrs), len(p.rec_thrs), len(self.cat_ids), len(p.area_rngs), len(p.max_dets)
        precision = -np.ones((T, R, K, A, M))
        recall = -np.ones((T, K, A, M))
        n_img = len(self.img_ids)
        for k in range(K):
            for a in range(A):
                evals = [e for e in self.eval_imgs[k * A * n_img + a * n_img:(k * A + a + 1) * n_img]
                         if e is not None]
                if not evals:
                    continue
                for m, max_det in enumerate(p.max_dets):
                    scores = np.concatenate([e["dt_scores"][:max_det] for e in evals])
                    order = np.argsort(-scores, kind="mergesort")
                    dtm = np.concatenate([e["dt_matches"][:, :max_det] for e in evals], axis=1)[:, order]
                    dti = np.concatenate([e["dt_ignore"][:, :max_det] for e in evals], axis=1)[:, order]
                    n_pos = np.count_nonzero(np.concatenate([e["gt_ignore"] for e in evals]) == 0)
                    if n_pos == 0:
                        continue
                    tps = np.logical_and(dtm, np.logical_not(dti))
                    fps = np.logical_and(np.logical_not(dtm), np.logical_not(dti))
                    tp_sum = np.cumsum(tps, axis=1).astype(float)
                    fp_sum = np.cumsum(fps, axis=1).astype(float)
                    for t, (tp, fp) in enumerate(zip(tp_sum, fp_sum)):
                        nd = len(tp)
                        rc = tp / n_pos
                        pr = tp / (fp + tp + np.spacing(1))
                        recall[t, k, a, m] = rc[-1] if nd else 0
                        # precision envelope: monotonically non-increasing from the right
                        pr = np.maximum.accumulate(pr[::-1])[::-1] if nd else pr
                        idx = np.searchsorted(rc, p.rec_thrs, side="left")
                        q = np.zeros(R)
                        valid = idx < nd
                        q[valid] = pr[idx[valid]]  # thresholds beyond the reached recall stay 0
                        precision[t, :, k, a, m] = q
        self.precision, self.recall = precision, recall

    def _summarize(self, ap: bool, iou_thr: float | None = None, area: str = "all", max_det: int | None = None) -> float:
        p = self.params
        a = p.area_names.index(area)
        m = p.max_dets.index(max_det if max_det is not None else p.max_dets[-1])
        s = self.precision[:, :, :, a, m] if ap else self.recall[:, :, a, m]
        if iou_thr is not None:
            s = s[np.where(iou_thr == p.iou_thrs)[0]]
        s = s[s > -1]
        return float(np.mean(s)) if s.size else -1.0

    def summarize(self) -> dict[str, float]:
        S = self._summarize
        if self.iou_type == "keypoints":
            values = [S(True), S(True, .5), S(True, .75), S(True, area="medium"), S(True, area="large"),
                      S(False), S(False, .5), S(False, .75), S(False, area="medium"), S(False, area="large")]
            self.stats = dict(zip(KEYPOINT_STATS, values))
        else:
            values = [S(True), S(True, .5), S(True, .75), S(True, area="small"), S(True, area="medium"),
                      S(True, area="large"), S(False, max_det=1), S(False, max_det=10), S(False),
                      S(False, area="small"), S(False, area="medium"), S(False, area="large")]
            self.stats = dict(zip(BBOX_STATS, values))
        return self.stats

    def run(self) -> dict[str, float]:
        self.evaluate()
        self.accumulate()
        return self.summarize()


def evaluate_keypoints(gt: UniKPT, results: Sequence[dict], sigmas=None, use_area: bool = True) -> dict[str, float]:
    """OKS AP/AR (AP, AP50, AP75, APM, APL, AR, ...) of COCO-format keypoint results."""
    return COCOStyleEval(gt, results, "keypoints", sigmas=sigmas, use_area=use_area).run()


# ---------------------------------------------------------------------- the COCO tools themselves
def available_backends() -> list[str]:
    """COCO tool packages that import and work here (xtcocotools wheels built for numpy 1 fail)."""
    found = []
    for name in ("xtcocotools", "pycocotools"):
        try:
            __import__(f"{name}.coco")
            __import__(f"{name}.cocoeval")
            found.append(name)
        except (ImportError, ValueError):
            pass
    return found


def library_eval(gt: UniKPT | dict | str | Path, results: Sequence[dict], iou_type: str = "keypoints",
                 sigmas: Sequence[float] | None = None, backend: str = "xtcocotools",
                 use_area: bool = True) -> dict[str, float]:
    """Run xtcocotools' or pycocotools' COCOeval (one sigma vector for all categories)."""
    import contextlib
    import io

    if isinstance(gt, UniKPT):
        gt_json = gt.to_json()
    elif isinstance(gt, (str, Path)):
        gt_json = json.loads(Path(gt).read_text())
    else:
        gt_json = copy.deepcopy(gt)
    coco_mod = __import__(f"{backend}.coco", fromlist=["COCO"])
    eval_mod = __import__(f"{backend}.cocoeval", fromlist=["COCOeval"])
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = coco_mod.COCO()
        coco_gt.dataset = gt_json
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(list(results)))
        if backend == "xtcocotools":
            ev = eval_mod.COCOeval(coco_gt, coco_dt, iou_type,
                                   sigmas=None if sigmas is None else np.asarray(sigmas, dtype=np.float64),
                                   use_area=use_area)
        else:
            ev = eval_mod.COCOeval(coco_gt, coco_dt, iou_type)
            if sigmas is not None:
                ev.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    names = KEYPOINT_STATS if iou_type == "keypoints" else BBOX_STATS
    return dict(zip(names, (float(v) for v in ev.stats)))
