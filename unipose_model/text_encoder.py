"""Text prompts -> 512-d features for the UniPose instance and keypoint inputs.

Three encoders share one base class with a per-prompt LRU cache (keyed by the full templated
text), so a prompt that does not change between frames is encoded once:

* :class:`ClipTextEncoder`: OpenAI CLIP ViT-B/32 (QuickGELU) text tower through open_clip, the
  encoder the official model was trained with.  Raw ``encode_text`` output, returned as float32.
* :class:`HashTextEncoder`: the seeded stand-in of the parity fixtures.  Its features carry no
  meaning; use it for tests and for trying the pipeline without CLIP weights.
* :class:`PrecomputedTextEncoder`: a fixed table of features (e.g. shipped with a checkpoint).
"""
from __future__ import annotations

import json
import logging
import os
import threading
import zipfile
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import torch

TEXT_DIM = 512
PROMPT_PREFIX = "a photo of "
CLIP_MODEL_NAME = "ViT-B-32-quickgelu"
CLIP_PRETRAINED_TAG = "openai"
# Where the official code's `clip.load("ViT-B/32")` caches the OpenAI file; reused if present.
OPENAI_CLIP_CACHE_FILE = Path("~/.cache/clip/ViT-B-32.pt")
FETCH_HINT = (
    "fetch it once on a connected machine with\n"
    f"  python -c \"import open_clip; open_clip.create_model('{CLIP_MODEL_NAME}', "
    f"pretrained='{CLIP_PRETRAINED_TAG}')\"\n"
    "(it lands in the Hugging Face cache, ~/.cache/huggingface), or download OpenAI's ViT-B-32.pt "
    "(https://openaipublic.azureedge.net/clip/models/40d365715913c9da98579312b702a82c18be219cc2a73407"
    "c4526f58eba950af/ViT-B-32.pt) and pass --clip-weights PATH (Python: ClipTextEncoder(weights=PATH))"
)


class TextEncoderError(RuntimeError):
    """A text encoder cannot produce features (missing weights, unknown prompt, ...)."""


class ClipWeightsMissingError(TextEncoderError):
    """The CLIP weights are not available locally and cannot be downloaded."""


def instance_prompt(name: str) -> str:
    """The official template for an instance (class) name."""
    return PROMPT_PREFIX + name.lower().replace("_", " ").replace("-", " ")


def keypoint_prompt(name: str) -> str:
    """The official template for a keypoint name (note: '-' is kept, unlike instances)."""
    return PROMPT_PREFIX + name.lower().replace("_", " ")


class TextEncoder:
    """Base class: templating, caching and stacking; subclasses implement :meth:`_encode`."""

    #: False for encoders whose features mean nothing (the detections will be meaningless too)
    meaningful = True
    name = "text encoder"

    def __init__(self, cache_size: int = 4096):
        self.cache_size = cache_size
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.RLock()  # the cache may be shared by several callers / threads

    def encode_instances(self, names: Iterable[str]) -> torch.Tensor:
        """(N, 512) float32 CPU features of instance names, in order."""
        return self.encode_texts([instance_prompt(n) for n in names])

    def encode_keypoints(self, names: Iterable[str]) -> torch.Tensor:
        """(K, 512) float32 CPU features of keypoint names, in order."""
        return self.encode_texts([keypoint_prompt(n) for n in names])

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """(n, 512) float32 CPU features of already templated prompt texts (cached)."""
        if not texts:
            return torch.zeros((0, TEXT_DIM), dtype=torch.float32)
        with self._lock:
            found = {t: self._cache[t] for t in texts if t in self._cache}
            for t in found:
                self._cache.move_to_end(t)
            missing = [t for t in dict.fromkeys(texts) if t not in found]
            if missing:
                for text, feat in zip(missing, self._encode(missing)):
                    found[text] = feat.detach().to("cpu", torch.float32).clone()
                    self._remember(text, found[text])
        return torch.stack([found[t] for t in texts])

    def _remember(self, text: str, feat: torch.Tensor) -> None:
        self._cache[text] = feat
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def _encode(self, texts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    def clear_cache(self) -> None:
        self._cache.clear()


class HashTextEncoder(TextEncoder):
    """Deterministic pseudo-features from the prompt text (the parity fixtures' rule).

    seed = crc32(text, salt); feature = float32(float64(randn(512, seeded)) * scale).
    MEANINGLESS: no relation to the text's meaning; for tests and pipeline trials only.
    """

    meaningful = False
    name = "hash (meaningless stand-in)"

    def __init__(self, salt: int = 0, scale: float = 0.4, cache_size: int = 4096):
        super().__init__(cache_size)
        self.salt = int(salt)
        self.scale = float(scale)

    def _encode(self, texts: list[str]) -> torch.Tensor:
        rows = []
        for text in texts:
            g = torch.Generator(device="cpu")
            g.manual_seed(zlib.crc32(text.encode("utf-8"), self.salt))
            z = torch.randn(TEXT_DIM, generator=g, dtype=torch.float32)
            rows.append((z.to(torch.float64) * self.scale).to(torch.float32))
        return torch.stack(rows)


class PrecomputedTextEncoder(TextEncoder):
    """Features looked up in a table.

    Keys may be full prompt texts ("a photo of left eye") or bare names ("left eye"); a prompt
    is looked up first as is, then by its name (the text after "a photo of ").
    """

    name = "precomputed"

    def __init__(self, table: Mapping[str, object], cache_size: int = 4096, known: str | None = None,
                 name: str | None = None):
        super().__init__(cache_size)
        self.known = known  # what to list when a prompt is missing (default: the table's keys)
        if name:
            self.name = name
        self.table: dict[str, torch.Tensor] = {}
        for key, value in table.items():
            vec = torch.as_tensor(np.asarray(value, dtype=np.float32)).flatten()
            if vec.numel() != TEXT_DIM:
                raise TextEncoderError(f"feature for {key!r} has {vec.numel()} values, expected {TEXT_DIM}")
            self.table[str(key)] = vec

    @classmethod
    def from_checkpoint(cls, path) -> "PrecomputedTextEncoder | None":
        """The prompt features stored in a checkpoint (unipose_model.model_file), or None."""
        from .model_file import read_model_file_info

        info = read_model_file_info(path)
        if not info.text_table:
            return None
        return cls(info.text_table, known=info.known_prompts() or None,
                   name=f"precomputed in {Path(path).name} ({info.text_encoder or 'unknown encoder'})")

    @classmethod
    def from_file(cls, path) -> "PrecomputedTextEncoder":
        """Load a table from .npz (one array per key), .json ({key: [512 floats]}) or .pt/.pth
        (a {key: feature} mapping, a training feature cache {"texts", "features"}, or a
        checkpoint that carries "text_features")."""
        path = Path(path)
        if not path.is_file():
            raise TextEncoderError(f"text feature file not found: {path}")
        suffix = path.suffix.lower()
        if suffix == ".npz":
            with np.load(path) as z:
                table = {k: z[k] for k in z.files}
        elif suffix == ".json":
            table = json.loads(path.read_text())
        elif suffix in (".pt", ".pth"):
            table = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(table, Mapping) and "text_features" in table:
                found = cls.from_checkpoint(path)
                if found is not None:
                    return found
            if isinstance(table, Mapping) and "texts" in table and "features" in table:
                table = dict(zip(table["texts"], table["features"].float()))
        else:
            raise TextEncoderError(f"unsupported text feature file {path} (use .npz, .json or .pt)")
        if not isinstance(table, Mapping):
            raise TextEncoderError(f"{path} does not hold a name -> feature mapping")
        return cls(table)

    def _encode(self, texts: list[str]) -> torch.Tensor:
        rows = []
        for text in texts:
            bare = text[len(PROMPT_PREFIX):] if text.startswith(PROMPT_PREFIX) else text
            if text in self.table:
                rows.append(self.table[text])
            elif bare in self.table:
                rows.append(self.table[bare])
            elif self.known:
                raise TextEncoderError(f"no precomputed text feature for {bare!r} (prompt {text!r}): "
                                       f"this model knows only: {self.known}")
            else:
                known = ", ".join(sorted(self.table)[:50])
                more = "" if len(self.table) <= 50 else f" ... ({len(self.table)} in all)"
                raise TextEncoderError(f"no precomputed text feature for {bare!r} (prompt {text!r}); "
                                       f"known: {known}{more}")
        return torch.stack(rows)


class ClipTextEncoder(TextEncoder):
    """OpenAI CLIP ViT-B/32 text tower (open_clip, QuickGELU), loaded on first use.

    Args:
        weights: "openai" (default: the Hugging Face cache, downloading unless offline, or the
            official code's ``~/.cache/clip/ViT-B-32.pt``), a weights file (OpenAI TorchScript
            ``.pt``, a state-dict ``.pt/.pth/.bin`` or ``.safetensors``) or a directory holding one.
        device: "auto" (CUDA if available), "cpu", "cuda", ...
        dtype: "auto" = float16 on CUDA (as the official pipeline ran it) and float32 on CPU;
            features are always returned as float32.
        model_name: the open_clip architecture (only change it for tests with tiny models).
    """

    name = "CLIP ViT-B/32 (OpenAI)"

    def __init__(self, weights: str | os.PathLike | None = CLIP_PRETRAINED_TAG, device="auto",
                 dtype: str | torch.dtype = "auto", model_name: str = CLIP_MODEL_NAME,
                 cache_dir: str | None = None, cache_size: int = 4096):
        super().__init__(cache_size)
        self.weights = CLIP_PRETRAINED_TAG if weights is None else weights
        self.device = torch.device(_resolve_device(device))
        self.dtype = _resolve_clip_dtype(dtype, self.device)
        self.model_name = model_name
        self.cache_dir = cache_dir
        self._model = None
        self._tokenizer = None

    def load(self) -> "ClipTextEncoder":
        """Load weights now (otherwise done on the first encode)."""
        if self._model is None:
            import open_clip  # imported lazily: it pulls in timm and friends

            path = resolve_clip_weights(self.weights, self.model_name, self.cache_dir)
            state = _read_state_dict(path)
            self._model = _build_text_model(open_clip, self.model_name, state, path,
                                            self.device, self.dtype)
            self._tokenizer = open_clip.get_tokenizer(self.model_name)
        return self

    @torch.inference_mode()
    def _encode(self, texts: list[str]) -> torch.Tensor:
        self.load()
        tokens = self._tokenizer(texts).to(self.device)
        return self._model.encode_text(tokens).float().cpu()


# ---------------------------------------------------------------------------------------------
# CLIP weight resolution and loading


def resolve_clip_weights(weights, model_name: str = CLIP_MODEL_NAME, cache_dir=None) -> Path:
    """Turn ``weights`` ("openai", a file or a directory) into a local file, or raise a clear error."""
    if str(weights) != CLIP_PRETRAINED_TAG:
        path = Path(weights).expanduser()
        if path.is_dir():
            found = _find_weights_in_dir(path)
            if found is None:
                raise ClipWeightsMissingError(
                    f"no CLIP weights file (*.safetensors, *.bin, *.pt, *.pth) in directory {path}; "
                    + FETCH_HINT)
            return found
        if path.is_file():
            return path
        raise ClipWeightsMissingError(f"CLIP weights file not found: {path}; " + FETCH_HINT)

    legacy = OPENAI_CLIP_CACHE_FILE.expanduser()
    if legacy.is_file():
        return legacy
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model_name, CLIP_PRETRAINED_TAG)
    hub = cfg.get("hf_hub", "")
    if not hub:
        raise ClipWeightsMissingError(f"open_clip knows no '{CLIP_PRETRAINED_TAG}' weights for "
                                      f"{model_name}; pass a weights file")
    repo_id, filename = hub.rstrip("/"), None
    offline = _hf_offline()
    try:
        from huggingface_hub import hf_hub_download

        for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            try:  # cache first, never touching the network
                return Path(hf_hub_download(repo_id, name, cache_dir=cache_dir, local_files_only=True))
            except Exception:  # noqa: BLE001 - any miss means "not cached"
                pass
        if offline:
            raise ClipWeightsMissingError(
                f"CLIP ViT-B/32 (OpenAI) weights are not in the local cache ({repo_id} in the "
                f"Hugging Face cache, or {legacy}) and HF_HUB_OFFLINE is set; " + FETCH_HINT)
        filename = open_clip.download_pretrained(cfg, cache_dir=cache_dir)
    except ClipWeightsMissingError:
        raise
    except Exception as e:  # noqa: BLE001 - network errors come in many types
        raise ClipWeightsMissingError(
            f"could not download the CLIP ViT-B/32 (OpenAI) weights ({type(e).__name__}: {e}); "
            + FETCH_HINT) from None
    if not filename:
        raise ClipWeightsMissingError("open_clip returned no CLIP weights file; " + FETCH_HINT)
    return Path(filename)


def _hf_offline() -> bool:
    flag = os.environ.get("HF_HUB_OFFLINE", "")
    if flag.strip().lower() in ("1", "true", "yes", "on"):
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except Exception:  # noqa: BLE001
        return False


def _find_weights_in_dir(folder: Path) -> Path | None:
    preferred = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin", "ViT-B-32.pt"]
    for name in preferred:
        if (folder / name).is_file():
            return folder / name
    for pattern in ("*.safetensors", "*.bin", "*.pt", "*.pth"):
        found = sorted(folder.glob(pattern))
        if found:
            return found[0]
    return None


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read CLIP weights: safetensors, OpenAI's TorchScript archive, or a (wrapped) state dict."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        elif _is_torchscript(path):
            state = torch.jit.load(str(path), map_location="cpu").state_dict()
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise TextEncoderError(f"cannot read CLIP weights {path}: {type(e).__name__}: {e}") from None
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise TextEncoderError(f"{path} does not contain a CLIP state dict")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())


def _build_text_model(open_clip, model_name, state, path, device, dtype):
    """Build the CLIP model with a minimal image tower (never used), load only text weights."""
    precision = {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, "fp32")
    tiny_vision = {"image_size": 32, "patch_size": 32, "width": 64, "layers": 1, "head_width": 64}
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # silence open_clip's "initialized randomly": we load next
    try:
        model = open_clip.create_model(model_name, pretrained=None, precision=precision,
                                       device=device, vision_cfg=tiny_vision)
    finally:
        logging.disable(previous)
    model.visual = None  # drop it: encode_text never touches the image tower
    text_keys = [k for k in model.state_dict() if not k.startswith("visual.")]
    text_state = {k: v for k, v in state.items() if k in text_keys}
    missing = [k for k in text_keys if k not in text_state and k != "logit_bias"]
    if missing:
        raise TextEncoderError(
            f"{path} is not a CLIP {model_name} checkpoint: {len(missing)} text-tower weights "
            f"missing (e.g. {', '.join(missing[:3])})")
    try:
        model.load_state_dict(text_state, strict=False)
    except RuntimeError as e:
        raise TextEncoderError(f"{path} does not fit CLIP {model_name}: {e}") from None
    return model.eval()


def _resolve_device(device) -> str:
    if device is None or str(device) == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise TextEncoderError(f"device {device!r} requested but CUDA is not available; use 'cpu' or 'auto'")
    return str(device)


def _resolve_clip_dtype(dtype, device: torch.device) -> torch.dtype:
    if dtype in (None, "auto"):
        return torch.float16 if device.type == "cuda" else torch.float32
    resolved = parse_dtype(dtype)
    if resolved != torch.float32 and device.type != "cuda":
        raise TextEncoderError(f"CLIP dtype {dtype} needs CUDA; use float32 on {device}")
    return resolved


def parse_dtype(dtype) -> torch.dtype:
    """"float32" / "fp16" / torch.float16 ... -> torch.dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
             "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
             "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    try:
        return names[str(dtype).lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16") from None


def build_text_encoder(kind: str = "clip", *, clip_weights=None, device="auto",
                       salt: int = 0, checkpoint=None) -> TextEncoder:
    """CLI helper: "clip", "hash", a path to a precomputed feature file, or "auto": the prompt
    features stored in `checkpoint` when it carries them (no CLIP needed), else CLIP."""
    if kind == "auto":
        if checkpoint is not None and Path(str(checkpoint)).is_file():
            found = PrecomputedTextEncoder.from_checkpoint(checkpoint)
            if found is not None:
                return found
        kind = "clip"
    if kind == "clip":
        return ClipTextEncoder(weights=clip_weights or CLIP_PRETRAINED_TAG, device=device)
    if kind == "hash":
        return HashTextEncoder(salt=salt)
    if Path(kind).suffix.lower() in (".npz", ".json", ".pt", ".pth"):
        return PrecomputedTextEncoder.from_file(kind)
    raise ValueError(f"unknown text encoder {kind!r}: use 'auto', 'clip', 'hash' or a feature file "
                     "(.npz/.json/.pt)")
