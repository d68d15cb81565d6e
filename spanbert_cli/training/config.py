"""`PretrainConfig`: every setting of `spanbert pretrain`, documented where declared, validated at once.

The fields split in two groups, and the split matters:

* what determines the trained weights (model, optimisation, masking, precision, seed): these are the run
  artifact's fingerprinted parameters, and `--resume` refuses to continue with any of them changed;
* what does not (device, data-loader workers, how often to log, evaluate and save, how many checkpoints
  to keep, TensorBoard): `RUNTIME_FIELDS`, free to change between a run and its resumption.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from spanbert_cli.errors import UsageError
from spanbert_cli.masking import MaskingConfig
from spanbert_cli.model import PRESETS

PRECISIONS = ("auto", "bf16", "bf16-master", "fp16", "fp32")
DEVICES = ("auto", "cpu", "cuda")
DEFAULT_PRESET = "base"
PAPER_WARMUP_STEPS = 10_000

#: Fields that do not change what is trained: excluded from the fingerprint and the resume check.
RUNTIME_FIELDS = frozenset(
    {
        "device",
        "num_workers",
        "log_every",
        "eval_every",
        "eval_sequences",
        "save_every",
        "keep_last",
        "tensorboard",
        "compile",
        "world_size",
    }
)


@dataclass(frozen=True)
class PretrainConfig:
    """Parameters of `spanbert pretrain`. Defaults are the paper's (docs/algorithm.md §5) where it has
    one."""

    # ---- model ---------------------------------------------------------------------------------------
    model: str | None = None  # preset name (tiny/mini/small/base/large); None: base, or --init-from's
    model_config: str | None = None  # a JSON file: our ModelConfig keys or a Hugging Face config.json
    init_from: str | None = None  # weights to start from: a run, checkpoint, export or HF BERT directory

    # ---- optimisation --------------------------------------------------------------------------------
    lr: float = 1e-4  # peak learning rate, reached after the warm-up
    warmup_steps: int | None = None  # linear warm-up; None: min(10,000, max_steps // 10)
    max_steps: int = 2_400_000  # optimizer steps; the learning rate decays linearly to 0 at this step
    batch_size: int = 256  # sequences per optimizer step (all processes together)
    micro_batch_size: int | None = None  # sequences per forward/backward; None: batch_size / world_size
    weight_decay: float = 0.01  # AdamW, not on biases and LayerNorm weights
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    grad_clip: float = 1.0  # max global L2 norm of the gradient; 0 turns clipping off
    # auto (fp32 on CPU, bf16 on a GPU that has it, else fp16), bf16, bf16-master, fp16, fp32: see precision.py
    precision: str = "auto"

    # ---- objective -----------------------------------------------------------------------------------
    scheme: str = "span"  # span, word or token masking (the paper's ablation, Table 6)
    mask_ratio: float = 0.15
    geometric_p: float = 0.2
    max_span_len: int = 10
    span_len: int | None = None  # fixed span length in words (span scheme only)
    sbo_weight: float = 1.0  # weight of the span boundary objective; 0 turns SBO off

    seed: int = 0  # model initialisation, data order, masks and dropout

    # ---- runtime (not fingerprinted) ---------------------------------------------------------------
    device: str = "auto"  # auto, cpu or cuda
    num_workers: int = 2  # data-loader worker processes (0: load in the training process)
    log_every: int = 10  # steps between lines of metrics.jsonl and progress updates
    eval_every: int = 1000  # steps between evaluations on the valid split (0: only at the end; -1: never)
    eval_sequences: int = 0  # valid sequences per evaluation (0: the whole split)
    save_every: int = 1000  # steps between checkpoints (the last step is always saved)
    keep_last: int = 3  # checkpoints kept (0: all)
    tensorboard: bool = False  # also log to RUN/tensorboard when tensorboard is installed
    compile: bool = False  # torch.compile the encoder (for GPUs; the first steps of each shape are slow)
    # Processes training together (set from the launcher's process group, not a recipe setting). The
    # batch is global: each optimizer step accumulates batch_size / (world_size * micro_batch_size)
    # micro-batches on every process.
    world_size: int = 1

    # ---- resolution ----------------------------------------------------------------------------------

    @property
    def masking(self) -> MaskingConfig:
        return MaskingConfig(
            scheme=self.scheme,
            mask_ratio=self.mask_ratio,
            geometric_p=self.geometric_p,
            max_span_len=self.max_span_len,
            span_len=self.span_len,
        )

    @property
    def resolved_micro_batch_size(self) -> int:
        if self.micro_batch_size is not None:
            return self.micro_batch_size
        return max(1, self.batch_size // max(1, self.world_size))

    @property
    def resolved_warmup_steps(self) -> int:
        if self.warmup_steps is not None:
            return self.warmup_steps
        return min(PAPER_WARMUP_STEPS, self.max_steps // 10)

    @property
    def grad_accumulation(self) -> int:
        """Micro-batches per optimizer step on each process."""
        return self.batch_size // (self.resolved_micro_batch_size * max(1, self.world_size))

    def validate(self) -> None:
        """Raise one `UsageError` that lists every invalid setting by its flag."""
        problems: list[str] = []

        def integer(flag: str, value: Any, minimum: int) -> bool:
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                problems.append(f"{flag} must be an integer >= {minimum}, got {value!r}")
                return False
            return True

        def real(flag: str, value: Any, lo: float, hi: float, lo_open: bool = False) -> None:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if ok:
                ok = (lo < value if lo_open else lo <= value) and value <= hi
            if not ok:
                left = "(" if lo_open else "["
                problems.append(f"{flag} must be in {left}{lo:g}, {hi:g}], got {value!r}")

        if self.model is not None and self.model not in PRESETS:
            problems.append(f"--model must be one of {', '.join(PRESETS)}, got {self.model!r}")
        if self.init_from is not None and (self.model is not None or self.model_config is not None):
            problems.append(
                "--init-from takes the architecture from its directory; drop --model / --model-config"
            )
        elif self.model is not None and self.model_config is not None:
            problems.append("give --model or --model-config, not both")

        real("--lr", self.lr, 0.0, 1.0, lo_open=True)
        steps_ok = integer("--max-steps", self.max_steps, 1)
        warmup_ok = self.warmup_steps is None or integer("--warmup-steps", self.warmup_steps, 0)
        if self.warmup_steps is not None and warmup_ok and steps_ok and self.warmup_steps > self.max_steps:
            problems.append(f"--warmup-steps ({self.warmup_steps}) exceeds --max-steps ({self.max_steps})")
        batch_ok = integer("--batch-size", self.batch_size, 1)
        world_ok = integer("the number of processes", self.world_size, 1)
        micro_ok = self.micro_batch_size is None or integer("--micro-batch-size", self.micro_batch_size, 1)
        if batch_ok and micro_ok and world_ok:
            w = self.world_size
            if self.micro_batch_size is None and w > 1 and self.batch_size % w:
                problems.append(
                    f"--batch-size {self.batch_size} (global) is not divisible by the {w} processes"
                )
            elif self.micro_batch_size is not None and self.batch_size % self.micro_batch_size:
                problems.append(
                    f"--batch-size {self.batch_size} is not divisible by --micro-batch-size "
                    f"{self.micro_batch_size}"
                )
            elif self.micro_batch_size is not None and self.batch_size % (self.micro_batch_size * w):
                problems.append(
                    f"--batch-size {self.batch_size} (global) is not divisible by {w} processes x "
                    f"--micro-batch-size {self.micro_batch_size} (= {w * self.micro_batch_size}): the "
                    "micro-batches of a step must split evenly over the processes"
                )
        real("--weight-decay", self.weight_decay, 0.0, 1.0)
        real("adam beta1", self.adam_beta1, 0.0, 1.0)
        real("adam beta2", self.adam_beta2, 0.0, 1.0)
        real("adam eps", self.adam_eps, 0.0, 1.0, lo_open=True)
        real("--grad-clip", self.grad_clip, 0.0, 1e9)
        if self.precision not in PRECISIONS:
            problems.append(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        try:
            self.masking.validate()
        except UsageError as e:
            problems.append(str(e))
        real("--sbo-weight", self.sbo_weight, 0.0, 1e6)
        integer("--seed", self.seed, 0)

        if self.device not in DEVICES:
            problems.append(f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        integer("--num-workers", self.num_workers, 0)
        integer("--log-every", self.log_every, 1)
        integer("--eval-every", self.eval_every, -1)
        integer("--eval-sequences", self.eval_sequences, 0)
        integer("--save-every", self.save_every, 1)
        integer("--keep-last", self.keep_last, 0)
        if problems:
            raise UsageError("; ".join(problems))

    def fingerprint_params(self) -> dict[str, Any]:
        """The settings that determine the weights, with defaults resolved (model and precision are
        resolved by the caller, which knows the shards and the device)."""
        p = {k: v for k, v in dataclasses.asdict(self).items() if k not in RUNTIME_FIELDS}
        p["micro_batch_size"] = self.resolved_micro_batch_size
        p["warmup_steps"] = self.resolved_warmup_steps
        # Where the architecture came from is recorded in the run's extra; the resolved architecture
        # itself (added by the caller under "model") is what determines the weights.
        for k in ("model_config", "init_from"):
            p.pop(k)
        if self.scheme != "span" or self.span_len is not None:
            # Parameters the masking ignores do not split otherwise identical runs.
            p["geometric_p"] = p["max_span_len"] = None
        return p

    def runtime_params(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k in RUNTIME_FIELDS}


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"model": {"hidden_size": 128}} -> {"model.hidden_size": 128}: how differing keys are named."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def differing_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    a, b = flatten(old), flatten(new)
    return sorted(k for k in set(a) | set(b) if a.get(k, "<absent>") != b.get(k, "<absent>"))
