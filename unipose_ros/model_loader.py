"""Building the predictor and resolving prompts: shared by the node and `unipose bag`."""
from __future__ import annotations

from unipose_ros.detection_messages import ActivePrompt


def backend_name(value: str) -> str:
    """The library's backend name; 'torch' is the old spelling of 'pytorch'."""
    return "pytorch" if value == "torch" else value


def settings_from_parameters(p: dict):
    """The node's (or `unipose bag`'s) parameters as the library's Settings. ROS parameters hold
    numbers only, so "the model file's value" (AUTO) is spelled negative (settings.auto_if_negative);
    0 keeps its meaning: no long-side cap (max_size), crop refinement off (refine), all detections
    (max_instances). short_side 0 is the old spelling of AUTO and still read as it."""
    from unipose_model.settings import AUTO, Settings, auto_if_negative

    backend = backend_name(p.get("backend", "pytorch"))
    max_size = auto_if_negative(p["max_size"])
    refine = auto_if_negative(p.get("refine", -1.0))
    return Settings(box_threshold=auto_if_negative(p["box_threshold"]), iou_threshold=p["iou_threshold"],
                    short_side=AUTO if p["short_side"] <= 0 else p["short_side"],
                    max_size=max_size if max_size == AUTO else (int(max_size) or None),
                    max_instances=p["max_instances"] or None,
                    refine=refine if refine == AUTO else (float(refine) or None),
                    dtype="float32" if backend != "pytorch" else p["precision"])


def load_predictor(p: dict):
    """The model behind the node, built from the node's parameters (dict name -> value)."""
    from unipose_model.predictor import Predictor

    backend = backend_name(p["backend"])
    options = {}
    if backend != "pytorch":
        if p.get("backend_cache_dir"):
            options["cache_dir"] = p["backend_cache_dir"]
        if p.get("force_rebuild"):
            options["force_rebuild"] = True
        if backend == "tensorrt":
            options["precision"] = {"auto": "fp32", "float32": "fp32", "float16": "fp16", "bfloat16": "fp16"}[p["precision"]]
    return Predictor(model=p["model"], checkpoint=p["checkpoint"] or None, device=p["device"],
                     text_encoder=p["text_encoder"], backend=backend, backend_options=options,
                     clip_weights=p["clip_weights"] or None, compile=bool(p.get("compile", False)),
                     settings=settings_from_parameters(p))


def model_label(model: str, checkpoint: str) -> str:
    """The `model` field of the outputs: 'unipose_swint (/path.pth)', 'fly (bundled fly_demo.pth)'."""
    from unipose_model.model_file import BUNDLED_MODELS

    if not checkpoint:
        checkpoint = f"bundled {BUNDLED_MODELS[model].name}" if model in BUNDLED_MODELS else "default checkpoint"
    return f"{model} ({checkpoint})"


def runtime_value(predictor, name: str, value):
    """A node parameter's value as the predictor uses it: the "from the model file" spelling
    (negative; short_side 0) resolved against the model file (settings_from_parameters)."""
    params = {"box_threshold": -1.0, "iou_threshold": 0.9, "short_side": 0, "max_size": -1, "max_instances": 0,
              "refine": -1.0, "precision": "float32", name: value}
    return getattr(settings_from_parameters(params).resolved(predictor.model_defaults()), name)


def resolve_prompt(predictor, text: str) -> ActivePrompt:
    """Parse and encode a prompt (the CLI's grammar, one parser); raises with the reason."""
    from unipose_model.prompt import parse_prompt

    text = (text or "").strip()
    if not text:
        raise ValueError("empty prompt")
    # with the model's own vocabulary: a hint for an unknown category names what this model knows
    parsed = predictor.parse(text) if hasattr(predictor, "parse") else parse_prompt(text)
    canonical = parsed.canonical()
    return ActivePrompt.from_prepared(canonical, predictor.prepare_prompt(canonical))


def visual_prompt_from_fields(image_rgb, class_name: str, keypoint_names, keypoints, skeleton, box):
    """A unipose_model VisualPrompt from the fields of VisualPrompt.msg / CaptureVisualPrompt.srv;
    raises VisualPromptError with the reason when they do not fit together."""
    import numpy as np
    from unipose_model.visual_prompt import VisualPrompt, VisualPromptError

    names, values, links, box = check_prompt_fields(keypoint_names, keypoints, skeleton, box)
    if image_rgb is None or image_rgb.size == 0:
        raise VisualPromptError("empty support image")
    return VisualPrompt(np.ascontiguousarray(image_rgb), values.reshape(-1, 3), (class_name or "object").strip(),
                        names, list(zip(links[0::2], links[1::2])), box or None)


def check_prompt_fields(keypoint_names, keypoints, skeleton, box):
    """The message-level checks of a visual prompt (before its image is converted)."""
    import numpy as np
    from unipose_model.visual_prompt import VisualPromptError

    names = [str(n) for n in keypoint_names]
    values = np.asarray(keypoints, dtype=np.float32)
    if not names:
        raise VisualPromptError("no keypoint names")
    if len(values) != 3 * len(names):
        raise VisualPromptError(f"{len(values)} keypoint values for {len(names)} names (need 3 per keypoint: x, y, v)")
    links = [int(v) for v in skeleton]
    if len(links) % 2:
        raise VisualPromptError(f"skeleton has {len(links)} indices; it needs index pairs")
    box = [float(v) for v in box]
    if box and len(box) != 4:
        raise VisualPromptError(f"box needs 4 values (x_min, y_min, x_max, y_max) or none, got {len(box)}")
    return names, values, links, box


def visual_prompt_from_parameters(params: dict):
    """The support_image / support_keypoints / support_class parameters as a VisualPrompt, or None
    when both files are empty; raises VisualPromptError naming what is wrong."""
    from unipose_model.visual_prompt import VisualPromptError, load_visual_prompt

    image, keypoints = params.get("support_image", ""), params.get("support_keypoints", "")
    if not image and not keypoints:
        return None
    if not image or not keypoints:
        missing = "support_keypoints" if image else "support_image"
        raise VisualPromptError(f"a visual prompt needs both support_image and support_keypoints; {missing} is empty")
    return load_visual_prompt(image, keypoints, class_name=params.get("support_class") or None)


def resolve_visual_prompt(predictor, visual, text_prompt: str | None = None) -> ActivePrompt:
    """Encode a visual prompt (optionally with a text prompt); raises with the reason."""
    prepared = predictor.prepare_visual_prompt(visual, text_prompt or None)
    return ActivePrompt.from_prepared(prepared.text, prepared)
