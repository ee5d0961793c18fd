"""The tracker (unipose_model/tracking.py) and the MOT scores (tracking_metrics.py): identities
through crossings, misses and weak detections; birth/death hysteresis; CLEAR-MOT/IDF1 on a
hand-worked case."""
from dataclasses import dataclass

import numpy as np
import pytest

from unipose_model.predictor import Instance
from unipose_model.tracking import UNCONFIRMED, Tracker, TrackerConfig
from unipose_model.tracking_metrics import evaluate_tracking

SHAPE = np.array([[0.0, -20], [0, 0], [0, 20], [-15, 5], [15, 5]])  # a little body, centred


def fly(cx, cy, score=0.9, angle=0.0, class_index=0, noise=None):
    c, s = np.cos(angle), np.sin(angle)
    pts = SHAPE @ np.array([[c, s], [-s, c]]) + (cx, cy)
    if noise is not None:
        pts = pts + noise
    kpts = np.c_[pts, np.full(len(pts), score)]
    return Instance("fly", class_index, score, (cx - 20, cy - 25, cx + 20, cy + 25), kpts,
                    tuple("abcde"))


def ids(out):
    return [i.track_id for i in out]


def by_position(out):
    """{rounded box centre x: track id}"""
    return {round((i.box[0] + i.box[2]) / 2): i.track_id for i in out}


# ------------------------------------------------------------------------------ metrics
def test_clear_mot_and_idf1_on_a_hand_worked_case():
    A, B, far = (0, 0, 10, 10), (100, 0, 110, 10), (200, 200, 210, 210)
    gt = [{1: A, 2: B}] * 4
    hyp = [{1: A, 2: B}, {1: A, 2: B}, {3: A, 4: far}, {3: A, 2: B}]
    s = evaluate_tracking(gt, hyp)
    # by hand: 8 truths, 8 hypotheses, 7 matched; frame 2 misses B, has one false positive and
    # A moves from hypothesis 1 to 3 (one switch); B is h2 again after its miss (no switch)
    assert (s.num_gt, s.num_hyp, s.matches, s.misses, s.false_positives, s.id_switches) == (8, 8, 7, 1, 1, 1)
    assert s.mota == pytest.approx(1 - 3 / 8)
    # IDF1: best one-to-one pairing A-h1 (or A-h3), 2 frames + B-h2, 3 frames -> IDTP 5 of 16 boxes
    assert s.idtp == 5 and s.idf1 == pytest.approx(10 / 16)
    assert [(w.frame, w.gt_id, w.previous_hyp, w.new_hyp) for w in s.switches] == [(2, 1, 1, 3)]


def test_a_perfect_track_scores_one_and_a_swap_is_two_switches():
    gt = [{1: (0, 0, 10, 10), 2: (50, 0, 60, 10)}] * 3
    assert evaluate_tracking(gt, gt).idf1 == 1.0 and evaluate_tracking(gt, gt).mota == 1.0
    swapped = gt[:1] + [{2: (0, 0, 10, 10), 1: (50, 0, 60, 10)}] * 2
    s = evaluate_tracking(gt, swapped)
    assert s.id_switches == 2 and s.idf1 == pytest.approx(2 * 4 / 12)


# ------------------------------------------------------------------------------ tracker
def crossing(n=30):
    """Two flies crossing each other's path head-on, 4 px per frame, turned differently."""
    return [[fly(100 + 4 * t, 100, angle=0.0), fly(216 - 4 * t, 104, angle=np.pi / 2)] for t in range(n)]


@pytest.mark.parametrize("step", [1, 3, 5])
def test_identities_survive_a_crossing_at_every_step(step):
    tracker = Tracker()
    seen = {}
    for frame in crossing()[::step]:
        for inst in tracker.update(frame):
            heading = "right" if inst.keypoints[0, 0] == pytest.approx(inst.keypoints[1, 0]) else "left"
            seen.setdefault(heading, set()).add(inst.track_id)
    assert seen == {"right": {1}, "left": {2}}


def test_a_short_miss_refinds_the_same_id_and_max_age_bounds_it():
    frames = [[fly(100 + 3 * t, 100), fly(300, 300 + 3 * t)] for t in range(20)]
    for t in range(8, 12):  # the first fly is missed for four frames
        frames[t] = frames[t][1:]
    tracker = Tracker(max_age=10)
    outs = [tracker.update(f) for f in frames]
    assert set(by_position(outs[7]).values()) == {1, 2}
    assert by_position(outs[12])[136] == 1 and by_position(outs[12])[300] == 2
    short = Tracker(max_age=2)
    outs = [short.update(f) for f in frames]
    assert by_position(outs[13])[139] not in (1, 2)  # dropped after 2 misses: a new id


def test_low_score_detections_continue_tracks_but_start_none():
    tracker = Tracker(high_threshold=0.5, low_threshold=0.1)
    for t in range(3):
        tracker.update([fly(100 + 2 * t, 100)])
    out = tracker.update([fly(106, 100, score=0.2), fly(400, 400, score=0.2)])
    assert out == []  # below the user's threshold: not reported, but it kept the track alive ...
    tracker.config.report_low = True
    out = tracker.update([fly(108, 100, score=0.2), fly(400, 400, score=0.2)])
    assert ids(out) == [1]  # ... and, reported, it is still id 1; the stray one is dropped
    strict = Tracker(high_threshold=0.5, low_threshold=0.5)
    for t in range(3):
        strict.update([fly(100 + 2 * t, 100)])
    assert strict.update([fly(106, 100, score=0.2)]) == []


def test_birth_hysteresis_and_reset():
    tracker = Tracker(min_hits=2)
    assert ids(tracker.update([fly(100, 100)])) == [1]  # the first frame confirms at once
    out = tracker.update([fly(102, 100), fly(400, 400)])
    assert sorted(ids(out)) == [UNCONFIRMED, 1]  # a newcomer waits for its second frame
    out = tracker.update([fly(104, 100)])       # ... and a one-frame blip never gets an id
    assert ids(out) == [1]
    out = [tracker.update([fly(106 + 2 * t, 100), fly(300, 300)]) for t in range(2)]
    assert sorted(ids(out[0])) == [UNCONFIRMED, 1] and sorted(ids(out[1])) == [1, 2]
    tracker.reset()
    assert ids(tracker.update([fly(300, 300)])) == [1]


def test_other_classes_never_match():
    tracker = Tracker()
    tracker.update([fly(100, 100, class_index=0)])
    out = tracker.update([fly(100, 100, class_index=1)])
    assert ids(out) == [UNCONFIRMED]


def test_smoothing_reduces_keypoint_jitter_of_a_still_object():
    rng = np.random.default_rng(0)
    noise = [rng.normal(0, 2.0, SHAPE.shape) for _ in range(40)]
    errors = {}
    for a in (0.0, 0.6):
        tracker = Tracker(smoothing=a)
        err = [np.abs(tracker.update([fly(200, 200, noise=n)])[0].keypoints[:, :2] - (SHAPE + 200)).mean()
               for n in noise]
        errors[a] = np.mean(err[10:])
    assert errors[0.6] < 0.7 * errors[0.0]


def test_works_on_plain_objects_and_rejects_bad_settings():
    @dataclass
    class Det:
        box: tuple
        keypoints: np.ndarray
        score: float
        class_index: int = 0
        track_id: int | None = None

    tracker = Tracker()
    assert ids(tracker.update([Det((0, 0, 10, 10), np.zeros((0, 3)), 0.9)])) == [1]
    assert ids(tracker.update([Det((1, 0, 11, 10), np.zeros((0, 3)), 0.9)])) == [1]
    with pytest.raises(ValueError):
        TrackerConfig(low_threshold=0.5, high_threshold=0.3)
    with pytest.raises(ValueError):
        TrackerConfig(smoothing=1.0)


def test_coco_results_carry_the_track_id():
    inst = fly(100, 100)
    assert "track_id" not in inst.to_coco(0)
    tracked = Tracker().update([inst])[0]
    assert tracked.to_coco(0)["track_id"] == 1 and inst.track_id is None  # the input is not modified
