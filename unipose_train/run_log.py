"""A run's log: one JSON record per line in <out_dir>/log.jsonl, and TensorBoard scalars where
tensorboard is installed. Only the main process writes."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Dict, List

log = logging.getLogger("unipose.train")


class RunLog:
    def __init__(self, out_dir: Path, enabled: bool = True):
        self.out_dir, self.enabled = Path(out_dir), enabled
        self.history: List[Dict] = []
        self._file = None
        self._writer = None

    def write(self, record: Dict) -> None:
        if not self.enabled:
            return
        self.history.append(record)
        if self._file is None:
            self._file = open(self.out_dir / "log.jsonl", "a", encoding="utf-8")
            try:
                from torch.utils.tensorboard import SummaryWriter
                self._writer = SummaryWriter(str(self.out_dir / "tensorboard"))
            except ImportError:
                log.warning("tensorboard is not installed: logging to log.jsonl only")
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._writer is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    self._writer.add_scalar(k, v, record["step"])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def trim_log(path: Path, step: int) -> None:
    """Keep the log records up to `step` (those after it will be logged again by the resumed
    run) and drop a line cut short by a kill."""
    if not path.is_file():
        return
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
            keep = isinstance(record, dict) and int(record.get("step", 0)) <= step
        except (ValueError, TypeError):
            keep = False
        if keep:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        os.replace(tmp, path)
        log.info("log.jsonl: %d record(s) after step %d removed (the resumed run logs those steps again)", dropped, step)
