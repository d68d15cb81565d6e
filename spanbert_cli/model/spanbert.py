"""The SpanBERT model: a BERT encoder with the masked-LM head and the Span Boundary Objective (SBO) head.

Read top-down, in order of use:

1. `ModelConfig` and `PRESETS`: the architecture, validated, with JSON and Hugging Face round trips.
2. `Embeddings`, `EncoderLayer`, `BertEncoder`: BERT as published (post-LayerNorm, exact-erf GeLU).
3. `MLMHead`, `SBOHead`: the two pretraining heads, both tied to the word embeddings (docs/algorithm.md §3).
4. `SpanBert`: encoder + heads, and the loss. Heads run only at target positions: the model never
   builds a [batch, seq, vocab] logits tensor, which at base size would be the largest tensor in training.
5. Hugging Face interop: `hf_config_dict`, `to_hf_state_dict`, `from_hf_state_dict`.

Submodules are named after Hugging Face's `BertForMaskedLM`, so that our state_dict keys *are* its keys
(`bert.encoder.layer.3.attention.self.query.weight`, ...) and conversion is renaming-free. The SBO head,
which Hugging Face has no class for, lives under `sbo.*`.

Shapes in comments: B batch, T sequence length, H hidden size, V vocabulary, nh heads, hd = H / nh,
M number of MLM targets, N number of SBO targets.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from spanbert_cli.errors import ArtifactError, UsageError

IGNORE_INDEX = -100  # label value for padded target slots; they count in neither loss nor accuracy
#: The keyword arguments of `SpanBert.forward` that carry a batch's pretraining targets (the collator's
#: keys of the same names): `model(ids, mask, **targets(batch))`.
TARGET_KEYS = ("mlm_positions", "mlm_labels", "sbo_left", "sbo_right", "sbo_rel_pos", "sbo_labels")


def targets(batch: dict[str, Any]) -> dict[str, Any]:
    """The pretraining targets of a collated batch, as `SpanBert.forward` takes them."""
    return {k: batch[k] for k in TARGET_KEYS}


# --------------------------------------------------------------------------------------------------------
# 1. Configuration
# --------------------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------------------
# 2. The BERT encoder
# --------------------------------------------------------------------------------------------------------


class Embeddings(nn.Module):
    """word + absolute position + token type, then LayerNorm and dropout (BERT)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.max_positions = cfg.max_position_embeddings
        # padding_idx as in BERT: the [PAD] row receives no gradient through the input lookup.
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        T = input_ids.shape[1]
        if self.max_positions < T:
            raise UsageError(f"sequence length {T} exceeds max_position_embeddings {self.max_positions}")
        x = self.word_embeddings(input_ids)  # [B, T, H]
        # Positions are 0..T-1 in every row, so a slice of the table is the lookup, broadcast over B.
        x = x + self.position_embeddings.weight[:T]  # [T, H]
        if token_type_ids is None:
            # SpanBERT trains on single segments (§1.3): every token has type 0.
            x = x + self.token_type_embeddings.weight[0]  # [H]
        else:
            x = x + self.token_type_embeddings(token_type_ids)  # [B, T, H]
        return self.dropout(self.LayerNorm(x))


class EncoderLayer(nn.Module):
    """One post-LayerNorm Transformer layer: x = LN(x + Attn(x)); x = LN(x + FFN(x)).

    The ModuleDicts only namespace the parameters like Hugging Face's BertLayer
    (attention.self.query, attention.output.dense, intermediate.dense, output.dense, ...), so that
    state_dict keys convert one-to-one; the computation is all in forward().
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        H, inner = cfg.hidden_size, cfg.intermediate_size
        assert inner is not None  # filled in by ModelConfig.__post_init__
        self.num_heads, self.head_dim = cfg.num_heads, cfg.head_dim
        self.attention_dropout = cfg.attention_dropout
        self.attention = nn.ModuleDict(
            {
                "self": nn.ModuleDict(
                    {"query": nn.Linear(H, H), "key": nn.Linear(H, H), "value": nn.Linear(H, H)}
                ),
                "output": nn.ModuleDict(
                    {"dense": nn.Linear(H, H), "LayerNorm": nn.LayerNorm(H, eps=cfg.layer_norm_eps)}
                ),
            }
        )
        self.intermediate = nn.ModuleDict({"dense": nn.Linear(H, inner)})
        self.output = nn.ModuleDict(
            {"dense": nn.Linear(inner, H), "LayerNorm": nn.LayerNorm(H, eps=cfg.layer_norm_eps)}
        )
        self.dropout = nn.Dropout(cfg.hidden_dropout)  # on each sublayer's output, before the residual

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values, [B, nh, T, hd] each, from one [H, 3H] matrix multiplication.

        The three projections stay separate parameters (Hugging Face's names and shapes) and are
        concatenated per call: one wide GEMM instead of three narrow ones, and in the backward pass one
        GEMM for the input's gradient instead of three plus two additions of [B, T, H] tensors.
        """
        B, T, _ = x.shape
        proj = self.attention["self"]
        weight = torch.cat([proj[name].weight for name in ("query", "key", "value")])  # [3H, H]
        bias = torch.cat([proj[name].bias for name in ("query", "key", "value")])  # [3H]
        qkv = F.linear(x, weight, bias).view(B, T, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # views; the head dimension stays contiguous
        return q, k, v

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        # x: [B, T, H]; attn_mask: [B, 1, 1, T] bool, True = key is a real token (broadcast over heads
        # and queries: padded queries still compute something, but nothing reads them).
        B, T, H = x.shape
        q, k, v = self._qkv(x)
        a = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=self.attention_dropout if self.training else 0.0,
        )  # [B, nh, T, hd]
        a = a.transpose(1, 2).reshape(B, T, H)  # heads back side by side: [B, T, H]
        out = self.attention["output"]
        x = out["LayerNorm"](x + self.dropout(out["dense"](a)))

        h = F.gelu(self.intermediate["dense"](x))  # [B, T, 4H typically], exact erf GeLU as in BERT
        x = self.output["LayerNorm"](x + self.dropout(self.output["dense"](h)))  # [B, T, H]
        return x


class BertEncoder(nn.Module):
    """Embeddings + L layers. Matches Hugging Face's BertModel without the pooler (SpanBERT has no NSP)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.embeddings = Embeddings(cfg)
        self.encoder = nn.ModuleDict(
            {"layer": nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.num_layers))}
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = self.embeddings(input_ids, token_type_ids)  # [B, T, H]
        # None means "no padding": SDPA can then pick its fastest (mask-free) kernel.
        attn_mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]  # [B,1,1,T]
        for layer in self.encoder["layer"]:
            x = layer(x, attn_mask)
        return x


# --------------------------------------------------------------------------------------------------------
# 3. The pretraining heads. Both take the tied word-embedding matrix E [V, H] as an argument rather than
#    holding it, so there is exactly one copy of it in the state_dict.
# --------------------------------------------------------------------------------------------------------


class MLMHead(nn.Module):
    """BERT's masked-LM head: dense -> GeLU -> LayerNorm -> E^T + bias (Hugging Face cls.predictions)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        H = cfg.hidden_size
        self.transform = nn.ModuleDict(
            {"dense": nn.Linear(H, H), "LayerNorm": nn.LayerNorm(H, eps=cfg.layer_norm_eps)}
        )
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def forward(self, h: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        # h: [M, H] hidden states at the masked positions only -> logits [M, V]
        h = self.transform["LayerNorm"](F.gelu(self.transform["dense"](h)))
        return F.linear(h, word_embeddings, self.bias)


class SBOHead(nn.Module):
    """Span Boundary Objective (§4): predict x_i from X_{s-1}, X_{e+1} and its relative position i - s.

        h0 = [X_{s-1}; X_{e+1}; P_{i-s}]       [N, 2H + D]
        h1 = LayerNorm(GeLU(W1 h0))             [N, H]
        y  = LayerNorm(GeLU(W2 h1))             [N, H]
        logits = y E^T + b_sbo                  [N, V]

    P is 0-based here: the paper's P_1 (first token of the span) is row 0.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        H, D = cfg.hidden_size, cfg.sbo_position_dim
        self.position_embeddings = nn.Embedding(cfg.sbo_num_positions, D)
        # "LayerNorm" in the names, as everywhere else, so the usual no-weight-decay rule
        # ("bias" or "LayerNorm" in the parameter name) needs no special case for this head.
        self.dense1 = nn.Linear(2 * H + D, H)
        self.LayerNorm1 = nn.LayerNorm(H, eps=cfg.layer_norm_eps)
        self.dense2 = nn.Linear(H, H)
        self.LayerNorm2 = nn.LayerNorm(H, eps=cfg.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def forward(
        self, left: torch.Tensor, right: torch.Tensor, rel_pos: torch.Tensor, word_embeddings: torch.Tensor
    ) -> torch.Tensor:
        # left, right: [N, H] boundary states; rel_pos: [N] in [0, sbo_num_positions) -> logits [N, V]
        h = torch.cat([left, right, self.position_embeddings(rel_pos)], dim=-1)  # [N, 2H + D]
        h = self.LayerNorm1(F.gelu(self.dense1(h)))
        h = self.LayerNorm2(F.gelu(self.dense2(h)))
        return F.linear(h, word_embeddings, self.bias)


# --------------------------------------------------------------------------------------------------------
# 4. The full model
# --------------------------------------------------------------------------------------------------------


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Mean CE over labels != IGNORE_INDEX, plus (correct, count); 0 loss when there is no target.

    The CE runs in fp32 even under autocast: a bf16 log-softmax over 30k classes loses the small
    probabilities that make up most of the loss. Dividing by max(count, 1) rather than branching on the
    count keeps the step free of host syncs and the graph the same whether or not there are targets.
    """
    valid = labels != IGNORE_INDEX  # [M]
    count = valid.sum()
    loss = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="sum")
    loss = loss / count.clamp(min=1)
    with torch.no_grad():
        correct = ((logits.argmax(dim=-1) == labels) & valid).sum()
    return loss, correct, count


class SpanBert(nn.Module):
    """BERT encoder + MLM head + SBO head. State dict keys: bert.*, cls.predictions.*, sbo.*"""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.config = cfg
        self.bert = BertEncoder(cfg)
        self.cls = nn.ModuleDict({"predictions": MLMHead(cfg)})
        self.sbo = SBOHead(cfg)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        # BERT's scheme: N(0, initializer_range) for every matrix and embedding, zero biases, unit
        # LayerNorm. Applied in module order, so the result depends only on the torch seed.
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, (MLMHead, SBOHead)):
            nn.init.zeros_(module.bias)

    @property
    def word_embeddings(self) -> torch.Tensor:
        return self.bert.embeddings.word_embeddings.weight  # [V, H], tied input and output embedding

    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """input_ids [B, T], attention_mask [B, T] (True / 1 = real token) -> hidden states [B, T, H]."""
        return self.bert(input_ids, attention_mask, token_type_ids)

    def mlm_logits(self, hidden_at_positions: torch.Tensor) -> torch.Tensor:
        """[M, H] -> [M, V]. Select the positions first: never call this on all B*T states during training."""
        return self.cls["predictions"](hidden_at_positions, self.word_embeddings)

    def sbo_logits(self, left: torch.Tensor, right: torch.Tensor, rel_pos: torch.Tensor) -> torch.Tensor:
        """Boundary states [N, H] x2 and 0-based relative positions [N] -> [N, V]."""
        return self.sbo(left, right, rel_pos, self.word_embeddings)

    def forward(
        self,
        input_ids: torch.Tensor,  # [B, T]
        attention_mask: torch.Tensor | None,  # [B, T] bool, True = real token
        mlm_positions: torch.Tensor | None = None,  # [M] indices into the flattened [B*T] states: b*T + t
        mlm_labels: torch.Tensor | None = None,  # [M] original token ids, IGNORE_INDEX for padded slots
        sbo_positions: torch.Tensor | None = None,  # [N] b*T + i of each SBO target (not needed by the loss)
        sbo_left: torch.Tensor | None = None,  # [N] b*T + (s - 1): left boundary of the target's span
        sbo_right: torch.Tensor | None = None,  # [N] b*T + (e + 1): right boundary
        sbo_rel_pos: torch.Tensor | None = None,  # [N] i - s, in [0, sbo_num_positions)
        sbo_labels: torch.Tensor | None = None,  # [N] original token ids, IGNORE_INDEX for padded slots
        sbo_weight: float = 1.0,
    ) -> dict[str, torch.Tensor]:
        """Pretraining step. With no labels at all, returns only {"hidden_states": [B, T, H]}.

        Otherwise returns loss = mean MLM CE + sbo_weight * mean SBO CE and its parts; the correct/count
        entries are 0-dim long tensors (left on the device: reading them is the caller's sync to make).
        sbo_weight == 0 skips the SBO head entirely (its parameters then get no gradient at all).
        """
        hidden = self.encode(input_ids, attention_mask)  # [B, T, H]
        if mlm_labels is None and sbo_labels is None:
            return {"hidden_states": hidden}

        flat = hidden.reshape(-1, hidden.shape[-1])  # [B*T, H], a view: the heads gather from it
        zero_loss = flat.new_zeros((), dtype=torch.float32)
        zero_count = torch.zeros((), dtype=torch.long, device=flat.device)
        out: dict[str, torch.Tensor] = {
            "mlm_loss": zero_loss,
            "mlm_correct": zero_count,
            "mlm_count": zero_count,
            "sbo_loss": zero_loss,
            "sbo_correct": zero_count,
            "sbo_count": zero_count,
        }

        if mlm_labels is not None:
            if mlm_positions is None:
                raise ValueError("mlm_labels given without mlm_positions")
            logits = self.mlm_logits(flat.index_select(0, mlm_positions))  # [M, V]
            out["mlm_loss"], out["mlm_correct"], out["mlm_count"] = _cross_entropy(logits, mlm_labels)

        if sbo_labels is not None and sbo_weight != 0:
            if sbo_left is None or sbo_right is None or sbo_rel_pos is None:
                raise ValueError("sbo_labels given without sbo_left, sbo_right and sbo_rel_pos")
            logits = self.sbo_logits(
                flat.index_select(0, sbo_left), flat.index_select(0, sbo_right), sbo_rel_pos
            )  # [N, V]
            out["sbo_loss"], out["sbo_correct"], out["sbo_count"] = _cross_entropy(logits, sbo_labels)

        out["loss"] = out["mlm_loss"] + sbo_weight * out["sbo_loss"]
        return out

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def load_hf_weights(self, state: dict[str, torch.Tensor]) -> HFLoadResult:
        """Load a Hugging Face BertForMaskedLM / BertForPreTraining / BertModel state dict (see below)."""
        return load_hf_weights(self, state)


# --------------------------------------------------------------------------------------------------------
# 5. Hugging Face interop. Our names are Hugging Face's, so conversion is about the edges:
#    - the tied decoder: HF's state_dict has cls.predictions.decoder.weight (= word embeddings) and
#      cls.predictions.decoder.bias (= cls.predictions.bias); save_pretrained writes neither.
#    - old checkpoints: a bert.embeddings.position_ids buffer, TF-era LayerNorm.gamma / .beta names.
#    - BertModel checkpoints: no "bert." prefix, a pooler, no MLM head.
#    - BertForPreTraining checkpoints: an NSP head (cls.seq_relationship.*), which SpanBERT drops.
# --------------------------------------------------------------------------------------------------------

_TIED_DECODER_WEIGHT = "cls.predictions.decoder.weight"
_TIED_DECODER_BIAS = "cls.predictions.decoder.bias"
_MLM_BIAS = "cls.predictions.bias"


def hf_config_dict(cfg: ModelConfig) -> dict[str, Any]:
    """A config.json that `transformers.BertForMaskedLM.from_pretrained` reads; the SBO settings ride along
    as extra keys (BertConfig keeps unknown keys), so `ModelConfig.from_hf_config` round-trips."""
    return {
        "architectures": ["BertForMaskedLM"],
        "model_type": "bert",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.intermediate_size,
        "hidden_act": "gelu",
        "hidden_dropout_prob": cfg.hidden_dropout,
        "attention_probs_dropout_prob": cfg.attention_dropout,
        "max_position_embeddings": cfg.max_position_embeddings,
        "type_vocab_size": cfg.type_vocab_size,
        "initializer_range": cfg.initializer_range,
        "layer_norm_eps": cfg.layer_norm_eps,
        "pad_token_id": cfg.pad_token_id,
        "position_embedding_type": "absolute",
        "tie_word_embeddings": True,
        "sbo_num_positions": cfg.sbo_num_positions,
        "sbo_position_dim": cfg.sbo_position_dim,
    }


def to_hf_state_dict(
    model: SpanBert, include_tied: bool = False
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """-> (encoder + MLM head under Hugging Face BertForMaskedLM keys, SBO head under sbo.* keys).

    Tensors are detached and share storage with the model (like state_dict()): copy them before the
    model trains on. The default matches what save_pretrained writes (no tied decoder keys), which
    safetensors accepts. include_tied=True adds cls.predictions.decoder.weight / .bias, for a strict
    `BertForMaskedLM.load_state_dict`; those alias other entries, so do not write that form to safetensors.
    """
    state = {key: value.detach() for key, value in model.state_dict().items()}
    sbo = {key: value for key, value in state.items() if key.startswith("sbo.")}
    hf = {key: value for key, value in state.items() if not key.startswith("sbo.")}
    if include_tied:
        hf[_TIED_DECODER_WEIGHT] = hf["bert.embeddings.word_embeddings.weight"]
        hf[_TIED_DECODER_BIAS] = hf[_MLM_BIAS]
    return hf, sbo


class HFLoadResult(NamedTuple):
    initialized: list[str]  # our keys the checkpoint lacked, left at their fresh initialisation
    ignored: list[str]  # checkpoint keys we have no use for (pooler, NSP head, buffers, tied copies)


def _normalise_hf_key(key: str) -> str:
    # BertModel saves without the "bert." prefix; TF-converted checkpoints name LayerNorm gamma / beta.
    if key.startswith(("embeddings.", "encoder.", "pooler.")):
        key = "bert." + key
    if key.endswith(".gamma"):
        key = key[: -len("gamma")] + "weight"
    elif key.endswith(".beta"):
        key = key[: -len("beta")] + "bias"
    return key


def load_hf_weights(model: SpanBert, state: dict[str, torch.Tensor]) -> HFLoadResult:
    """Copy a Hugging Face BERT state dict (optionally merged with our sbo.* keys) into `model`.

    Tolerated: a missing MLM head (continued pretraining from a plain BertModel) and a missing SBO head;
    both keep their fresh initialisation and are listed in `initialized`. Keys outside our namespaces
    (pooler, NSP head, task heads) are listed in `ignored`. Errors (ArtifactError): a missing encoder
    tensor, an unexpected tensor inside bert.* / cls.predictions.* / sbo.* (a config mismatch, e.g. more
    layers), a shape mismatch, or an MLM / SBO head present only in part.
    """
    ours = model.state_dict()
    incoming: dict[str, torch.Tensor] = {}
    ignored: list[str] = []
    for raw_key, value in state.items():
        key = _normalise_hf_key(raw_key)
        if key in ours:
            incoming[key] = value
        elif key in ("bert.embeddings.position_ids", "bert.embeddings.token_type_ids", _TIED_DECODER_WEIGHT):
            ignored.append(raw_key)  # buffers we compute on the fly; the decoder weight is the embedding
        elif key == _TIED_DECODER_BIAS:
            ignored.append(raw_key)  # the same tensor as cls.predictions.bias in HF, used if that is absent
        elif key.startswith(("bert.pooler.", "cls.seq_relationship.")) or not key.startswith(
            ("bert.", "cls.predictions.", "sbo.")
        ):
            ignored.append(raw_key)
        else:
            raise ArtifactError(
                f"checkpoint tensor {raw_key!r} has no place in this model "
                f"(does the model config match the checkpoint?)"
            )
    if _MLM_BIAS not in incoming and _TIED_DECODER_BIAS in state:
        incoming[_MLM_BIAS] = state[_TIED_DECODER_BIAS]

    initialized: list[str] = []
    for prefix, optional in (("bert.", False), ("cls.predictions.", True), ("sbo.", True)):
        expected = [key for key in ours if key.startswith(prefix)]
        missing = [key for key in expected if key not in incoming]
        if missing and not (optional and len(missing) == len(expected)):
            shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            raise ArtifactError(f"checkpoint lacks {shown}")
        initialized += missing

    for key, value in incoming.items():
        if tuple(value.shape) != tuple(ours[key].shape):
            raise ArtifactError(
                f"checkpoint tensor {key} has shape {tuple(value.shape)}, the model config "
                f"expects {tuple(ours[key].shape)}"
            )
    with torch.no_grad():
        for key, value in incoming.items():
            ours[key].copy_(value)  # state_dict() tensors alias the parameters; copy_ also casts fp16 -> fp32
    return HFLoadResult(initialized=initialized, ignored=ignored)


def from_hf_state_dict(state: dict[str, torch.Tensor], cfg: ModelConfig) -> SpanBert:
    """A fresh SpanBert(cfg) with `state` loaded (see load_hf_weights for what is tolerated)."""
    model = SpanBert(cfg)
    load_hf_weights(model, state)
    return model
