"""The architecture: `ModelConfig` (validated, with JSON and Hugging Face config round trips) and the
presets. Torch-free, so that the command line and the recipes can check a model before loading torch."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spanbert_cli.errors import UsageError

#: Bumped when the same parameters give other numbers, so that artifacts computed before are not taken
#: for up to date: 2 = the unpadded encoder (and, in training, fused AdamW on CPU). In the fingerprints
#: of pretraining, eval squad and eval mlm.
NUMERICS_VERSION = 2

# name -> (num_layers, hidden_size, num_heads). base and large are BERT's; the small ones are for tests,
# smoke runs and CPU experiments.
PRESETS: dict[str, tuple[int, int, int]] = {
    "tiny": (2, 128, 2),
    "mini": (4, 256, 4),
    "small": (4, 512, 8),
    "base": (12, 768, 12),
    "large": (24, 1024, 16),
}


@dataclass
class ModelConfig:
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int | None = None  # None -> 4 * hidden_size, as in BERT
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int = 0
    sbo_num_positions: int = 15  # relative positions inside a span the SBO head can predict (§4)
    sbo_position_dim: int = 200  # width of the SBO relative-position embedding

    def __post_init__(self) -> None:
        if self.intermediate_size is None:
            self.intermediate_size = 4 * self.hidden_size if isinstance(self.hidden_size, int) else None
        self.validate()

    def validate(self) -> None:
        """Raise UsageError, one line, on the first inconsistent setting."""

        def integer(name: str, minimum: int) -> None:
            value = getattr(self, name)
            # bool is an int subclass; `true` in a JSON file is a mistake, not 1.
            if not isinstance(value, int) or isinstance(value, bool):
                raise UsageError(f"model config: {name} must be an integer, got {value!r}")
            if value < minimum:
                raise UsageError(f"model config: {name} must be >= {minimum}, got {value}")

        def number(name: str) -> float:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
                raise UsageError(f"model config: {name} must be a number, got {value!r}")
            return value

        for name in (
            "vocab_size",
            "hidden_size",
            "num_layers",
            "num_heads",
            "intermediate_size",
            "max_position_embeddings",
            "type_vocab_size",
            "sbo_num_positions",
            "sbo_position_dim",
        ):
            integer(name, 1)
        integer("pad_token_id", 0)
        if self.hidden_size % self.num_heads:
            raise UsageError(
                f"model config: hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}"
            )
        if self.pad_token_id >= self.vocab_size:
            raise UsageError(
                f"model config: pad_token_id {self.pad_token_id} is outside the vocabulary "
                f"(vocab_size {self.vocab_size})"
            )
        for name in ("hidden_dropout", "attention_dropout"):
            if not 0.0 <= number(name) < 1.0:
                raise UsageError(f"model config: {name} must be in [0, 1), got {getattr(self, name)}")
        for name in ("layer_norm_eps", "initializer_range"):
            if not number(name) > 0.0:
                raise UsageError(f"model config: {name} must be > 0, got {getattr(self, name)}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    # ---- serialisation ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        if not isinstance(data, dict):
            raise UsageError(f"model config must be a JSON object, got {type(data).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise UsageError(f"model config: unknown key(s) {', '.join(unknown)} (known: {', '.join(names)})")
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        missing = [name for name in required if name not in data]
        if missing:
            raise UsageError(f"model config: missing key(s) {', '.join(missing)}")
        return cls(**data)

    @classmethod
    def from_preset(cls, name: str, vocab_size: int, **overrides: Any) -> ModelConfig:
        """A preset's shape plus overrides. Overrides that are None are ignored (CLI options left unset)."""
        if name not in PRESETS:
            raise UsageError(f"unknown model preset {name!r} (choose from {', '.join(PRESETS)})")
        num_layers, hidden_size, num_heads = PRESETS[name]
        data: dict[str, Any] = {
            "vocab_size": vocab_size,
            "hidden_size": hidden_size,
            "num_layers": num_layers,
            "num_heads": num_heads,
        }
        data.update({key: value for key, value in overrides.items() if value is not None})
        return cls.from_dict(data)

    @classmethod
    def from_json_file(cls, path: str | Path, **overrides: Any) -> ModelConfig:
        """`--model-config FILE.json`: our own keys, or a Hugging Face BERT config.json (has "model_type").

        Overrides (typically vocab_size, which comes from the tokenizer) win over the file; None is ignored.
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise UsageError(f"cannot read model config {path}: {exc.strerror or exc}") from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UsageError(f"model config {path} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise UsageError(f"model config {path} must hold a JSON object")
        overrides = {key: value for key, value in overrides.items() if value is not None}
        try:
            if "model_type" in data:  # a Hugging Face config.json: translate its names, then override
                data = cls.from_hf_config(data).to_dict()
            return cls.from_dict({**data, **overrides})
        except UsageError as e:  # name the file: the message alone says only what is wrong in it
            raise UsageError(f"model config {path}: {str(e).removeprefix('model config: ')}") from None

    @classmethod
    def from_hf_config(cls, hf: dict[str, Any]) -> ModelConfig:
        """From a Hugging Face BertConfig dict (config.json). Only what this model implements is accepted."""
        if hf.get("model_type", "bert") != "bert":
            raise UsageError(
                f"Hugging Face config has model_type {hf.get('model_type')!r}; only 'bert' is supported"
            )
        if hf.get("hidden_act", "gelu") != "gelu":
            raise UsageError(
                f"Hugging Face config has hidden_act {hf.get('hidden_act')!r}; only 'gelu' "
                "(exact erf) is supported"
            )
        if hf.get("position_embedding_type", "absolute") != "absolute":
            raise UsageError(
                f"Hugging Face config has position_embedding_type "
                f"{hf.get('position_embedding_type')!r}; only 'absolute' is supported"
            )
        if hf.get("is_decoder") or hf.get("add_cross_attention"):
            raise UsageError(
                "Hugging Face config is a decoder / cross-attention BERT; only the encoder is supported"
            )
        renames = {  # ours <- Hugging Face's
            "vocab_size": "vocab_size",
            "hidden_size": "hidden_size",
            "num_layers": "num_hidden_layers",
            "num_heads": "num_attention_heads",
            "intermediate_size": "intermediate_size",
            "max_position_embeddings": "max_position_embeddings",
            "type_vocab_size": "type_vocab_size",
            "hidden_dropout": "hidden_dropout_prob",
            "attention_dropout": "attention_probs_dropout_prob",
            "layer_norm_eps": "layer_norm_eps",
            "initializer_range": "initializer_range",
            "pad_token_id": "pad_token_id",
            # written by hf_config_dict so that our checkpoints round-trip; absent from plain BERT configs
            "sbo_num_positions": "sbo_num_positions",
            "sbo_position_dim": "sbo_position_dim",
        }
        data = {ours: hf[theirs] for ours, theirs in renames.items() if hf.get(theirs) is not None}
        return cls.from_dict(data)
