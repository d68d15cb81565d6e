"""The settings of the evaluation stages: `spanbert eval mlm` and `spanbert eval squad`.

Kept apart from the stages themselves (which need torch) so that the command line can build its options
from them without importing torch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from spanbert_cli.errors import UsageError
from spanbert_cli.eval.squad import data as sd
from spanbert_cli.eval.squad import scoring
from spanbert_cli.eval.squad.features import FeatureConfig
from spanbert_cli.masking import MaskingConfig
from spanbert_cli.options import option, same_option

SPLITS = ("train", "valid")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")

POSTPROCESS_VERSION = 1
#: 2: dropout seeded per global micro-batch (seed, step, micro-batch), so that the fine-tuning does not
#: depend on the number of processes (version 1 drew it from one stream).
TRAIN_ORDER_VERSION = 2


RUNS = "(default: the run's)"
# Where `spanbert eval squad --help` lists the options.
SCORE = "Scoring a predictions file"
DATA = "Fine-tuning: model and data"
OPTIM = "Fine-tuning: optimisation (docs/algorithm.md §5)"
FEAT = "Fine-tuning: features and answers"


@dataclass(frozen=True)
class MlmEvalConfig:
    """What to evaluate and how. `None` masking fields take the run's value (the paper's without a run)."""

    split: str = option("valid", "The split to evaluate: valid or train.")
    max_sequences: int | None = option(
        None, "Evaluate the first N sequences (default: all).", show_default=False
    )
    scheme: str | None = same_option(MaskingConfig, "scheme", None, RUNS)
    mask_ratio: float | None = same_option(MaskingConfig, "mask_ratio", None, RUNS)
    geometric_p: float | None = same_option(MaskingConfig, "geometric_p", None, RUNS)
    max_span_len: int | None = same_option(MaskingConfig, "max_span_len", None, RUNS)
    span_len: int | None = same_option(MaskingConfig, "span_len", None, RUNS)
    sbo_weight: float | None = option(
        None, "Weight of the SBO loss in `loss` (default: the run's).", panel="Masking", show_default=False
    )
    seed: int | None = option(None, "Masking seed (default: the run's).", panel="Masking", show_default=False)
    precision: str = option("auto", "auto, bf16, fp16 or fp32.")
    # ---- runtime (not fingerprinted) ---------------------------------------------------------------
    batch_size: int = option(32, "Sequences per forward pass.")
    num_workers: int = option(2, "Data-loader worker processes (masking).")
    device: str = option("auto", "auto, cpu or cuda.")

    def validate(self) -> None:
        problems = []
        if self.split not in SPLITS:
            problems.append(f"--split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        for flag, value, low in (("--max-sequences", self.max_sequences, 1), ("--seed", self.seed, 0)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
                problems.append(f"{flag} must be an integer >= {low}, got {value!r}")
        for flag, value, low in (
            ("--batch-size", self.batch_size, 1),
            ("--num-workers", self.num_workers, 0),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                problems.append(f"{flag} must be an integer >= {low}, got {value!r}")
        if self.sbo_weight is not None and not (math.isfinite(self.sbo_weight) and self.sbo_weight >= 0):
            problems.append(f"--sbo-weight must be >= 0, got {self.sbo_weight!r}")
        if self.precision not in PRECISIONS:
            problems.append(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.device not in DEVICES:
            problems.append(f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if problems:
            raise UsageError("; ".join(problems))


#: Settings that do not change the result (beyond float noise): not fingerprinted.
RUNTIME_FIELDS = frozenset({"device", "eval_batch_size", "log_every", "world_size"})
#: Settings that change the result of a v2.0 dev set only: fingerprinted for one (so that v1.1
#: evaluations keep the fingerprints they had before these settings existed).
V2_FIELDS = frozenset({"threshold_search"})
#: The paper's SQuAD window (docs/algorithm.md §5); a model with fewer positions gets all of its own.
PAPER_MAX_SEQ_LENGTH = 512


@dataclass(frozen=True)
class SquadConfig:
    """Fine-tuning and prediction settings; defaults are the paper's (docs/algorithm.md §5).

    `max_seq_length` None means the paper's 512, or the model's own number of positions when it has
    fewer (`for_model` resolves it once the model is known, before anything is fingerprinted)."""

    # ---- features ----------------------------------------------------------------------------------
    max_seq_length: int | None = option(
        None,
        f"Tokens per window (default: {PAPER_MAX_SEQ_LENGTH}, the paper's, or the model's positions when "
        "it has fewer).",
        panel=FEAT,
        show_default=False,
    )
    doc_stride: int = option(128, "Tokens between window starts.", panel=FEAT)
    max_query_length: int = option(64, "Question tokens kept.", panel=FEAT)
    # ---- optimisation ------------------------------------------------------------------------------
    lr: float = option(2e-5, "Peak learning rate.", panel=OPTIM)
    batch_size: int = option(32, "Windows per optimizer step (all processes together).", panel=OPTIM)
    micro_batch_size: int | None = option(
        None,
        "Windows per forward pass (gradient accumulation) (default: --batch-size / processes).",
        panel=OPTIM,
        show_default=False,
    )
    epochs: int = option(4, "Passes over the training windows.", panel=OPTIM)
    warmup_ratio: float = option(0.1, "Share of the steps spent warming up linearly.", panel=OPTIM)
    weight_decay: float = option(0.01, "AdamW weight decay (not on biases and LayerNorm).", panel=OPTIM)
    adam_eps: float = option(1e-8, "AdamW epsilon.", panel=OPTIM)
    grad_clip: float = option(1.0, "Clip the gradient to this global norm (0: off).", panel=OPTIM)
    max_steps: int | None = option(
        None, "Stop after N optimizer steps (the schedule ends there).", panel=OPTIM, show_default=False
    )
    precision: str = option(
        "auto", "auto (fp32 on CPU, bf16 or fp16 on GPU), bf16, fp16 or fp32.", panel=OPTIM
    )
    seed: int = option(0, "Random seed (initialisation of the QA layer, data order, dropout).")
    # ---- data --------------------------------------------------------------------------------------
    max_train_examples: int | None = option(
        None, "Train on the first N questions.", panel=DATA, show_default=False
    )
    max_eval_examples: int | None = option(
        None, "Score the first N dev questions.", panel=DATA, show_default=False
    )
    version: str | None = option(
        None, "SQuAD version, 1.1 or 2.0 (default: from the data).", panel=SCORE, show_default=False
    )
    threshold_search: str = option(
        "official",
        "v2.0: how the best no-answer threshold is searched: official (the v2.0 script's, as papers "
        "report: it can count half of a run of equal no-answer probabilities) or tie-aware (equal "
        "probabilities switch together: only scores some threshold gives).",
        panel=SCORE,
    )
    # ---- post-processing ---------------------------------------------------------------------------
    n_best: int = option(20, "Start / end candidates per window.", panel=FEAT)
    max_answer_length: int = option(30, "Longest answer, in tokens.", panel=FEAT)
    # ---- runtime (not fingerprinted) ---------------------------------------------------------------
    device: str = option("auto", "auto, cpu or cuda.")
    eval_batch_size: int = option(64, "Windows per forward pass when predicting.")
    log_every: int = option(10, "Steps between progress updates.")
    # Processes fine-tuning together (set from the launcher's process group, not a recipe setting); the
    # batch is global: each step's windows are split over the processes.
    world_size: int = option(1, "Processes fine-tuning together (set by the launcher).", cli=False)

    @property
    def features(self) -> FeatureConfig:
        """The window settings (an unresolved `max_seq_length` reads as the paper's 512)."""
        length = PAPER_MAX_SEQ_LENGTH if self.max_seq_length is None else self.max_seq_length
        return FeatureConfig(length, self.doc_stride, self.max_query_length)

    def for_model(self, max_positions: int) -> SquadConfig:
        """This config for a model of `max_positions` positions: an unset `max_seq_length` becomes
        min(512, max_positions); a set one longer than the model is refused (a UsageError)."""
        if self.max_seq_length is not None:
            if self.max_seq_length > max_positions:
                raise UsageError(
                    f"--max-seq-length {self.max_seq_length} exceeds the model's {max_positions} positions"
                )
            return self
        resolved = dataclasses.replace(self, max_seq_length=min(PAPER_MAX_SEQ_LENGTH, max_positions))
        try:
            resolved.validate()
        except UsageError as e:  # the length came from the model, not from the command line: say so
            raise UsageError(
                f"{e} (--max-seq-length defaults to the model's {max_positions} positions)"
            ) from None
        return resolved

    @property
    def resolved_micro_batch_size(self) -> int:
        return self.micro_batch_size or max(1, self.batch_size // max(1, self.world_size))

    def validate(self) -> None:
        """One UsageError listing every bad setting by its flag."""
        problems = self.features.problems()

        def integer(flag: str, value: Any, low: int, optional: bool = False) -> bool:
            if optional and value is None:
                return True
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                problems.append(f"{flag} must be an integer >= {low}, got {value!r}")
                return False
            return True

        def real(flag: str, value: Any, lo: float, hi: float, lo_open: bool = False) -> None:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if not ok or not ((lo < value) if lo_open else (lo <= value)) or value > hi:
                problems.append(f"{flag} must be in {'(' if lo_open else '['}{lo:g}, {hi:g}], got {value!r}")

        real("--lr", self.lr, 0.0, 1.0, lo_open=True)
        batch_ok = integer("--batch-size", self.batch_size, 1)
        micro_ok = integer("--micro-batch-size", self.micro_batch_size, 1, optional=True)
        world_ok = integer("the number of processes", self.world_size, 1)
        if batch_ok and micro_ok and self.micro_batch_size and self.batch_size % self.micro_batch_size:
            problems.append(
                f"--batch-size {self.batch_size} is not divisible by --micro-batch-size {self.micro_batch_size}"
            )
        elif batch_ok and micro_ok and world_ok and self.world_size > 1:
            w, m = self.world_size, self.resolved_micro_batch_size
            if self.batch_size % (w * m):
                given = f"--micro-batch-size {m}" if self.micro_batch_size else f"micro-batches of {m}"
                problems.append(
                    f"--batch-size {self.batch_size} (global) is not divisible by {w} processes x {given} "
                    "(the micro-batches of a step must split evenly over the processes)"
                )
        integer("--epochs", self.epochs, 1)
        real("--warmup-ratio", self.warmup_ratio, 0.0, 1.0)
        real("--weight-decay", self.weight_decay, 0.0, 1.0)
        real("adam eps", self.adam_eps, 0.0, 1.0, lo_open=True)
        real("--grad-clip", self.grad_clip, 0.0, 1e9)
        integer("--max-steps", self.max_steps, 1, optional=True)
        if self.precision not in PRECISIONS:
            problems.append(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        integer("--seed", self.seed, 0)
        integer("--max-train-examples", self.max_train_examples, 1, optional=True)
        integer("--max-eval-examples", self.max_eval_examples, 1, optional=True)
        for check, value in (
            (sd.check_version, self.version),
            (scoring.check_threshold_search, self.threshold_search),
        ):
            try:
                check(value)
            except UsageError as e:
                problems.append(str(e))
        integer("--n-best", self.n_best, 1)
        integer("--max-answer-length", self.max_answer_length, 1)
        if self.device not in DEVICES:
            problems.append(f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        integer("--eval-batch-size", self.eval_batch_size, 1)
        integer("--log-every", self.log_every, 1)
        if problems:
            raise UsageError("; ".join(problems))

    def fingerprint_params(self, dev_version: str | None = None) -> dict[str, Any]:
        """What the result depends on; `dev_version` (the dev set's, "1.1" or "2.0") adds the settings
        that matter for v2.0 only. Call it on a config resolved `for_model`."""
        assert self.max_seq_length is not None, "resolve the config for_model before fingerprinting it"
        skip = RUNTIME_FIELDS | (frozenset() if dev_version == "2.0" else V2_FIELDS)
        p = {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}
        p["micro_batch_size"] = self.resolved_micro_batch_size
        p["version"] = sd.check_version(self.version)
        p["postprocess"] = POSTPROCESS_VERSION
        p["train_order"] = TRAIN_ORDER_VERSION
        return p
