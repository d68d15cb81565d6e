"""Metric logging behind one small protocol (`log_dict` / `close`): RUN/metrics.jsonl, TensorBoard.

The training loop accumulates its numbers in a `StepMeter` (on the device, no host sync per step) and hands
a plain dict to the loggers at each logging step.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Protocol

from spanbert_cli.artifacts import atomic_file
from spanbert_cli.errors import RESUME_FIX, naming_io_errors

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


class MetricLogger(Protocol):
    def log_dict(self, metrics: dict[str, Any], step: int) -> None: ...

    def close(self) -> None: ...


def _json_number(v: Any) -> Any:
    # JSON has no NaN or infinity; a diverged value is written as null rather than breaking the file.
    return None if isinstance(v, float) and not math.isfinite(v) else v


class JsonlLogger:
    """One JSON object per line, flushed at once (a killed run keeps every line it logged)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (lives as long as the logger)

    def log_dict(self, metrics: dict[str, Any], step: int) -> None:
        line = {"step": step, **{k: _json_number(v) for k, v in metrics.items() if k != "step"}}
        with naming_io_errors(self.path, space_fix=RESUME_FIX):
            self._f.write(json.dumps(line) + "\n")
            self._f.flush()

    def close(self) -> None:
        with naming_io_errors(self.path, space_fix=RESUME_FIX):  # flushes what a failed write left
            self._f.close()


def truncate_metrics(path: str | os.PathLike, last_step: int) -> int:
    """Drop the lines logged after `last_step` (a resumed run logs those steps again); return lines kept."""
    p = Path(path)
    if not p.is_file():
        return 0
    kept = []
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut short by the kill
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= last_step:
            kept.append(line)
    with atomic_file(p) as f:
        f.write("".join(x + "\n" for x in kept))
    return len(kept)


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl (none when there is no file). A line that is not a JSON object is
    skipped: a process killed while appending leaves a partial last line."""
    p = Path(path)
    if not p.is_file():
        return []
    records = []
    for line in p.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


class TensorBoardLogger:
    """Scalars under `train/…` and `valid/…`; needs the tensorboard package."""

    def __init__(self, log_dir: str | os.PathLike):
        from torch.utils.tensorboard import SummaryWriter  # raises ImportError without tensorboard

        self._w = SummaryWriter(log_dir=str(log_dir))

    def log_dict(self, metrics: dict[str, Any], step: int) -> None:
        split = metrics.get("split", "train")
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step":
                self._w.add_scalar(f"{split}/{k}", v, step)
        self._w.flush()

    def close(self) -> None:
        self._w.close()


def tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        return False
    return True


class MultiLogger:
    def __init__(self, loggers: list[MetricLogger]):
        self.loggers = loggers

    def log_dict(self, metrics: dict[str, Any], step: int) -> None:
        for logger in self.loggers:
            logger.log_dict(metrics, step)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()


class StepMeter:
    """Sums over the steps since the last logging step, kept as device tensors until `summary`."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.steps = 0
        self.tokens = 0  # real (non-padding) tokens, counted on the host from the attention masks
        self.flops = 0.0  # model FLOPs of those tokens (spanbert_cli.model.flops), counted on the host too
        self.sums: dict[str, Any] = {}

    def add(self, **values: Any) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums[k] + v if k in self.sums else v

    def summary(self, sbo_weight: float) -> dict[str, float]:
        """Token-weighted means over the interval (so loss = mlm_loss + sbo_weight * sbo_loss exactly)."""
        s = {k: (v.item() if hasattr(v, "item") else v) for k, v in self.sums.items()}
        n = max(self.steps, 1)
        sbo_on = sbo_weight != 0
        mlm_count, sbo_count = max(s.get("mlm_count", 0), 1), max(s.get("sbo_count", 0), 1)
        mlm_loss = s.get("mlm_loss_sum", 0.0) / mlm_count
        sbo_loss = s.get("sbo_loss_sum", 0.0) / sbo_count if sbo_on else 0.0
        return {
            "loss": mlm_loss + sbo_weight * sbo_loss,
            "mlm_loss": mlm_loss,
            "sbo_loss": sbo_loss,
            "mlm_acc": s.get("mlm_correct", 0) / mlm_count,
            "sbo_acc": s.get("sbo_correct", 0) / sbo_count if sbo_on else 0.0,
            "grad_norm": s.get("grad_norm", 0.0) / n,
        }
