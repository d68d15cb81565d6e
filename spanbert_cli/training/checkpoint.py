"""Checkpoints of a run: ``RUN/checkpoints/step-NNNNNNN/``, written atomically, verified before use.

A checkpoint directory holds::

    model.safetensors     encoder, MLM head and SBO head (our names = Hugging Face BERT names + sbo.*)
    config.json           the architecture, as a Hugging Face BertConfig (plus the SBO settings)
    tokenizer.json, vocab.txt
    training_state.pt     optimizer, scheduler, grad scaler, RNG states, step, data position, parameters;
                          plain tensors and Python containers: `torch.load(..., weights_only=True)` reads it
    checkpoint.json       step, data position, and the size and sha256 of every file above

It is built in a temporary directory beside its final name and renamed into place when complete, so a
run killed at any moment leaves either the whole checkpoint or none of it; `checkpoint.json` lets a later
reader tell a complete checkpoint from a corrupted one.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import random
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spanbert_cli import artifacts
from spanbert_cli.artifacts import atomic_file, sha256_file
from spanbert_cli.errors import RESUME_FIX, ArtifactError, naming_io_errors
from spanbert_cli.model.spanbert import ModelConfig, hf_config_dict
from spanbert_cli.text.wordpiece import copy_tokenizer_files

FORMAT = 1
CHECKPOINTS_DIR = "checkpoints"
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
STATE_FILE = "training_state.pt"
META_FILE = "checkpoint.json"
_NAME = re.compile(r"^step-(\d{7,})$")


def checkpoint_name(step: int) -> str:
    return f"step-{step:07d}"


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int


def list_checkpoints(run_dir: str | os.PathLike) -> list[Checkpoint]:
    """The complete checkpoints of a run (those with a checkpoint.json), by step."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = []
    for d in root.iterdir():
        m = _NAME.match(d.name)
        if m and (d / META_FILE).is_file():
            found.append(Checkpoint(d, int(m.group(1))))
    return sorted(found, key=lambda c: c.step)


def latest_checkpoint(run_dir: str | os.PathLike) -> Checkpoint | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def is_checkpoint_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / META_FILE).is_file()


# --------------------------------------------------------------------------------------------------
# RNG state, in a form `torch.load(weights_only=True)` accepts (tensors, numbers, tuples, dicts)


def capture_rng_state() -> dict[str, Any]:
    import torch

    kind, key, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "key": torch.from_numpy(key.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        # This process's device only: another process's GPUs are none of its business, and a run resumed
        # on another number of GPUs must still load it. (Training reseeds every micro-batch anyway.)
        state["cuda"] = torch.cuda.get_rng_state(torch.cuda.current_device())
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    import torch

    random.setstate(_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if isinstance(cuda, (list, tuple)):  # older checkpoints: one state per device of the saving process
        cuda = cuda[0] if cuda else None
    if cuda is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(cuda, torch.cuda.current_device())


def _tuples(x: Any) -> Any:
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


# --------------------------------------------------------------------------------------------------
# writing


def write_checkpoint(
    run_dir: str | os.PathLike,
    step: int,
    model_state: Mapping[str, Any],
    model_config: ModelConfig,
    tokenizer_dir: str | os.PathLike,
    training_state: Mapping[str, Any],
    meta: Mapping[str, Any] | None = None,
) -> Checkpoint:
    """Write `RUN/checkpoints/step-NNNNNNN` atomically (a checkpoint of the same step is replaced)."""
    import torch
    from safetensors.torch import save_file

    root = Path(run_dir) / CHECKPOINTS_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(step)
    with _writing(final):
        tmp = artifacts.make_temp_dir(final)
    try:
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in model_state.items()}
        with _writing(tmp / MODEL_FILE):
            save_file(tensors, str(tmp / MODEL_FILE), metadata={"format": "pt"})
        with _writing(tmp / CONFIG_FILE):
            (tmp / CONFIG_FILE).write_text(json.dumps(hf_config_dict(model_config), indent=2) + "\n")
        copy_tokenizer_files(tokenizer_dir, tmp)
        with _writing(tmp / STATE_FILE):  # torch says only "enforce fail at inline_container.cc" on ENOSPC
            torch.save(dict(training_state), tmp / STATE_FILE)
        files = {
            p.name: {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
            for p in sorted(tmp.iterdir())
            if p.name != artifacts.TEMP_MARK
        }
        record = {
            "format": FORMAT,
            "step": step,
            **dict(meta or {}),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "files": files,
        }
        with _writing(tmp / META_FILE):
            (tmp / META_FILE).write_text(json.dumps(record, indent=2) + "\n")
        artifacts.publish_dir(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return Checkpoint(final, step)


def _writing(path: Path) -> contextlib.AbstractContextManager[None]:
    return naming_io_errors(path, space_fix=RESUME_FIX)


# --------------------------------------------------------------------------------------------------
# reading


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    try:
        meta = json.loads((p / META_FILE).read_text())
        if not isinstance(meta, dict) or not isinstance(meta.get("files"), dict):
            raise ValueError("no file list")
        return meta
    except FileNotFoundError:
        raise ArtifactError(f"{p}: not a complete checkpoint (no {META_FILE})") from None
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{p}: corrupt checkpoint ({META_FILE} is unreadable: {e})") from None


def verify_checkpoint(path: str | os.PathLike, hashes: bool = True) -> dict[str, Any]:
    """Check every file of a checkpoint against its checkpoint.json; return that record."""
    p = Path(path)
    meta = read_meta(p)
    for name, entry in meta["files"].items():
        f = p / name
        if not f.is_file():
            raise ArtifactError(f"{p}: corrupt checkpoint ({name} is missing)")
        if f.stat().st_size != entry.get("bytes"):
            raise ArtifactError(
                f"{p}: corrupt checkpoint ({name} has {f.stat().st_size} bytes, {entry.get('bytes')} were written)"
            )
        if hashes and sha256_file(f) != entry.get("sha256"):
            raise ArtifactError(
                f"{p}: corrupt checkpoint ({name} does not match the sha256 recorded when it was saved)"
            )
    return meta


def load_model_state(path: str | os.PathLike) -> dict[str, Any]:
    from safetensors.torch import load_file

    f = Path(path) / MODEL_FILE
    try:
        return load_file(str(f))
    except Exception as e:  # safetensors raises its own error types for a damaged header
        raise ArtifactError(f"{f}: unreadable weights ({str(e).splitlines()[0][:200]})") from None


def load_training_state(path: str | os.PathLike) -> dict[str, Any]:
    import torch

    f = Path(path) / STATE_FILE
    try:
        state = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ArtifactError(f"{f}: unreadable training state ({str(e).splitlines()[0][:200]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ArtifactError(f"{f}: not a spanbert training state of format {FORMAT}")
    return state


def load_config(path: str | os.PathLike) -> ModelConfig:
    f = Path(path) / CONFIG_FILE
    try:
        data = json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{f}: unreadable model config ({e})") from None
    return ModelConfig.from_hf_config(data) if "model_type" in data else ModelConfig.from_dict(data)


# --------------------------------------------------------------------------------------------------


class Checkpointer:
    """Saves and prunes the checkpoints of one run; the training loop only calls `save`."""

    def __init__(
        self,
        run_dir: str | os.PathLike,
        *,
        keep_last: int,
        model_config: ModelConfig,
        tokenizer_dir: str | os.PathLike,
        meta: Mapping[str, Any] | None = None,
    ):
        self.run_dir = Path(run_dir)
        self.keep_last = keep_last
        self.model_config = model_config
        self.tokenizer_dir = Path(tokenizer_dir)
        self.meta = dict(meta or {})

    def save(
        self,
        step: int,
        model_state: Mapping[str, Any],
        training_state: Mapping[str, Any],
        meta: Mapping[str, Any] | None = None,
    ) -> Checkpoint:
        return write_checkpoint(
            self.run_dir,
            step,
            model_state,
            self.model_config,
            self.tokenizer_dir,
            training_state,
            {**self.meta, **dict(meta or {})},
        )

    def kept(self) -> list[Checkpoint]:
        """The checkpoints `prune` leaves: the newest `keep_last` (all when keep_last is 0)."""
        found = list_checkpoints(self.run_dir)
        return found if self.keep_last == 0 else found[-self.keep_last :]

    def prune(self) -> list[Checkpoint]:
        keep = {c.path for c in self.kept()}
        removed = [c for c in list_checkpoints(self.run_dir) if c.path not in keep]
        for c in removed:
            artifacts.remove_dir(c.path)
        return removed

    def remove_after(self, step: int) -> list[Checkpoint]:
        """Delete the checkpoints newer than `step` (a resumption from an older one abandons them)."""
        removed = [c for c in list_checkpoints(self.run_dir) if c.step > step]
        for c in removed:
            artifacts.remove_dir(c.path)
        return removed


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_file(path) as f:
        f.write(json.dumps(obj, indent=2) + "\n")
