"""Where a model's weights come from, and the Hugging Face directories they are read from and written to.

A model is named by a path: a pretrain run (its latest checkpoint, or `step`), one of its checkpoints, an
export (`spanbert export`, or the `RUN/hf` a run writes at its end) or any Hugging Face BERT directory.
`resolve_source` says which and finds the weights; `read_weights` reads and checks them;
`resolve_run` adds what an evaluation records about them (the tokenizer, the inputs of its lineage);
`load_pretrained` gives the model back. `write_hf_dir` writes the Hugging Face form:

    config.json                 BertConfig (architectures: BertForMaskedLM), plus the SBO settings
    model.safetensors           encoder + MLM head under BertForMaskedLM's names
    sbo_head.safetensors        the span boundary head (sbo.*), which transformers has no class for
    tokenizer.json, vocab.txt   the tokenizer the model was trained with
    tokenizer_config.json       BertTokenizer settings (casing from the tokenizer itself)
    special_tokens_map.json
    spanbert_export.json        where it came from: run fingerprint, checkpoint step, weights sha256

so that ``transformers.AutoModelForMaskedLM.from_pretrained(DIR)`` and ``AutoTokenizer.from_pretrained(DIR)``
load it with no newly initialised weight.
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

from spanbert_cli import artifacts, kinds
from spanbert_cli.errors import ArtifactError, DataError, UsageError, naming_io_errors
from spanbert_cli.model.spanbert import ModelConfig, hf_config_dict
from spanbert_cli.progress import NullReporter, Reporter
from spanbert_cli.text.wordpiece import TOKENIZER_FILES, copy_tokenizer_files
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
    from tokenizers import Tokenizer

    from spanbert_cli.model.spanbert import SpanBert

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
        if m.kind == kinds.RUN:
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
        if m.kind != kinds.EXPORT:
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
    from spanbert_cli.text.wordpiece import load_tokenizer

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

    from spanbert_cli.model.spanbert import SpanBert

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

    from spanbert_cli.text.wordpiece import is_cased, load_tokenizer

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
class PretrainedRun:
    """Where the encoder comes from, resolved and checked, before its weights are read."""

    spec: Path
    source: WeightsSource
    tokenizer: Tokenizer | None
    inputs: list[artifacts.InputRef]
    name: str  # for the default output directory
    description: str  # for messages


def resolve_run(
    run: str | os.PathLike | None,
    workspace: str | os.PathLike | None = None,
    reporter: Reporter | None = None,
    require_tokenizer: bool = True,
) -> PretrainedRun:
    """A pretrain run (its latest checkpoint), a checkpoint, an export or a Hugging Face BERT directory;
    None: the newest run in the workspace. Its tokenizer must be beside the weights (unless not
    `require_tokenizer`: then `tokenizer` is None when there is none)."""
    from spanbert_cli.text.wordpiece import TOKENIZER_FILES, load_tokenizer, tokenizer_sha256
    from spanbert_cli.training.checkpoint import CONFIG_FILE, MODEL_FILE, read_meta

    rep = reporter or NullReporter()
    if run is None:
        latest = artifacts.find_latest(kinds.RUN, workspace)
        if latest is None:
            root = artifacts.workspace_root(workspace) / artifacts.kind_dir(kinds.RUN)
            raise UsageError(
                f"no RUN named and no pretrain run in {root}; pass RUN (a run, a checkpoint or a Hugging Face "
                "BERT directory), or run `spanbert pretrain` first"
            )
        rep.log(f"using the newest pretrain run: {latest.path}")
        run = latest.path
    spec = Path(run)
    source = resolve_source(spec)
    tok = None
    if any((source.path / name).is_file() for name in TOKENIZER_FILES):
        try:
            tok = load_tokenizer(source.path)
        except DataError as e:
            raise DataError(f"{spec}: {e}") from None
    elif require_tokenizer:
        raise DataError(
            f"{spec}: no tokenizer (tokenizer.json or vocab.txt) beside the weights in {source.path}; "
            "fine-tuning needs the tokenizer the model was pretrained with"
        )

    inputs: list[artifacts.InputRef] = []
    run_dir = source.run
    if run_dir is None and source.path.name == "hf" and _is_run(source.path.parent):
        run_dir = source.path.parent  # RUN/hf: the export a run writes at its end
    if run_dir is not None:
        inputs.append(
            artifacts.InputRef.from_artifact(artifacts.open_artifact(run_dir, kinds.RUN), role="run")
        )
    elif (source.path / artifacts.MANIFEST).is_file():
        inputs.append(artifacts.InputRef.from_artifact(artifacts.open_artifact(source.path), role="model"))
    if source.kind == "checkpoint":
        entry = read_meta(source.path)["files"].get(MODEL_FILE, {})
        inputs.append(
            artifacts.InputRef(
                path=str(source.path / MODEL_FILE),
                role="weights",
                sha256=entry.get("sha256"),
                bytes=entry.get("bytes"),
                name=MODEL_FILE,
            )
        )
    else:
        wf = weights_file(source)
        inputs.append(artifacts.InputRef.from_file(wf, name=wf.name, role="weights"))
    inputs.append(
        artifacts.InputRef.from_file(source.path / CONFIG_FILE, name=CONFIG_FILE, role="model-config")
    )
    if tok is not None:
        inputs.append(
            artifacts.InputRef(
                path=str(source.path), role="tokenizer", sha256=tokenizer_sha256(tok), name="tokenizer"
            )
        )
    base = run_dir if run_dir is not None else source.path
    name = re.sub(r"-[0-9a-f]{12}$", "", base.resolve().name) or "model"
    if source.kind != "checkpoint" and run_dir is not None:
        name += "-hf"
    if source.step is not None:
        name += f"-step{source.step}"
    what = f"checkpoint {source.path.name} of {source.run}" if source.run else str(source.path)
    return PretrainedRun(spec, source, tok, inputs, name, what)


def _is_run(path: Path) -> bool:
    try:
        return (path / artifacts.MANIFEST).is_file() and artifacts.read_manifest(path).kind == kinds.RUN
    except artifacts.ArtifactError:
        return False


def load_encoder(run: PretrainedRun) -> SpanBert:
    """The pretrained SpanBert (weights verified), on the CPU."""
    import torch

    from spanbert_cli.model.spanbert import SpanBert

    cfg, state = read_weights(run.source)
    with torch.random.fork_rng(devices=[]):  # the throwaway initialisation must not move the seed
        model = SpanBert(cfg)
    model.load_hf_weights(state)
    return model
