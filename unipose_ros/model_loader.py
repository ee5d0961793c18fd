"""Building the predictor and resolving prompts: shared by the node and `unipose bag`."""
from __future__ import annotations

from unipose_ros.detection_messages import ActivePrompt


def load_predictor(p: dict):
    """The model behind the node, built from the node's parameters (dict name -> value)."""
    if p["backend"] != "torch":
        raise RuntimeError(f"backend '{p['backend']}' is not available yet; use 'torch' (the "
                           "deployment work adds onnxruntime and tensorrt)")
    from unipose_model.predictor import Predictor

    return Predictor(model=p["model"], checkpoint=p["checkpoint"] or None, device=p["device"],
                     dtype=p["precision"], text_encoder=p["text_encoder"],
                     clip_weights=p["clip_weights"] or None, box_threshold=p["box_threshold"],
                     iou_threshold=p["iou_threshold"], short_side=p["short_side"],
                     max_size=p["max_size"] or None, max_instances=p["max_instances"] or None)


def resolve_prompt(predictor, text: str) -> ActivePrompt:
    """Parse and encode a prompt (the CLI's grammar, one parser); raises with the reason."""
    from unipose_model.prompt import parse_prompt

    text = (text or "").strip()
    if not text:
        raise ValueError("empty prompt")
    canonical = parse_prompt(text).canonical()
    return ActivePrompt.from_prepared(canonical, predictor.prepare_prompt(canonical))
