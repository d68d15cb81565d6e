"""The SpanBERT model: a BERT encoder with the masked-LM head and the Span Boundary Objective (SBO) head.

Read top-down, in order of use:

1. `ModelConfig` and `PRESETS` (in `config.py`): the architecture, validated, with JSON and Hugging
   Face round trips.
2. `Packed`, `varlen_attention`, `Embeddings`, `EncoderLayer`, `BertEncoder`: BERT as published
   (post-LayerNorm, exact-erf GeLU), run on the batch's real tokens only (see below).
3. `MLMHead`, `SBOHead`: the two pretraining heads, both tied to the word embeddings (docs/algorithm.md §3).
4. `SpanBert`: encoder + heads, and the loss. Heads run only at target positions: the model never
   builds a [batch, seq, vocab] logits tensor, which at base size would be the largest tensor in training.
5. Hugging Face interop: `hf_config_dict`, `to_hf_state_dict`, `from_hf_state_dict`.

Submodules are named after Hugging Face's `BertForMaskedLM`, so that our state_dict keys *are* its keys
(`bert.encoder.layer.3.attention.self.query.weight`, ...) and conversion is renaming-free. The SBO head,
which Hugging Face has no class for, lives under `sbo.*`.

Unpadded: a micro-batch's real tokens are laid end to end, `[N, H]` for N real tokens, with the offsets
of its sequences (`Packed`). Embeddings, projections, feed-forward, LayerNorm, dropout and the heads
touch real tokens only; attention is variable-length: FlashAttention's varlen kernels on CUDA, one
SDPA call per sequence on CPU (the fastest of the alternatives `benchmarks/bench_attention.py`
measures), and the attention alone padded to the longest sequence under torch.compile. The padded layout (`[B, T]` ids and an attention mask) runs
the same layers and is kept as the reference the tests compare against.

Shapes in comments: B batch, T sequence length, N real tokens of the batch, H hidden size, V vocabulary,
nh heads, hd = H / nh, M number of MLM targets, S number of SBO targets.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from spanbert_cli.errors import ArtifactError, UsageError
from spanbert_cli.model.config import NUMERICS_VERSION, PRESETS, ModelConfig  # noqa: F401 (also importable from here)

IGNORE_INDEX = -100  # label value for padded target slots; they count in neither loss nor accuracy
#: The keyword arguments of `SpanBert.forward` that carry a batch's pretraining targets (the collator's
#: keys of the same names): `model(ids, mask, **targets(batch))`.
TARGET_KEYS = ("mlm_positions", "mlm_labels", "sbo_left", "sbo_right", "sbo_rel_pos", "sbo_labels")


def targets(batch: dict[str, Any]) -> dict[str, Any]:
    """The pretraining targets of a collated batch, as `SpanBert.forward` takes them."""
    return {k: batch[k] for k in TARGET_KEYS}


def encoder_inputs(host: dict[str, Any], device: dict[str, Any] | None = None) -> dict[str, Any]:
    """The encoder's inputs of a collated batch (`masking.collate`), as `SpanBert.forward` takes them:
    `{input_ids, packed}` unpadded, `{input_ids, attention_mask}` padded. `device` is the batch moved to
    the model's device; sizes are read from the `host` copy, so that no step waits on the device.
    A padded batch without padding gets no mask: SDPA can then use its fastest kernels."""
    dev = host if device is None else device
    if "cu_seqlens" in host:
        packed = Packed(dev["cu_seqlens"], int(host["max_seqlen"]), dev["position_ids"], dev["padded_index"])
        return {"input_ids": dev["input_ids"], "packed": packed}
    mask = None if bool(host["attention_mask"].all()) else dev["attention_mask"]
    return {"input_ids": dev["input_ids"], "attention_mask": mask}


# --------------------------------------------------------------------------------------------------------
# 1. Configuration: `ModelConfig` and `PRESETS`, in model/config.py (torch-free)
# --------------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------------
# 2. The BERT encoder
# --------------------------------------------------------------------------------------------------------


class Packed(NamedTuple):
    """Where the sequences of an unpadded micro-batch lie among its N real tokens.

    Token t of sequence b is row `cu_seqlens[b] + t`. `padded_index` is where that token would sit in the
    batch padded to its longest sequence (`b * max_seqlen + t`): the attention fallback scatters there.
    The collators (`masking.collate`, SQuAD's `Features.packed_batch`) make all of it on the host.
    """

    cu_seqlens: torch.Tensor  # [B + 1] int32, 0 first, N last
    max_seqlen: int  # the longest sequence (a Python int: the kernels take it as one)
    position_ids: torch.Tensor  # [N] t of each token
    padded_index: torch.Tensor  # [N] b * max_seqlen + t

    @property
    def batch_size(self) -> int:
        return self.cu_seqlens.shape[0] - 1


def pack(input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, Packed]:
    """A right-padded [B, T] batch (as a Hugging Face tokenizer returns it) as the unpadded encoder takes
    it: the real tokens' ids [N] and their `Packed` layout. `unpack` puts [N, ...] results back."""
    mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    lengths = mask.sum(dim=1)
    T = int(lengths.max())
    mask = mask[:, :T]
    if not torch.equal(mask, torch.arange(T, device=mask.device)[None, :] < lengths[:, None]):
        raise ValueError("pack: the attention mask is not right padding (real tokens first in every row)")
    padded_index = mask.flatten().nonzero().squeeze(1)  # [N] b * T + t
    cu_seqlens = F.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)
    packed = Packed(cu_seqlens, T, padded_index % T, padded_index)
    return input_ids[:, :T].flatten().index_select(0, padded_index), packed


def unpack(x: torch.Tensor, packed: Packed, fill: float = 0.0) -> torch.Tensor:
    """[N, ...] per-token results -> [B, T, ...] with `fill` past each sequence's end."""
    B, T = packed.batch_size, packed.max_seqlen
    out = x.new_full((B * T, *x.shape[1:]), fill)
    return out.index_copy(0, packed.padded_index, x).view(B, T, *x.shape[1:])


def _flash_ok(q: torch.Tensor) -> bool:
    """FlashAttention's conditions: 16 bits, sm80 or newer, head size <= 256, and not turned off."""
    return (
        q.dtype in (torch.float16, torch.bfloat16)
        and q.shape[-1] <= 256
        and torch.backends.cuda.flash_sdp_enabled()
        and torch.cuda.get_device_capability(q.device) >= (8, 0)
    )


def _flash_varlen(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: Packed, dropout_p: float
) -> torch.Tensor:
    cu, T = p.cu_seqlens, p.max_seqlen
    if dropout_p == 0.0:
        try:
            from torch.nn.attention.varlen import varlen_attn
        except ImportError:  # older torch: the aten kernel below is the same FlashAttention
            pass
        else:
            return varlen_attn(q, k, v, cu, cu, T, T)
    # varlen_attn has no dropout; the kernel it wraps does (and has its backward registered).
    return torch.ops.aten._flash_attention_forward(q, k, v, cu, cu, T, T, dropout_p, False, False)[0]


def varlen_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: Packed, dropout_p: float
) -> torch.Tensor:
    """Attention of each sequence's tokens to its own tokens: q, k, v [N, nh, hd] -> [N, nh, hd].

    CUDA in 16 bits (sm80+, head size <= 256): FlashAttention over the packed tokens. CPU: one SDPA
    call per sequence, which on real lengths is 1.1x faster than padding the attention at 128 tokens
    and 3x on SQuAD windows (`benchmarks/bench_attention.py`; per-length buckets, nested tensors and a
    block-diagonal mask are slower). Under torch.compile, and on GPUs without FlashAttention, only the
    attention is padded (`padded_attention`), with no Python loop over lengths that the compiler would
    specialise on.
    """
    if q.is_cuda and _flash_ok(q):
        return _flash_varlen(q, k, v, p, dropout_p)
    if not q.is_cuda and not torch.compiler.is_compiling():
        return per_sequence_attention(q, k, v, p, dropout_p)
    return padded_attention(q, k, v, p, dropout_p)


def per_sequence_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: Packed, dropout_p: float
) -> torch.Tensor:
    """One SDPA call per sequence (CPU). Split, not sliced: the gradient of a split is one
    concatenation, that of each slice a zero-filled [N, nh, hd] tensor."""
    lengths = p.cu_seqlens.diff().tolist()  # on the host already: no device sync
    parts = zip(q.split(lengths), k.split(lengths), v.split(lengths), strict=True)
    return torch.cat([_sdpa(qi[None], ki[None], vi[None], None, dropout_p)[0] for qi, ki, vi in parts])


def padded_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: Packed, dropout_p: float
) -> torch.Tensor:
    """The attention alone padded to the longest sequence: q, k and v scattered into [B, T]
    (`padded_index`), SDPA with the key mask, the real rows gathered back."""
    B, T = p.batch_size, p.max_seqlen
    key_mask = key_mask_of(p)
    if key_mask is None:  # every sequence has T tokens: the packed rows are the padded rows
        return _sdpa(
            q.view(B, T, *q.shape[1:]),
            k.view(B, T, *k.shape[1:]),
            v.view(B, T, *v.shape[1:]),
            None,
            dropout_p,
        ).flatten(0, 1)

    def padded(x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(B * T, *x.shape[1:]).index_copy_(0, p.padded_index, x).view(B, T, *x.shape[1:])

    a = _sdpa(padded(q), padded(k), padded(v), key_mask, dropout_p)  # [B, T, nh, hd]
    return a.flatten(0, 1).index_select(0, p.padded_index)


def _sdpa(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, dropout_p: float
) -> torch.Tensor:
    """[B, T, nh, hd] in and out; SDPA wants the heads before the tokens (views, no copies)."""
    a = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask, dropout_p=dropout_p
    )
    return a.transpose(1, 2)


def key_mask_of(p: Packed) -> torch.Tensor | None:
    """[B, 1, 1, T] bool, True = a real key, for the padded attention; None when there is no padding."""
    B, T = p.batch_size, p.max_seqlen
    if p.position_ids.shape[0] == B * T:
        return None
    mask = torch.zeros(B * T, dtype=torch.bool, device=p.position_ids.device)
    return mask.index_fill_(0, p.padded_index, True).view(B, 1, 1, T)


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

    def forward(
        self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None, packed: Packed | None = None
    ) -> torch.Tensor:
        """ids [N] with `packed` (-> [N, H]), or [B, T] padded (-> [B, T, H])."""
        T = packed.max_seqlen if packed is not None else input_ids.shape[1]
        if self.max_positions < T:
            raise UsageError(f"sequence length {T} exceeds max_position_embeddings {self.max_positions}")
        x = self.word_embeddings(input_ids)  # [N, H] or [B, T, H]
        if packed is not None:
            x = x + self.position_embeddings(packed.position_ids)  # [N, H]
        else:  # positions are 0..T-1 in every row: a slice of the table, broadcast over B
            x = x + self.position_embeddings.weight[:T]  # [T, H]
        if token_type_ids is None:
            # SpanBERT trains on single segments (§1.3): every token has type 0.
            x = x + self.token_type_embeddings.weight[0]  # [H]
        else:
            x = x + self.token_type_embeddings(token_type_ids)  # like the ids
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
        """Queries, keys and values, [..., nh, hd] each, from one [H, 3H] matrix multiplication.

        The three projections stay separate parameters (Hugging Face's names and shapes) and are
        concatenated per call: one wide GEMM instead of three narrow ones, and in the backward pass one
        GEMM for the input's gradient instead of three plus two additions of [N, H] tensors.
        """
        proj = self.attention["self"]
        weight = torch.cat([proj[name].weight for name in ("query", "key", "value")])  # [3H, H]
        bias = torch.cat([proj[name].bias for name in ("query", "key", "value")])  # [3H]
        qkv = F.linear(x, weight, bias).unflatten(-1, (3, self.num_heads, self.head_dim))
        q, k, v = qkv.unbind(-3)  # views; the head dimension stays contiguous
        return q, k, v

    def forward(self, x: torch.Tensor, packed: Packed | None, mask: torch.Tensor | None) -> torch.Tensor:
        """x [N, H] with `packed` (mask: None), or [B, T, H] padded (mask [B, 1, 1, T] bool,
        True = a real key; padded queries compute something, but nothing reads them)."""
        q, k, v = self._qkv(x)  # [..., nh, hd]
        p = self.attention_dropout if self.training else 0.0
        a = varlen_attention(q, k, v, packed, p) if packed is not None else _sdpa(q, k, v, mask, p)
        a = a.flatten(-2)  # heads back side by side: [..., H]
        out = self.attention["output"]
        x = out["LayerNorm"](x + self.dropout(out["dense"](a)))

        h = F.gelu(self.intermediate["dense"](x))  # [..., 4H typically], exact erf GeLU as in BERT
        x = self.output["LayerNorm"](x + self.dropout(self.output["dense"](h)))
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
        packed: Packed | None = None,
    ) -> torch.Tensor:
        """Unpadded: ids [N] and `packed` -> [N, H]. Padded: ids [B, T] and the mask -> [B, T, H]."""
        x = self.embeddings(input_ids, token_type_ids, packed)
        # Padded, None means "no padding": SDPA can then pick its fastest (mask-free) kernel.
        mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]  # [B,1,1,T]
        for layer in self.encoder["layer"]:
            x = layer(x, packed, mask)
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
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        packed: Packed | None = None,
    ) -> torch.Tensor:
        """Unpadded: input_ids [N] and `packed` -> hidden states [N, H]. Padded: input_ids [B, T] and
        attention_mask [B, T] (True / 1 = real token; None = no padding) -> [B, T, H]."""
        return self.bert(input_ids, attention_mask, token_type_ids, packed)

    def mlm_logits(self, hidden_at_positions: torch.Tensor) -> torch.Tensor:
        """[M, H] -> [M, V]. Select the positions first: never call this on all B*T states during training."""
        return self.cls["predictions"](hidden_at_positions, self.word_embeddings)

    def sbo_logits(self, left: torch.Tensor, right: torch.Tensor, rel_pos: torch.Tensor) -> torch.Tensor:
        """Boundary states [N, H] x2 and 0-based relative positions [N] -> [N, V]."""
        return self.sbo(left, right, rel_pos, self.word_embeddings)

    def forward(
        self,
        input_ids: torch.Tensor,  # [N] with `packed`; [B, T] padded
        attention_mask: torch.Tensor | None = None,  # padded: [B, T] bool, True = real token
        packed: Packed | None = None,  # unpadded: where the sequences lie among the N tokens
        mlm_positions: torch.Tensor
        | None = None,  # [M] rows of the token states: cu_seqlens[b] + t (padded: b*T + t)
        mlm_labels: torch.Tensor | None = None,  # [M] original token ids, IGNORE_INDEX for padded slots
        sbo_positions: torch.Tensor | None = None,  # [S] row of each SBO target (not needed by the loss)
        sbo_left: torch.Tensor | None = None,  # [S] row of s - 1: left boundary of the target's span
        sbo_right: torch.Tensor | None = None,  # [S] row of e + 1: right boundary
        sbo_rel_pos: torch.Tensor | None = None,  # [S] i - s, in [0, sbo_num_positions)
        sbo_labels: torch.Tensor | None = None,  # [S] original token ids, IGNORE_INDEX for padded slots
        sbo_weight: float = 1.0,
    ) -> dict[str, torch.Tensor]:
        """Pretraining step. With no labels at all, returns only {"hidden_states": [N, H] or [B, T, H]}.

        Otherwise returns loss = mean MLM CE + sbo_weight * mean SBO CE and its parts; the correct/count
        entries are 0-dim long tensors (left on the device: reading them is the caller's sync to make).
        sbo_weight == 0 skips the SBO head entirely (its parameters then get no gradient at all).
        """
        hidden = self.encode(input_ids, attention_mask, packed=packed)
        if mlm_labels is None and sbo_labels is None:
            return {"hidden_states": hidden}

        flat = hidden.reshape(
            -1, hidden.shape[-1]
        )  # [N, H] (padded: [B*T, H], a view): the heads gather from it
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
            )  # [S, V]
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
