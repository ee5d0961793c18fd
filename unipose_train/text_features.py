"""Text features for training: encode every prompt string once per run, then look rows up.

CLIP is frozen in UniPose, so a prompt's feature never changes: the trainer enumerates all the
strings the prompt builder can produce, encodes them once (optionally cached on disk) and keeps
them in one (M, 512) tensor on the training device. A batch then costs an index lookup instead of
a CLIP forward pass. Strings that were not enumerated are encoded on first use and appended.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence, Tuple

import torch

from unipose_model.text_encoder import TEXT_DIM, TextEncoder, build_text_encoder


class TextFeatureTable:
    def __init__(self, encoder: TextEncoder, device: torch.device | str = "cpu", chunk: int = 256):
        self.encoder = encoder
        self.device = torch.device(device)
        self.chunk = chunk
        self.index: Dict[str, int] = {}
        self.table = torch.zeros(0, TEXT_DIM, device=self.device)
        self.late_additions = 0   # strings encoded during training (not precomputed): should stay 0

    def __len__(self) -> int:
        return len(self.index)

    def add(self, texts: Iterable[str]) -> None:
        """Encode the strings not yet in the table (in chunks; the encoder's cache is bypassed)."""
        new = [t for t in dict.fromkeys(texts) if t not in self.index]
        rows = []
        for i in range(0, len(new), self.chunk):
            part = new[i:i + self.chunk]
            rows.append(self.encoder.encode_texts(part))
            self.encoder.clear_cache()  # the table is the cache; do not keep a second copy
        if rows:
            start = len(self.index)
            self.index.update({t: start + i for i, t in enumerate(new)})
            self.table = torch.cat((self.table, torch.cat(rows).to(self.device)), 0)

    def lookup(self, texts: Sequence[str]) -> torch.Tensor:
        missing = [t for t in texts if t not in self.index]
        if missing:
            self.late_additions += len(set(missing))
            self.add(missing)
        idx = torch.tensor([self.index[t] for t in texts], dtype=torch.long, device=self.device)
        return self.table[idx]

    def batch(self, rows: Sequence[Sequence[str]]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Lists of strings per image -> (B, L, 512) features (zero padded) and (B, L) valid mask."""
        B = len(rows)
        L = max(1, max((len(r) for r in rows), default=1))
        feats = torch.zeros(B, L, TEXT_DIM, device=self.device)
        valid = torch.zeros(B, L, dtype=torch.bool, device=self.device)
        for b, r in enumerate(rows):
            if r:
                feats[b, :len(r)] = self.lookup(list(r))
                valid[b, :len(r)] = True
        return feats, valid

    # ------------------------------------------------------------------ disk cache
    def save(self, path: str | os.PathLike) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save({"encoder": self.encoder.name, "texts": list(self.index), "features": self.table.cpu()}, tmp)
        os.replace(tmp, path)

    def load(self, path: str | os.PathLike) -> bool:
        """Merge a cache written by save() for the same encoder; False if absent or for another encoder."""
        path = Path(path)
        if not path.is_file():
            return False
        data = torch.load(path, map_location="cpu", weights_only=True)
        if data.get("encoder") != self.encoder.name:
            return False
        texts = [t for t in data["texts"] if t not in self.index]
        keep = [i for i, t in enumerate(data["texts"]) if t not in self.index]
        start = len(self.index)
        self.index.update({t: start + i for i, t in enumerate(texts)})
        self.table = torch.cat((self.table, data["features"][keep].to(self.device)), 0)
        return True


def build_table(kind: str = "hash", texts: Iterable[str] = (), device="cpu",
                cache: Optional[str] = None, clip_weights: Optional[str] = None,
                write_cache: bool = True) -> TextFeatureTable:
    """A table over `texts` with the encoder `kind` ("clip", "hash" or a precomputed feature file)."""
    encoder = build_text_encoder(kind, clip_weights=clip_weights, device="cpu" if str(device) == "cpu" else "auto")
    table = TextFeatureTable(encoder, device)
    if cache:
        table.load(cache)
    texts = list(texts)
    before = len(table)
    table.add(texts)
    if cache and write_cache and len(table) > before:
        table.save(cache)
    return table
