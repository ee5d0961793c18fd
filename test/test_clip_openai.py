"""CLIP text features equal OpenAI's own `clip` package's `encode_text`, for the official text.

The official code encodes prompts with OpenAI's `clip` package (`clip.load("ViT-B/32")`); this
project uses open_clip. Both read the same weights file, so the same random full-size ViT-B/32
weights are saved in both formats the real ViT-B-32.pt comes in (OpenAI's TorchScript archive,
and a plain state dict, float16 as released), loaded through `--clip-weights` (the CLI's and the
Predictor's path) and compared with `clip.load(path).encode_text`. `openai-clip` is a test
dependency (requirements.txt), not needed at run time.
"""
import json

import numpy as np
import pytest
import torch

from unipose_model.prompt import parse_prompt
from unipose_model.text_encoder import ClipTextEncoder, build_text_encoder

from shared_paths import REFERENCE

clip = pytest.importorskip("clip", reason="openai-clip (requirements.txt) is not installed")

# Same weights, different kernels (fused attention in open_clip): float32 rounding only.
FEATURE_LIMIT = 1e-4


def vit_b32(seed=0):
    """OpenAI's CLIP ViT-B/32 architecture with random weights (the package's own init)."""
    torch.manual_seed(seed)
    model = clip.model.CLIP(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768,
                            vision_patch_size=32, context_length=77, vocab_size=49408,
                            transformer_width=512, transformer_heads=8, transformer_layers=12)
    clip.model.convert_weights(model)  # float16, as OpenAI released the weights
    return model.eval()


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vitb32")
    model = vit_b32()
    state = folder / "ViT-B-32-state-dict.pt"
    torch.save(model.state_dict(), state)
    # OpenAI's ViT-B-32.pt is a traced TorchScript archive holding the whole model's weights
    # (tracing encode_text is enough for that, and much cheaper than the image tower)
    with torch.no_grad():
        traced = torch.jit.trace_module(model.float(), {"encode_text": clip.tokenize(["a photo of person"])},
                                        check_trace=False)
    archive = folder / "ViT-B-32.pt"
    torch.jit.save(traced.half(), str(archive))
    return {"state dict": state, "torchscript": archive}


def official_prompts():
    path = REFERENCE / "official_keypoint_text.json"
    if not path.exists():
        pytest.skip(f"{path} not available")
    sets = json.loads(path.read_text())["sets"]
    return sets["hand"]["prompts"], sets["animal_in_AnimalKindom"]["prompts"]


def openai_model(path, kind):
    if kind == "torchscript":
        return clip.load(str(path), device="cpu", jit=False)[0]
    # clip.load's state-dict branch re-reads the file handle its torch.jit.load attempt has
    # consumed (EOFError with torch 2.14); these are the steps it takes after that read
    return clip.model.build_model(torch.load(str(path), map_location="cpu")).float().eval()


def openai_features(model, texts):
    with torch.no_grad():
        return model.encode_text(clip.tokenize(texts)).float()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["torchscript", "state dict"])
def test_clip_features_equal_openai_clip_encode_text(weight_files, kind):
    path = weight_files[kind]
    hand, animal = official_prompts()
    texts = ["a photo of person", "a photo of animal in ap10k"] + hand + animal
    reference = openai_model(path, kind)
    expected = openai_features(reference, texts)
    assert expected.shape == (len(texts), 512) and expected.std() > 0.05  # not a degenerate model

    # what --clip-weights PATH (CLI) and Predictor(clip_weights=PATH) call
    encoder = build_text_encoder("clip", clip_weights=str(path), device="cpu")
    assert isinstance(encoder, ClipTextEncoder)
    ours = encoder.encode_texts(texts)
    assert ours.dtype == torch.float32
    assert (ours - expected).abs().max() <= FEATURE_LIMIT

    # a prompt as users type it: the predefined set's official text reaches CLIP (the Predictor
    # encodes group.model_texts with this same encoder, built by this same call)
    group = parse_prompt("hand").groups[0]
    assert np.abs(encoder.encode_keypoints(group.model_texts).numpy()
                  - expected[2:2 + len(hand)].numpy()).max() <= FEATURE_LIMIT
