"""Hugging Face export of a checkpoint, and `load_pretrained`: our model back from any saved form.

An export directory is a Hugging Face BERT model directory::

    config.json                 BertConfig (architectures: BertForMaskedLM), plus the SBO settings
    model.safetensors           encoder + MLM head under BertForMaskedLM's names
    sbo_head.safetensors        the span boundary head (sbo.*), which transformers has no class for
    tokenizer.json, vocab.txt   the tokenizer the model was trained with
    tokenizer_config.json       BertTokenizer settings (casing from the tokenizer itself)
    special_tokens_map.json
    spanbert_export.json        where it came from: run fingerprint, checkpoint step, weights sha256

so that ``transformers.AutoModelForMaskedLM.from_pretrained(DIR)`` and
``AutoTokenizer.from_pretrained(DIR)`` load it with no newly initialised weight. A run writes one for its
final step to ``RUN/hf``; ``spanbert export RUN --out DIR`` writes one for any checkpoint, as an artifact
(kind ``spanbert/export``) whose lineage leads back to the run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spanbert_cli import artifacts, kinds, locks
from spanbert_cli.errors import ArtifactError, UsageError, naming_io_errors
from spanbert_cli.model import ModelConfig, hf_config_dict
from spanbert_cli.progress import NullReporter, Reporter
from spanbert_cli.tokenizer import TOKENIZER_FILES, copy_tokenizer_files
from spanbert_cli.training.checkpoint import (
    CONFIG_FILE,
    MODEL_FILE,
    is_checkpoint_dir,
    list_checkpoints,
    load_config,
    load_model_state,
    verify_checkpoint,
)

if TYPE_CHECKING:
    import torch

    from spanbert_cli.model import SpanBert

KIND = kinds.EXPORT
RUN_KIND = kinds.RUN
EXPORT_FORMAT = 1
SBO_FILE = "sbo_head.safetensors"
INFO_FILE = "spanbert_export.json"
HF_BIN_FILE = "pytorch_model.bin"
SPECIAL_TOKENS = {
    "unk_token": "[UNK]",
    "sep_token": "[SEP]",
    "pad_token": "[PAD]",
    "cls_token": "[CLS]",
    "mask_token": "[MASK]",
}


# --------------------------------------------------------------------------------------------------
# Where weights live: a run, a checkpoint, an export or a Hugging Face BERT directory


@dataclass(frozen=True)
class WeightsSource:
    path: Path  # the directory holding config.json and the weights
    kind: str  # "checkpoint", "export" (ours or any Hugging Face BERT directory)
    run: Path | None = None  # the run directory a checkpoint belongs to
    step: int | None = None


def resolve_source(path: str | os.PathLike, step: int | None = None) -> WeightsSource:
    """A run directory (its latest checkpoint, or `step`), a checkpoint, or an export / HF directory."""
    p = Path(path)
    if not p.exists():
        raise ArtifactError(f"{p}: no such directory")
    if not p.is_dir():
        raise ArtifactError(f"{p}: not a directory; name a run, a checkpoint or an exported model directory")
    if (p / artifacts.MANIFEST).is_file():
        m = artifacts.read_manifest(p)
        if m.kind == RUN_KIND:
            found = list_checkpoints(p)
            if step is not None:
                match = [c for c in found if c.step == step]
                if not match:
                    have = ", ".join(str(c.step) for c in found) or "none"
                    raise UsageError(f"{p}: no checkpoint of step {step} (checkpoints: {have})")
                return WeightsSource(match[0].path, "checkpoint", p, step)
            if not found:
                raise ArtifactError(f"{p}: the run has no checkpoint yet")
            return WeightsSource(found[-1].path, "checkpoint", p, found[-1].step)
        if m.kind != KIND:
            raise ArtifactError(f"{p}: is a {m.kind} artifact, not a run, checkpoint or exported model")
    if step is not None:
        raise UsageError(f"{p}: --step applies to a run directory only")
    if is_checkpoint_dir(p):
        meta_step = _checkpoint_step(p)
        run = p.parent.parent if (p.parent.parent / artifacts.MANIFEST).is_file() else None
        return WeightsSource(p, "checkpoint", run, meta_step)
    if (p / CONFIG_FILE).is_file():
        return WeightsSource(p, "export")
    raise ArtifactError(
        f"{p}: not a spanbert run, checkpoint or exported model, nor a Hugging Face BERT directory "
        f"(no {CONFIG_FILE})"
    )


def _checkpoint_step(p: Path) -> int | None:
    m = re.match(r"^step-(\d+)$", p.name)
    return int(m.group(1)) if m else None


def weights_file(source: WeightsSource) -> Path:
    for name in (MODEL_FILE, HF_BIN_FILE):
        if (source.path / name).is_file():
            return source.path / name
    raise ArtifactError(f"{source.path}: no {MODEL_FILE} or {HF_BIN_FILE}")


def read_weights(source: WeightsSource) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """(architecture, state dict under Hugging Face / our names). A checkpoint is verified first."""
    cfg = load_config(source.path)
    if source.kind == "checkpoint":
        verify_checkpoint(source.path)
        return cfg, load_model_state(source.path)
    f = weights_file(source)
    if f.name == HF_BIN_FILE:
        import torch

        try:
            state = torch.load(f, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ArtifactError(f"{f}: unreadable weights ({str(e).splitlines()[0][:200]})") from None
    else:
        state = _load_safetensors(f)
    sbo = source.path / SBO_FILE
    if sbo.is_file():
        state.update(_load_safetensors(sbo))
    return cfg, state


def _load_safetensors(f: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(f))
    except Exception as e:
        raise ArtifactError(f"{f}: unreadable weights ({str(e).splitlines()[0][:200]})") from None


def tokenizer_vocab(directory: str | os.PathLike) -> dict[str, int] | None:
    """The vocabulary of the tokenizer stored in a directory (tokenizer.json, else vocab.txt), if any."""
    from spanbert_cli.errors import DataError
    from spanbert_cli.tokenizer import load_tokenizer

    d = Path(directory)
    if not any((d / name).is_file() for name in TOKENIZER_FILES):
        return None
    try:
        return load_tokenizer(d).get_vocab(with_added_tokens=True)
    except DataError as e:
        raise ArtifactError(str(e)) from None


# --------------------------------------------------------------------------------------------------
# load_pretrained


def load_pretrained(path: str | os.PathLike, *, step: int | None = None, device: str = "cpu") -> SpanBert:
    """Our `SpanBert` (encoder, MLM head and SBO head) in eval mode, from a run directory (its latest
    checkpoint, or `step`), a checkpoint directory, an export directory, or a Hugging Face BERT directory
    (heads it lacks keep a fresh initialisation)."""
    import torch

    from spanbert_cli.model import SpanBert

    cfg, state = read_weights(resolve_source(path, step))
    with torch.random.fork_rng(devices=[]):  # the fresh initialisation must not disturb the caller's RNG
        model = SpanBert(cfg)
    model.load_hf_weights(state)
    return model.to(device).eval()


# --------------------------------------------------------------------------------------------------
# Writing an export directory


def split_state(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(encoder + MLM head, SBO head), as contiguous CPU tensors."""
    hf, sbo = {}, {}
    for k, v in state.items():
        (sbo if k.startswith("sbo.") else hf)[k] = v.detach().to("cpu").contiguous()
    return hf, sbo


def write_hf_dir(
    directory: str | os.PathLike,
    state: Mapping[str, torch.Tensor],
    cfg: ModelConfig,
    tokenizer_dir: str | os.PathLike,
    info: Mapping[str, Any],
) -> None:
    """Write the files of an export directory (see the module docstring) into `directory`."""
    from safetensors.torch import save_file

    from spanbert_cli.tokenizer import is_cased, load_tokenizer

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    hf, sbo = split_state(state)
    for name, tensors in ((MODEL_FILE, hf), (SBO_FILE, sbo)):
        with naming_io_errors(d / name):
            save_file(tensors, str(d / name), metadata={"format": "pt"})
    _write_json(d / CONFIG_FILE, hf_config_dict(cfg))
    copy_tokenizer_files(tokenizer_dir, d)
    cased = is_cased(load_tokenizer(d))
    tokenizer_config = {
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": not cased,
        "strip_accents": None,  # BERT's rule: strip accents exactly when lowercasing
        "tokenize_chinese_chars": True,
        "model_max_length": cfg.max_position_embeddings,
        "clean_up_tokenization_spaces": False,
        **SPECIAL_TOKENS,
    }
    _write_json(d / "tokenizer_config.json", tokenizer_config)
    _write_json(d / "special_tokens_map.json", SPECIAL_TOKENS)
    _write_json(d / INFO_FILE, {"format": EXPORT_FORMAT, **dict(info)})


def _write_json(path: Path, obj: Any) -> None:
    with naming_io_errors(path):
        path.write_text(json.dumps(obj, indent=2) + "\n")


def write_hf_dir_atomic(directory: str | os.PathLike, *args: Any, **kwargs: Any) -> Path:
    """`write_hf_dir` into a temporary directory beside `directory`, then rename it into place."""
    d = Path(directory)
    tmp = artifacts.make_temp_dir(d)
    try:
        write_hf_dir(tmp, *args, **kwargs)
        artifacts.publish_dir(tmp, d)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return d


@dataclass
class ExportResult:
    artifact: artifacts.Artifact
    cached: bool
    step: int | None
    source: Path


def export(
    source: str | os.PathLike,
    *,
    out: str | os.PathLike | None = None,
    step: int | None = None,
    workspace: str | os.PathLike | None = None,
    force: bool = False,
    reporter: Reporter | None = None,
) -> ExportResult:
    """Export a run's checkpoint (the latest, or `step`) or a checkpoint directory as a `spanbert/export`
    artifact: a Hugging Face BERT directory."""
    rep = reporter or NullReporter()
    src = resolve_source(source, step)
    if src.kind != "checkpoint":
        raise UsageError(
            f"{source}: export takes a run or a checkpoint directory; this is already an exported model"
        )
    meta = verify_checkpoint(src.path)
    weights_sha = meta["files"][MODEL_FILE]["sha256"]
    if src.run is not None:
        m = artifacts.read_manifest(src.run)
        inputs = [artifacts.InputRef(path=str(src.run), role="run", fingerprint=m.fingerprint, kind=m.kind)]
        name = re.sub(r"-[0-9a-f]{12}$", "", src.run.resolve().name) or "run"
        run_fp: str | None = m.fingerprint
    else:
        inputs = [artifacts.InputRef.from_file(src.path / MODEL_FILE, name=MODEL_FILE, role="checkpoint")]
        name = "checkpoint"
        run_fp = meta.get("run_fingerprint")
    params = {"step": src.step, "weights_sha256": weights_sha, "format": EXPORT_FORMAT}
    plan = artifacts.plan(KIND, params, inputs, out=out, name=f"{name}-step-{src.step}", workspace=workspace)
    with locks.exclusive(plan.out):
        if (hit := artifacts.existing(plan, force)) is not None:
            return ExportResult(hit, cached=True, step=src.step, source=src.path)
        rep.log(f"exporting {src.path}")
        cfg, state = load_config(src.path), load_model_state(src.path)
        with artifacts.ArtifactWriter(plan) as w:
            info = {
                "run_fingerprint": run_fp,
                "step": src.step,
                "checkpoint": str(src.path),
                "weights_sha256": weights_sha,
            }
            write_hf_dir(w.dir, state, cfg, src.path, info)
            stats = {
                "step": src.step,
                "parameters": int(sum(v.numel() for v in state.values())),
                "vocab_size": cfg.vocab_size,
                "hidden_size": cfg.hidden_size,
                "num_layers": cfg.num_layers,
            }
            with naming_io_errors(w.dir / artifacts.MANIFEST):
                artifact = w.finalize(stats)
        return ExportResult(artifact, cached=False, step=src.step, source=src.path)
