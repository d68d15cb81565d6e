"""`PretrainConfig`: every setting of `spanbert pretrain`, documented where declared, validated at once.

The fields split in two groups, and the split matters:

* what determines the trained weights (model, optimisation, masking, precision, seed): these are the run
  artifact's fingerprinted parameters, and `--resume` refuses to continue with any of them changed;
* what does not (device, data-loader workers, how often to log, evaluate and save, how many checkpoints
  to keep, TensorBoard, Weights & Biases): `RUNTIME_FIELDS`, free to change between a run and its resumption.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from spanbert_cli.errors import UsageError
from spanbert_cli.masking import MASKING_FIELDS, MaskingConfig
from spanbert_cli.options import option, same_option

PRECISIONS = ("auto", "bf16", "bf16-master", "fp16", "fp32")
DEVICES = ("auto", "cpu", "cuda")
DEFAULT_PRESET = "base"
# Where `spanbert pretrain --help` lists the options.
MODEL = "Model"
OPTIM = "Optimisation"
RUN = "Logging, checkpoints, resumption"
PAPER_WARMUP_STEPS = 10_000
WANDB_INSTALL = "pip install 'spanbert[wandb]' (or pip install wandb)"
# Characters W&B refuses in a project name.
_NOT_IN_PROJECT = ("/", "\\", "#", "?", "%", ":")

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
        "wandb",
        "wandb_project",
        "compile",
        "world_size",
    }
)


@dataclass(frozen=True)
class PretrainConfig:
    """Parameters of `spanbert pretrain`. Defaults are the paper's (docs/algorithm.md §5) where it has
    one."""

    # ---- model ---------------------------------------------------------------------------------------
    model: str | None = option(
        None,
        "Model preset: tiny, mini, small, base or large (default: base).",
        panel=MODEL,
        show_default=False,
    )
    model_config: str | None = option(
        None,
        "Architecture from a JSON file (our keys or a Hugging Face config.json).",
        panel=MODEL,
        show_default=False,
    )
    init_from: str | None = option(
        None,
        "Start from these weights: a run, checkpoint, export or Hugging Face BERT directory.",
        panel=MODEL,
        show_default=False,
    )

    # ---- optimisation --------------------------------------------------------------------------------
    lr: float = option(1e-4, "Peak learning rate, reached after the warm-up.", panel=OPTIM)
    warmup_steps: int | None = option(
        None, "Linear warm-up steps (default: min(10000, max-steps / 10)).", panel=OPTIM, show_default=False
    )
    max_steps: int = option(
        2_400_000, "Optimizer steps; the learning rate decays linearly to 0 at this step.", panel=OPTIM
    )
    batch_size: int = option(256, "Sequences per optimizer step (all processes together).", panel=OPTIM)
    micro_batch_size: int | None = option(
        None,
        "Sequences per forward/backward pass, for gradient accumulation (default: --batch-size / processes).",
        panel=OPTIM,
        show_default=False,
    )
    weight_decay: float = option(
        0.01, "AdamW weight decay (not on biases and LayerNorm weights).", panel=OPTIM
    )
    adam_beta1: float = option(0.9, "AdamW beta1.", panel=OPTIM)
    adam_beta2: float = option(0.999, "AdamW beta2.", panel=OPTIM)
    adam_eps: float = option(1e-8, "AdamW epsilon.", panel=OPTIM)
    grad_clip: float = option(1.0, "Clip the gradient to this global L2 norm (0: off).", panel=OPTIM)
    precision: str = option(
        "auto",
        "auto (fp32 on CPU, bf16 or fp16 on GPU), bf16 or fp16 (autocast), fp32, or bf16-master (bf16 "
        "weights and activations, fp32 master weights; no autocast casts).",
        panel=OPTIM,
    )

    # ---- objective -----------------------------------------------------------------------------------
    scheme: str = same_option(MaskingConfig, "scheme")
    mask_ratio: float = same_option(MaskingConfig, "mask_ratio")
    geometric_p: float = same_option(MaskingConfig, "geometric_p")
    max_span_len: int = same_option(MaskingConfig, "max_span_len")
    span_len: int | None = same_option(MaskingConfig, "span_len")
    sbo_weight: float = option(1.0, "Weight of the span boundary objective (0: off).", panel="Masking")

    seed: int = option(0, "Random seed: model initialisation, data order, masks and dropout.")

    # ---- runtime (not fingerprinted) ---------------------------------------------------------------
    device: str = option("auto", "auto, cpu or cuda.")
    num_workers: int = option(2, "Data-loader worker processes (0: load in the training process).")
    log_every: int = option(10, "Steps between lines of metrics.jsonl and progress updates.", panel=RUN)
    eval_every: int = option(
        1000, "Steps between validations on the valid split (0: at the end only, -1: never).", panel=RUN
    )
    eval_sequences: int = option(0, "Valid sequences per validation (0: the whole split).", panel=RUN)
    save_every: int = option(1000, "Steps between checkpoints (the last step is always saved).", panel=RUN)
    keep_last: int = option(3, "Checkpoints kept (0: all).", panel=RUN)
    tensorboard: bool = option(False, "Also log to RUN/tensorboard (needs tensorboard).", panel=RUN)
    wandb: bool = option(
        False,
        "Also log to Weights & Biases (needs the wandb package); --resume continues the same W&B run.",
        panel=RUN,
    )
    wandb_project: str = option("spanbert", "The W&B project of --wandb.", panel=RUN)
    compile: bool = option(
        False, "torch.compile the whole model, heads and losses included (GPU; the first steps are slow)."
    )
    # Processes training together (set from the launcher's process group, not a recipe setting). The
    # batch is global: each optimizer step accumulates batch_size / (world_size * micro_batch_size)
    # micro-batches on every process.
    world_size: int = option(1, "Processes training together (set by the launcher).", cli=False)

    # ---- resolution ----------------------------------------------------------------------------------

    @property
    def masking(self) -> MaskingConfig:
        return MaskingConfig(**{name: getattr(self, name) for name in MASKING_FIELDS})

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

        from spanbert_cli.model.config import PRESETS

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
        problems += self._wandb_problems()
        if problems:
            raise UsageError("; ".join(problems))

    def _wandb_problems(self) -> list[str]:
        # Checked with the rest, so a missing package stops a recipe before its first stage, not hours later.
        problems = []
        project = self.wandb_project
        if not isinstance(project, str) or not project.strip() or any(c in project for c in _NOT_IN_PROJECT):
            problems.append(
                f"--wandb-project must be a non-empty name without any of {' '.join(_NOT_IN_PROJECT)}, "
                f"got {project!r}"
            )
        if self.wandb and not installed("wandb"):
            problems.append(f"--wandb: the wandb package is not installed; {WANDB_INSTALL}")
        return problems

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


def installed(package: str) -> bool:
    """Whether `package` can be imported, found without importing it (wandb takes a second to import)."""
    import importlib.util

    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # ValueError: blocked (None in sys.modules), or a module without spec
        return False


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
