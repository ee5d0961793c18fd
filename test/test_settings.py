"""One settings object: the AUTO rule, explicit changes, per-predictor query counts that never
leak into another predictor sharing the model, and the per-call score floor."""
import numpy as np
import pytest
import torch

from unipose_model.predictor import Predictor, PredictorError
from unipose_model.settings import AUTO, LIBRARY_DEFAULTS, Settings, auto_if_negative

IMAGE = (np.random.default_rng(0).random((200, 260, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def predictor():
    return Predictor("unipose_tiny", "reference", device="cpu", text_encoder="hash", short_side=128, max_size=160,
                     box_threshold=0.0)


def _summary(instances):
    return [(i.label, round(i.score, 5), tuple(round(v, 3) for v in i.box)) for i in instances]


def test_auto_is_the_model_files_value_and_changes_are_explicit(predictor):
    assert Settings().resolved(LIBRARY_DEFAULTS).short_side == 800
    assert auto_if_negative(-1) == AUTO and auto_if_negative(0) == 0 and auto_if_negative(0.3) == 0.3
    with pytest.raises(dataclass_error()):
        predictor.settings.box_threshold = 0.5  # frozen: no field-by-field changes
    before = predictor.settings
    predictor.settings = before.replace(box_threshold=0.5, short_side=AUTO)
    assert (predictor.box_threshold, predictor.short_side) == (0.5, 800)  # no file: the library default
    with pytest.raises(PredictorError, match="box_threshold"):
        predictor.settings = before.replace(box_threshold=2.0)
    assert predictor.box_threshold == 0.5  # a refused change leaves the settings as they were
    predictor.settings = before
    assert predictor.settings == before


def dataclass_error():
    import dataclasses
    return dataclasses.FrozenInstanceError


def test_query_counts_are_per_predictor_and_do_not_leak_into_a_shared_model(predictor):
    other = Predictor(predictor.model, device="cpu", text_encoder="hash", short_side=128, max_size=160,
                      box_threshold=0.0)
    assert other.model is predictor.model
    reference = _summary(other.predict(IMAGE, "person"))
    cfg = predictor.model.config
    predictor.set_query_counts(num_queries=20, num_select=2)
    try:
        fewer = predictor.predict(IMAGE, "person")
        assert len(fewer) <= 2 < len(reference)  # only 2 instances get keypoint queries
        # the shared model keeps its configuration; the other predictor's results are unchanged
        assert (predictor.model.transformer.num_queries, predictor.model.transformer.decoder.num_select) == \
               (cfg.num_queries, cfg.num_select)
        assert _summary(other.predict(IMAGE, "person")) == reference
    finally:
        predictor.set_query_counts(None, None)
    assert _summary(predictor.predict(IMAGE, "person")) == reference
    with pytest.raises(PredictorError, match="num_select"):
        predictor.set_query_counts(num_queries=5, num_select=6)


def test_score_floor_is_per_call():
    """The bundled fly model on a clip frame: the floor returns the weak detections a tracker's
    second pass needs, for that call only."""
    import cv2

    from unipose_model.model_file import BUNDLED_VIDEO

    cap = cv2.VideoCapture(str(BUNDLED_VIDEO))
    ok, frame = cap.read()
    cap.release()
    assert ok
    fly = Predictor(model="fly", device="cpu")
    strict = fly.predict(frame, "fly", color="bgr")
    loose = fly.predict(frame, "fly", color="bgr", score_floor=0.01)
    assert fly.box_threshold == 0.3  # the model file's; the call did not change it
    assert all(i.score > 0.3 for i in strict)
    assert len(loose) > len(strict) and min(i.score for i in loose) <= 0.3
    assert _summary(loose[:len(strict)]) == _summary(strict)  # the same strong ones, best first
    # the floor only lowers: above the threshold it changes nothing
    assert _summary(fly.predict(frame, "fly", color="bgr", score_floor=0.9)) == _summary(strict)


def test_dtype_and_backend_spellings(predictor):
    assert predictor.dtype == torch.float32 and predictor.settings.dtype == "float32"
    with pytest.raises(PredictorError, match="unknown dtype"):
        predictor.settings = predictor.settings.replace(dtype="int8")
    with pytest.warns(DeprecationWarning, match="pytorch"):
        old = Predictor(predictor.model, device="cpu", text_encoder="hash", backend="torch")
    assert old.backend == "pytorch"
