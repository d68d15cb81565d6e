"""Metric logging behind one small protocol (`log_dict` / `close`): RUN/metrics.jsonl, TensorBoard, W&B.

The training loop accumulates its numbers in a `StepMeter` (on the device, no host sync per step) and hands
a plain dict to the loggers at each logging step. `open_loggers` builds the loggers a run asked for (only
the main process logs).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from spanbert_cli.artifacts import atomic_file
from spanbert_cli.errors import RESUME_FIX, UsageError, naming_io_errors
from spanbert_cli.training.config import WANDB_INSTALL, installed

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
#: The W&B run of a run directory (its id, project, the last step it received), so --resume continues it.
WANDB_RUN_FILE = "wandb-run.json"
#: W&B's own files (its offline run data, its logs) when WANDB_DIR does not say where: inside the run
#: directory, hidden, so that they are not among the run artifact's hashed files.
WANDB_LOCAL_DIR = ".wandb"


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


class WandbLogger:
    """Scalars under `train/…` and `valid/…` against our own `step` (a W&B run's internal step only ever
    grows, while a resumed run logs again the steps after its checkpoint); needs the wandb package.

    The W&B run id is kept in RUN/wandb-run.json with the last step W&B received: a resumed run continues
    the same W&B run (``resume="allow"``) and skips the steps W&B already has, which on CPU are the very
    same numbers again (training resumes bit-identically)."""

    def __init__(self, run_dir: str | os.PathLike, *, project: str, config: dict[str, Any], resume: bool):
        import wandb  # raises ImportError without wandb

        self.run_dir = Path(run_dir)
        self.record_path = self.run_dir / WANDB_RUN_FILE
        previous = read_wandb_record(self.record_path) if resume else None
        run_id = previous["id"] if previous else None  # None: W&B makes one up
        self.last_step = int(previous.get("last_step", 0)) if previous else 0
        local = None if os.environ.get("WANDB_DIR") else self.run_dir / WANDB_LOCAL_DIR
        if local is not None:
            local.mkdir(parents=True, exist_ok=True)
        try:
            self._run = wandb.init(
                project=project,
                name=self.run_dir.name,
                id=run_id,
                resume="allow",
                config=config,
                dir=str(local) if local is not None else None,
                # spanbert's progress bars in W&B's output log would be mostly carriage returns.
                settings=wandb.Settings(console="off"),
            )
        except Exception as e:  # no API key, no network, a bad project name: wandb's own errors
            reason = " ".join(str(e).split())[:300] or type(e).__name__
            raise UsageError(
                f"--wandb: W&B could not start the run ({reason}); run `wandb login`, or set "
                "WANDB_MODE=offline and `wandb sync` later"
            ) from None
        self._run.define_metric("step")
        for split in ("train", "valid"):
            self._run.define_metric(f"{split}/*", step_metric="step")
        self.project = project
        self._write_record()

    @property
    def id(self) -> str:
        return str(self._run.id)

    def _write_record(self) -> None:
        record = {
            "id": self.id,
            "project": self.project,
            "entity": getattr(self._run, "entity", None) or None,
            "url": getattr(self._run, "url", None) or None,
            "last_step": self.last_step,
        }
        with naming_io_errors(self.record_path, space_fix=RESUME_FIX), atomic_file(self.record_path) as f:
            f.write(json.dumps(record, indent=1) + "\n")

    def log_dict(self, metrics: dict[str, Any], step: int) -> None:
        # Equal steps are logged: the training and the validation record of one step come one after the
        # other, and a run that stopped between them still lacks the second.
        if step < self.last_step:
            return
        split = metrics.get("split", "train")
        row: dict[str, Any] = {"step": step}
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step":
                row[f"{split}/{k}"] = v
        self._run.log(row)
        if step > self.last_step:
            self.last_step = step
            self._write_record()

    def close(self) -> None:
        # Called from a `finally`: an exception on its way out (a failure, Ctrl-C) marks the W&B run failed.
        error = sys.exc_info()[1]
        self._run.finish(exit_code=0 if error is None else int(getattr(error, "exit_code", 1) or 1))


def read_wandb_record(path: str | os.PathLike) -> dict[str, Any] | None:
    """RUN/wandb-run.json, or None when there is none or it is unreadable (a new W&B run is started)."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("id"), str) else None


def tracked_config(
    config: Any, params: dict[str, Any], fingerprint: str, run_dir: str | os.PathLike
) -> dict[str, Any]:
    """What an experiment tracker records about a run beside its metrics: the settings as given, the
    resolved parameters that determine the weights (the run's fingerprint is over these), the fingerprint
    and the lineage (each upstream artifact once, its raw input files summarised)."""
    from spanbert_cli.artifacts.graph import graph_json, lineage_graph

    return {
        "settings": dataclasses.asdict(config),
        "params": params,
        "fingerprint": fingerprint,
        "run_dir": str(Path(run_dir).resolve()),
        "lineage": graph_json(lineage_graph([run_dir])),
    }


def open_loggers(
    run_dir: str | os.PathLike,
    config: Any,
    *,
    fresh: bool,
    tracked: Callable[[], dict[str, Any]],
    log: Callable[[str], None],
) -> MultiLogger:
    """The loggers of the main process: metrics.jsonl always, TensorBoard with `config.tensorboard`, W&B
    with `config.wandb` (`tracked()` gives its run config; `fresh`: a new run, not a resumed one)."""
    run_dir = Path(run_dir)
    loggers: list[MetricLogger] = [JsonlLogger(run_dir / METRICS_FILE)]
    try:
        if config.tensorboard:
            if tensorboard_available():
                loggers.append(TensorBoardLogger(run_dir / TENSORBOARD_DIR))
            else:
                log("--tensorboard: the tensorboard package is not installed; logging to metrics.jsonl only")
        if getattr(config, "wandb", False):
            if not installed("wandb"):  # `PretrainConfig.validate` refuses this before anything starts
                raise UsageError(f"--wandb: the wandb package is not installed; {WANDB_INSTALL}")
            loggers.append(
                WandbLogger(run_dir, project=config.wandb_project, config=tracked(), resume=not fresh)
            )
    except BaseException:
        MultiLogger(loggers).close()
        raise
    return MultiLogger(loggers)


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
