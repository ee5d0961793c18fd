"""Visual prompts: one annotated support image instead of text (UniPose paper, section 2.1).

A support image of an object with its keypoints marked is encoded into what a text prompt gives
the detector: one instance embedding and one embedding per keypoint, in the 512-d space of the
CLIP text features, so the detector itself is unchanged and text and visual prompts can be mixed.

    support image --image tower--> patch tokens + pooled image embedding
    keypoints: visible -> Fourier embedding of (x, y); invisible -> one learned mask token
    N x [ keypoint <-> keypoint self-attention (structure),
          keypoint -> patch cross-attention (appearance; patches carry their own Fourier position),
          FFN ]
    instance token attends to the keypoints and the pooled embedding -> instance embedding

Invisible keypoints carry no coordinate information at all, so moving one changes nothing, and
keypoints have no index embedding, so permuting them permutes the outputs the same way.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class VisualPromptError(ValueError):
    """A visual prompt that cannot be used; the message says why and how to fix it."""


@dataclass
class VisualPrompt:
    """One annotated example: the support image (H, W, 3 uint8 RGB) and its keypoints.

    keypoints: (K, 3) x, y in support-image pixels and visibility (0 = not labelled / invisible,
    > 0 = visible). box: optional (x0, y0, x1, y1) of the example instance in the support image
    (needed when the support image holds several instances; default: around the visible keypoints).
    """
    image: np.ndarray
    keypoints: np.ndarray
    class_name: str = "object"
    keypoint_names: Optional[Sequence[str]] = None
    skeleton: Sequence[Tuple[int, int]] = field(default_factory=tuple)
    box: Optional[Sequence[float]] = None

    def __post_init__(self):
        self.keypoints = np.asarray(self.keypoints, dtype=np.float32)
        if self.keypoint_names is None:
            self.keypoint_names = tuple(f"keypoint {i + 1}" for i in range(len(self.keypoints)))
        self.keypoint_names = tuple(self.keypoint_names)
        self.skeleton = tuple(tuple(int(v) for v in link) for link in self.skeleton)
        self.validate()

    def digest(self) -> str:
        """Content hash (image pixels, keypoints, names, skeleton, box, class): a cache key."""
        import hashlib
        h = hashlib.sha1()
        h.update(np.ascontiguousarray(self.image).tobytes())
        h.update(str(self.image.shape).encode())
        h.update(np.ascontiguousarray(self.keypoints).tobytes())
        h.update(repr((self.class_name, self.keypoint_names, self.skeleton,
                       None if self.box is None else tuple(map(float, self.box)))).encode())
        return h.hexdigest()

    def validate(self) -> None:
        img, kpts = self.image, self.keypoints
        if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 or img.size == 0:
            raise VisualPromptError("the support image must be a non-empty H x W x 3 array")
        if kpts.ndim != 2 or kpts.shape[1] != 3 or len(kpts) == 0:
            raise VisualPromptError(f"keypoints must be a K x 3 array of x, y, visibility; got shape {kpts.shape}")
        if not np.isfinite(kpts).all():
            raise VisualPromptError("keypoints contain NaN or Inf")
        visible = kpts[:, 2] > 0
        if not visible.any():
            raise VisualPromptError("no visible keypoint: mark at least one keypoint with visibility > 0")
        h, w = img.shape[:2]
        xy = kpts[visible, :2]
        outside = np.flatnonzero(visible)[(xy[:, 0] < 0) | (xy[:, 1] < 0) | (xy[:, 0] > w) | (xy[:, 1] > h)]
        if len(outside):
            raise VisualPromptError(f"keypoints {outside.tolist()} lie outside the {w}x{h} support image")
        if len(self.keypoint_names) != len(kpts):
            raise VisualPromptError(f"{len(self.keypoint_names)} keypoint names for {len(kpts)} keypoints")
        for a, b in self.skeleton:
            if not (0 <= a < len(kpts) and 0 <= b < len(kpts)):
                raise VisualPromptError(f"skeleton link ({a}, {b}) refers to a keypoint that does not exist "
                                        f"(there are {len(kpts)})")
        if self.box is not None:
            x0, y0, x1, y1 = map(float, self.box)
            if not (x1 > x0 and y1 > y0):
                raise VisualPromptError(f"support box {tuple(self.box)} is empty; give x0, y0, x1, y1 with x1 > x0, y1 > y0")


def support_crop(prompt: VisualPrompt, margin: float = 0.25) -> Tuple[float, float, float, float]:
    """The square region encoded: the given box, or the visible keypoints' extent, plus a margin."""
    h, w = prompt.image.shape[:2]
    if prompt.box is not None:
        x0, y0, x1, y1 = map(float, prompt.box)
    else:
        xy = prompt.keypoints[prompt.keypoints[:, 2] > 0, :2]
        x0, y0 = xy.min(0)
        x1, y1 = xy.max(0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    side = max(x1 - x0, y1 - y0, 16.0) * (1 + 2 * margin)
    return cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2


def prepare_support(prompt: VisualPrompt, size: int = 224) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Crop (square, zero-padded outside the image), resize, CLIP-normalise.

    Returns image (3, size, size), keypoints (K, 2) normalised to the crop, visible (K,) bool.
    """
    import cv2
    x0, y0, x1, y1 = support_crop(prompt)
    scale = size / (x1 - x0)
    # affine map support pixels -> crop pixels (pixel centres: +0.5 convention of cv2)
    matrix = np.array([[scale, 0, -x0 * scale], [0, scale, -y0 * scale]], dtype=np.float64)
    crop = cv2.warpAffine(np.ascontiguousarray(prompt.image), matrix, (size, size), flags=cv2.INTER_AREA
                          if scale < 1 else cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    img = torch.from_numpy(crop).float().div(255).permute(2, 0, 1)
    img = (img - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None]
    kpts = torch.from_numpy(prompt.keypoints[:, :2].copy())
    kpts = torch.stack(((kpts[:, 0] - x0) / (x1 - x0), (kpts[:, 1] - y0) / (y1 - y0)), -1).float()
    return img, kpts, torch.from_numpy(prompt.keypoints[:, 2] > 0)


class FourierEmbedding(nn.Module):
    """Random Fourier features of 2-D points (fixed frequencies) followed by a linear layer."""

    def __init__(self, width: int, num_freqs: int = 64, sigma: float = 10.0, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("freqs", torch.randn(2, num_freqs, generator=g) * sigma)
        self.proj = nn.Linear(2 * num_freqs, width)

    def forward(self, xy: torch.Tensor) -> torch.Tensor:
        angles = 2 * math.pi * (xy.to(self.freqs.dtype) @ self.freqs)
        return self.proj(torch.cat((angles.sin(), angles.cos()), -1))


class TinyImageTower(nn.Module):
    """A small ViT (patch embedding + a few transformer layers) for tests and CPU training."""

    def __init__(self, width: int = 64, patch: int = 16, layers: int = 2, heads: int = 4, out_dim: int = 512,
                 image_size: int = 224):
        super().__init__()
        self.image_size = image_size
        self.patch_embed = nn.Conv2d(3, width, kernel_size=patch, stride=patch)
        grid = image_size // patch
        self.pos_embed = nn.Parameter(torch.randn(1, grid * grid, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, out_dim)
        self.token_dim = width

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        tokens = self.patch_embed(images).flatten(2).transpose(1, 2) + self.pos_embed
        tokens = self.norm(self.blocks(tokens))
        return self.head(tokens.mean(1)), tokens


class ClipImageTower(nn.Module):
    """The visual tower of an open_clip model: (pooled 512-d image embedding, patch tokens)."""

    def __init__(self, visual: nn.Module):
        super().__init__()
        self.visual = visual
        self.visual.output_tokens = True
        self.image_size = int(getattr(visual, "image_size", (224, 224))[0])
        self.token_dim = int(visual.transformer.width)

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        pooled, tokens = self.visual(images)
        return pooled, tokens


class KeypointPromptLayer(nn.Module):
    """Pre-norm: keypoint self-attention, keypoint -> patch cross-attention, FFN."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(width), nn.LayerNorm(width), nn.LayerNorm(width)
        self.self_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, kpt: torch.Tensor, patches: torch.Tensor, kpt_padding: Optional[torch.Tensor]) -> torch.Tensor:
        q = self.norm1(kpt)
        kpt = kpt + self.self_attn(q, q, q, key_padding_mask=kpt_padding, need_weights=False)[0]
        q = self.norm2(kpt)
        kpt = kpt + self.cross_attn(q, patches, patches, need_weights=False)[0]
        return kpt + self.ffn(self.norm3(kpt))


class VisualPromptEncoder(nn.Module):
    """Support image + keypoints -> (instance embedding (B, D), keypoint embeddings (B, K, D))."""

    def __init__(self, image_tower: nn.Module, width: int = 256, layers: int = 2, heads: int = 8, out_dim: int = 512):
        super().__init__()
        self.image_tower = image_tower
        self.image_size = image_tower.image_size
        self.patch_proj = nn.Linear(image_tower.token_dim, width)
        self.pooled_proj = nn.Linear(out_dim, width)
        self.position = FourierEmbedding(width)
        self.mask_token = nn.Parameter(torch.zeros(width))
        self.instance_token = nn.Parameter(torch.zeros(width))
        self.layers = nn.ModuleList(KeypointPromptLayer(width, heads) for _ in range(layers))
        self.instance_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm = nn.LayerNorm(width)
        self.instance_out = nn.Linear(width, out_dim)
        self.keypoint_out = nn.Linear(width, out_dim)
        nn.init.normal_(self.mask_token, std=0.02)
        nn.init.normal_(self.instance_token, std=0.02)

    def _patch_positions(self, num_patches: int, device) -> torch.Tensor:
        side = int(round(math.sqrt(num_patches)))
        if side * side != num_patches:  # e.g. a class token in front: no position for it
            return torch.zeros(num_patches, 2, device=device)
        centres = (torch.arange(side, device=device, dtype=torch.float32) + 0.5) / side
        ys, xs = torch.meshgrid(centres, centres, indexing="ij")
        return torch.stack((xs.flatten(), ys.flatten()), -1)

    def forward(self, images: torch.Tensor, keypoints: torch.Tensor, visible: torch.Tensor,
                keypoint_valid: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """images (B,3,S,S) CLIP-normalised crops; keypoints (B,K,2) in [0,1] of the crop;
        visible (B,K) bool; keypoint_valid (B,K) bool for batches padded to a common K."""
        pooled, tokens = self.image_tower(images)
        patches = self.patch_proj(tokens)
        patches = patches + self.position(self._patch_positions(patches.shape[1], patches.device))[None]
        visible = visible.to(torch.bool)
        # Invisible keypoints: the mask token only, never their (meaningless) coordinates.
        coords = torch.where(visible[..., None], keypoints, torch.zeros_like(keypoints))
        kpt = torch.where(visible[..., None], self.position(coords), self.mask_token.expand_as(patches[:, :1]))
        padding = None if keypoint_valid is None else ~keypoint_valid.to(torch.bool)
        for layer in self.layers:
            kpt = layer(kpt, patches, padding)
        kpt = self.norm(kpt)
        # The instance embedding summarises the visible keypoints and the whole support crop.
        context = torch.cat((kpt, self.pooled_proj(pooled)[:, None]), 1)
        ignore = ~visible if padding is None else (~visible | padding)
        ignore = torch.cat((ignore, ignore.new_zeros(ignore.shape[0], 1)), 1)
        query = self.instance_token.expand(kpt.shape[0], 1, -1)
        inst = self.instance_attn(query, context, context, key_padding_mask=ignore, need_weights=False)[0][:, 0]
        return self.instance_out(inst), self.keypoint_out(kpt)


def build_visual_prompt_encoder(kind: str = "tiny", clip_visual: Optional[nn.Module] = None,
                                tower: Optional[dict] = None, **kwargs) -> VisualPromptEncoder:
    """kind "tiny": a small ViT trained with the detector (`tower` = its TinyImageTower arguments);
    "clip": the OpenAI CLIP ViT-B/32 visual tower of an open_clip model."""
    if kind == "tiny":
        return VisualPromptEncoder(TinyImageTower(**(tower or {})), **kwargs)
    if kind == "clip":
        if clip_visual is None:
            raise ValueError("the 'clip' visual prompt encoder needs the open_clip visual tower (clip_visual=...)")
        return VisualPromptEncoder(ClipImageTower(clip_visual), **kwargs)
    raise ValueError(f"unknown visual prompt encoder {kind!r}; use 'tiny' or 'clip'")


@torch.no_grad()
def detect_with_visual_prompt(model, image_rgb: np.ndarray, prompt: VisualPrompt, *, short_side: int = 800,
                              max_size: int = 1333, box_threshold: float = 0.1, iou_threshold: float = 0.9,
                              text_features: Optional[Tuple[torch.Tensor, torch.Tensor]] = None):
    """Find the support's kind of object and its keypoints in `image_rgb` (original-image pixels).

    text_features: optional (instance (1, 512), keypoints (K, 512)) text features of the same
    prompt, averaged with the visual ones (text and visual prompts together).
    Returns unipose_model.postprocess.Detections (labels are all 0, the support's class).
    """
    from .postprocess import select_queries, to_pixels
    from .preprocess import preprocess_image
    device = next(model.parameters()).device
    support, kpts, visible = prepare_support(prompt, size=model.visual_prompt_encoder.image_size
                                             if model.visual_prompt_encoder is not None else 224)
    inst, kpt_feats = model.encode_visual_prompt(support[None].to(device), kpts[None].to(device),
                                                 visible[None].to(device))
    if text_features is not None:
        inst = (inst + text_features[0].to(inst)) / 2
        kpt_feats = (kpt_feats + text_features[1].to(kpt_feats)[None]) / 2
    image = preprocess_image(image_rgb, short_side=short_side, max_size=max_size)[None].to(device)
    out = model(image, None, inst, kpt_feats)
    sel = select_queries(out["pred_logits"][0], out["pred_boxes"][0], out["pred_keypoints"][0],
                         box_threshold=box_threshold, iou_threshold=iou_threshold)
    return to_pixels(sel, *image_rgb.shape[:2])


# ------------------------------------------------------------------------- support files
def read_support_keypoints(path, *, instance: int = 0, image_name: Optional[str] = None):
    """Keypoints of a support image from a file: (keypoints (K,3), names, skeleton, box, class).

    Two formats:
      * COCO keypoints json (an export of any labelling tool): the annotation `instance` of the
        image whose file_name matches `image_name` (else of the first image); names and the
        skeleton (1-based in COCO) come from its category, the box from its bbox;
      * a plain text list, one keypoint per line, ``name: x y`` (visible) or ``name: x y 0`` /
        ``name: -`` (not visible); blank lines and ``#`` comments are ignored.
    Problems raise VisualPromptError naming the file and the line or annotation.
    """
    import json
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise VisualPromptError(f"support keypoints file {path} does not exist")
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise VisualPromptError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
        return _support_from_coco(doc, path, instance, image_name)
    names, rows = [], []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, value = line.rpartition(":")
        name, value = name.strip(), value.strip()
        if not sep or not name:
            raise VisualPromptError(f"{path}, line {number}: expected 'name: x y' (or 'name: -'), got {line!r}")
        if value in ("-", "?", ""):
            rows.append((0.0, 0.0, 0.0))
        else:
            try:
                nums = [float(v) for v in value.replace(",", " ").split()]
            except ValueError:
                nums = []
            if len(nums) not in (2, 3):
                raise VisualPromptError(f"{path}, line {number}: expected 'name: x y' with two numbers, "
                                        f"got {line!r}")
            rows.append((nums[0], nums[1], 2.0 if len(nums) == 2 else nums[2]))
        names.append(name)
    if not rows:
        raise VisualPromptError(f"{path}: no keypoints (expected lines like 'head: 120 85')")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise VisualPromptError(f"{path}: keypoint names repeat: {', '.join(dup)}")
    return np.asarray(rows, dtype=np.float32), names, (), None, None


def _support_from_coco(doc, path, instance: int, image_name: Optional[str]):
    from pathlib import Path

    if not isinstance(doc, dict) or not isinstance(doc.get("annotations"), list):
        raise VisualPromptError(f"{path}: a COCO keypoints file needs an 'annotations' list")
    anns = [a for a in doc["annotations"] if isinstance(a, dict) and a.get("keypoints")]
    images = doc.get("images") or []
    if image_name and images:
        wanted = [im.get("id") for im in images if Path(str(im.get("file_name", ""))).name == Path(image_name).name]
        if not wanted and len(images) > 1:
            # several images and none is the support: any choice would take another image's keypoints
            names = ", ".join(str(im.get("file_name")) for im in images[:5]) + (", ..." if len(images) > 5 else "")
            raise VisualPromptError(f"{path}: no image named {Path(image_name).name!r} among its {len(images)} images "
                                    f"({names}); give the support image under the name the file uses, or a keypoints "
                                    "file with that image only")
        anns = [a for a in anns if a.get("image_id") in (wanted or [images[0].get("id")])]
    elif images:
        anns = [a for a in anns if a.get("image_id") == images[0].get("id")]
    if not anns:
        raise VisualPromptError(f"{path}: no annotation with keypoints"
                                + (f" for image {image_name}" if image_name else ""))
    if not 0 <= instance < len(anns):
        raise VisualPromptError(f"{path}: instance {instance} requested, the image has {len(anns)} annotated")
    ann = anns[instance]
    try:
        kpts = np.asarray(ann["keypoints"], dtype=np.float32).reshape(-1, 3)
    except (TypeError, ValueError):
        raise VisualPromptError(f"{path}: annotation {ann.get('id')}: keypoints must be a flat list "
                                f"x1, y1, v1, x2, ...") from None
    cat = next((c for c in doc.get("categories") or [] if c.get("id") == ann.get("category_id")), {})
    names = list(cat.get("keypoints") or [f"keypoint {i + 1}" for i in range(len(kpts))])
    if len(names) != len(kpts):
        raise VisualPromptError(f"{path}: annotation {ann.get('id')} has {len(kpts)} keypoints, its category "
                                f"'{cat.get('name')}' names {len(names)}")
    links = [(int(a), int(b)) for a, b in cat.get("skeleton") or []]
    base = 0 if any(0 in link for link in links) else 1  # COCO is 1-based; some exports are not
    skeleton = tuple((a - base, b - base) for a, b in links)
    box = None
    if ann.get("bbox") and len(ann["bbox"]) == 4:
        x, y, w, h = map(float, ann["bbox"])
        box = (x, y, x + w, y + h) if w > 0 and h > 0 else None
    return kpts, names, skeleton, box, cat.get("name")


def load_visual_prompt(image_path, keypoints_path, *, class_name: Optional[str] = None, instance: int = 0,
                       box: Optional[Sequence[float]] = None) -> VisualPrompt:
    """A VisualPrompt from a support image file and its keypoints file (see read_support_keypoints).
    The image may be a frame of a video, written 'video.mp4#frame=N'."""
    import cv2
    from pathlib import Path

    from .media import MediaError, read_video_frame, split_frame_reference

    try:  # a labelled frame of a video: 'clip.mp4#frame=1000'
        frame_ref = split_frame_reference(image_path)
        image = None if frame_ref is None else read_video_frame(*frame_ref, color="rgb")
    except MediaError as e:
        raise VisualPromptError(f"cannot read the support image: {e}") from None
    if image is None:
        bgr = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise VisualPromptError(f"cannot read the support image {image_path}")
        image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    kpts, names, skeleton, file_box, file_class = read_support_keypoints(
        keypoints_path, instance=instance, image_name=Path(str(image_path)).name)
    return VisualPrompt(image, kpts, class_name or file_class or "object",
                        names, skeleton, box if box is not None else file_box)
