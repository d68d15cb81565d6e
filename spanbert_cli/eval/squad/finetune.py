"""`spanbert eval squad RUN`: fine-tune a pretrained encoder on SQuAD and score it on a dev set.

    resolve_run     a run / checkpoint / export / Hugging Face BERT directory → its weights and tokenizer
    load_encoder    those weights → the encoder
    QuestionAnswering   the encoder plus a linear layer H → 2 (start and end logits), as in BERT
    train_qa        the fine-tuning loop (docs/algorithm.md §5): AdamW, lr 2e-5, batch 32, 4 epochs, 10%
                    linear warm-up then linear decay, weight decay 0.01 except biases and LayerNorm, clip 1.0
    predict_logits  start / end logits of every dev window
    postprocess     the best span of each question (n-best starts × ends, at most max_answer_length
                    tokens, starts where the window gives the token its widest context), mapped back to
                    the context text through the offsets; v2.0: the [CLS] null score against it
    finetune_squad  all of it, as an artifact of kind `spanbert/eval-squad`

The EVAL artifact:

    predictions.json   {question id: answer text} for every dev question ("" = no answer, v2.0)
    na_probs.json      v2.0: {question id: P(no answer)} = sigmoid(null score - best span score)
    best_spans.json    v2.0: {question id: best non-null span}, what the threshold search switches to
    metrics.json       the official metrics of predictions.json (v2.0: plus best_exact, best_exact_thresh,
                       best_f1, best_f1_thresh of best_spans.json with na_probs.json)
    manifest.json      params, inputs (the model's fingerprint / hashes, the data files' hashes), stats

so `spanbert eval squad --predictions EVAL/predictions.json --data DEV` reproduces metrics.json, and
`--predictions EVAL/best_spans.json --na-probs EVAL/na_probs.json` its best-threshold figures. A question
is predicted unanswerable when its null score beats its best span (na_prob > 0.5).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spanbert_cli import artifacts, kinds
from spanbert_cli.artifacts import locks
from spanbert_cli.errors import DataError, UsageError
from spanbert_cli.eval.config import SquadConfig
from spanbert_cli.eval.squad import data as sd
from spanbert_cli.eval.squad import scoring
from spanbert_cli.eval.squad.features import Features, build_features, max_context_owner
from spanbert_cli.model.config import NUMERICS_VERSION
from spanbert_cli.model.spanbert import Packed, encoder_inputs
from spanbert_cli.model.weights import PretrainedRun, load_encoder, resolve_run
from spanbert_cli.progress import NullReporter, Reporter
from spanbert_cli.training.device import is_out_of_memory, resolve_device, resolve_precision
from spanbert_cli.training.optim import adamw, warmup_then_linear

if TYPE_CHECKING:
    from spanbert_cli.model.spanbert import SpanBert

KIND = kinds.EVAL_SQUAD
RUN_KIND = kinds.RUN
PAD_MULTIPLE = 8  # the padded (reference) layout pads to a multiple of 8 tokens, as tensor cores like
DEFAULT_HUB = "rajpurkar/squad"
SAMPLE_DIR = Path(__file__).resolve().parents[2] / "data" / "squad"


class QuestionAnswering(nn.Module):
    """SpanBert's encoder (what `SpanBert.encode` runs) + a linear layer H → 2: start and end logits.

    Parameter names are Hugging Face `BertForQuestionAnswering`'s (bert.*, qa_outputs.*), so its state
    dict loads there as is. The pretraining heads (MLM, SBO) are not part of it.
    """

    def __init__(self, encoder: SpanBert):
        super().__init__()
        cfg = encoder.config
        self.config = cfg
        self.bert = encoder.bert
        self.qa_outputs = nn.Linear(cfg.hidden_size, 2)
        nn.init.normal_(self.qa_outputs.weight, std=cfg.initializer_range)
        nn.init.zeros_(self.qa_outputs.bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        packed: Packed | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Start and end logits [B, T] in fp32 from the windows unpadded (ids, segment ids [N] and
        `packed`; T = the longest window) or padded (ids, segment ids, mask [B, T]; True = real token).

        Positions past a window's end get -1e9: the softmax over positions then does not depend on how
        long the other windows of the batch are.
        """
        hidden = self.bert(input_ids, attention_mask, token_type_ids, packed)  # [N, H] or [B, T, H]
        logits = self.qa_outputs(hidden).float()  # [N, 2] or [B, T, 2]
        if packed is not None:  # only the [B, T] logits are padded, never the encoder's tokens
            B, T = packed.batch_size, packed.max_seqlen
            logits = (
                logits.new_full((B * T, 2), -1e9).index_copy(0, packed.padded_index, logits).view(B, T, 2)
            )
        elif attention_mask is not None:  # None: no window is padded
            logits = logits.masked_fill(~attention_mask.bool()[..., None], -1e9)
        return logits[..., 0], logits[..., 1]


def qa_inputs(host: dict[str, np.ndarray], device: torch.device) -> dict[str, Any]:
    """`QuestionAnswering`'s inputs from a `Features.packed_batch` (or padded `batch`), on `device`."""
    b = {k: torch.from_numpy(v).to(device, non_blocking=True) for k, v in host.items()}
    return {**encoder_inputs(host, b), "token_type_ids": b["token_type_ids"]}


def qa_loss(
    start: torch.Tensor, end: torch.Tensor, start_pos: torch.Tensor, end_pos: torch.Tensor, denominator: int
) -> torch.Tensor:
    """(CE(start) + CE(end)) / 2, summed over the micro-batch and divided by the step's window count."""
    ce = F.cross_entropy(start, start_pos, reduction="sum") + F.cross_entropy(end, end_pos, reduction="sum")
    return ce / (2 * denominator)


# --------------------------------------------------------------------------------------------------
# Training


def build_optimizer(model: Any, config: SquadConfig, device: torch.device) -> torch.optim.AdamW:
    return adamw(model, lr=config.lr, weight_decay=config.weight_decay, device=device, eps=config.adam_eps)


def schedule(config: SquadConfig, num_windows: int) -> tuple[int, int]:
    """(optimizer steps, warm-up steps): `epochs` passes over the windows, capped by --max-steps."""
    steps = config.epochs * max(1, math.ceil(num_windows / config.batch_size))
    if config.max_steps is not None:
        steps = min(steps, config.max_steps)
    return steps, int(config.warmup_ratio * steps)


def train_qa(
    model: Any,
    features: Features,
    config: SquadConfig,
    device: torch.device,
    precision: str,
    reporter: Reporter | None = None,
    ctx: Any = None,
) -> dict[str, Any]:
    """Fine-tune `model` on the training windows; return what happened (loss, steps, throughput).

    Each step's windows are cut into micro-batches; with W processes (`ctx`, a `DistributedContext`),
    process r runs micro-batches r, r + W, … (DDP sums the gradients; a process left without one in a
    short last batch runs a zero-weight one, so that all synchronise alike). The dropout of micro-batch j
    of step s is seeded from (seed, s, j): the fine-tuning does not depend on W.
    """
    from spanbert_cli.training.context import DistributedContext
    from spanbert_cli.training.data import micro_batch_seed
    from spanbert_cli.training.precision import autocast

    ctx = ctx or DistributedContext(device=str(device))
    world = ctx.world_size
    rep = reporter or NullReporter()
    n = len(features)
    if n == 0:
        raise DataError("no training windows: every training question was left out (see the feature stats)")
    steps, warmup = schedule(config, n)
    optimizer = build_optimizer(model, config, device)
    scheduler = warmup_then_linear(optimizer, warmup, steps)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    micro = config.resolved_micro_batch_size
    types = model.config.type_vocab_size
    unwrapped, model = model, ctx.wrap_model(model)
    model.train()
    rep.start("fine-tuning", total=steps)
    step, epoch, tokens, seen, t0 = 0, 0, 0, 0, time.perf_counter()
    running = torch.zeros((), dtype=torch.float64, device=device)
    logged: list[float] = []
    last_loss = float("nan")
    while step < steps:
        order = np.random.default_rng([config.seed, epoch]).permutation(n)
        for b0 in range(0, n, config.batch_size):
            if step >= steps:
                break
            windows = order[b0 : b0 + config.batch_size].tolist()
            seen += len(windows)
            parts = [windows[m0 : m0 + micro] for m0 in range(0, len(windows), micro)]
            mine = list(range(ctx.rank, len(parts), world))
            slots = math.ceil(len(parts) / world)  # the same on every process
            try:
                for k in range(slots):
                    real = k < len(mine)
                    j = mine[k] if real else 0  # no micro-batch left here: a zero-weight stand-in
                    arrays = features.packed_batch(parts[j], types)
                    labels = {
                        k: torch.from_numpy(arrays[k]).to(device)
                        for k in ("start_positions", "end_positions")
                    }
                    torch.manual_seed(micro_batch_seed(config.seed, step, j))
                    with ctx.no_sync(model, sync=k == slots - 1):
                        with autocast(device, precision):
                            start, end = model(**qa_inputs(arrays, device))
                        loss = qa_loss(
                            start, end, labels["start_positions"], labels["end_positions"], len(windows)
                        )
                        # DDP averages the gradients over the processes: each contributes W times its share.
                        scaler.scale(loss * world if real else loss * 0.0).backward()
                    if real:
                        tokens += len(arrays["input_ids"])
                        running += loss.detach().double()
            except RuntimeError as e:
                if is_out_of_memory(e):
                    raise DataError(
                        f"out of memory at fine-tuning step {step} with {micro} windows of up to "
                        f"{config.max_seq_length} tokens per pass; lower --micro-batch-size (the batch size "
                        "stays the same)"
                    ) from None
                raise
            if config.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(unwrapped.parameters(), config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            if step % config.log_every == 0 or step == steps:
                done_in_interval = (step - 1) % config.log_every + 1
                last_loss = float(ctx.all_reduce_sum(running.clone()).item()) / done_in_interval
                running.zero_()
                if not math.isfinite(last_loss):
                    raise DataError(
                        f"fine-tuning diverged at step {step} (loss {last_loss}); lower --lr or use --precision fp32"
                    )
                logged.append(last_loss)
                rep.update(step, loss=last_loss, lr=scheduler.get_last_lr()[0])
        epoch += 1
    rep.finish()
    seconds = time.perf_counter() - t0
    if world > 1:
        tokens = int(ctx.all_reduce_sum(torch.tensor([float(tokens)], dtype=torch.float64)).item())
    return {
        "steps": steps,
        "warmup_steps": warmup,
        "epochs": round(seen / n, 4),
        "windows": seen,
        "loss": last_loss,
        "first_loss": logged[0] if logged else last_loss,
        "seconds": seconds,
        "windows_per_s": seen / max(seconds, 1e-9),
        "tokens_per_s": tokens / max(seconds, 1e-9),
    }


# --------------------------------------------------------------------------------------------------
# Prediction and post-processing


def predict_logits(
    model: Any,
    features: Features,
    device: torch.device,
    precision: str,
    batch_size: int = 64,
    reporter: Reporter | None = None,
) -> list[np.ndarray]:
    """Start and end logits of every window: `[2, seq_len]` float32 arrays, in window order."""
    from spanbert_cli.training.precision import autocast

    rep = reporter or NullReporter()
    lengths = features.lengths()
    order = np.argsort(-lengths, kind="stable")  # similar lengths together (unpadded, still: fewer kernels)
    out: list[np.ndarray] = [np.empty(0, dtype=np.float32)] * len(features)
    types = model.config.type_vocab_size
    model.eval()
    rep.start("predicting", total=len(features))
    with torch.inference_mode():
        for i in range(0, len(order), batch_size):
            windows = order[i : i + batch_size].tolist()
            inputs = qa_inputs(features.packed_batch(windows, types), device)
            try:
                with autocast(device, precision):
                    start, end = model(**inputs)
            except RuntimeError as e:
                if is_out_of_memory(e):
                    raise DataError(
                        f"out of memory predicting {len(windows)} windows at once; lower --eval-batch-size"
                    ) from None
                raise
            logits = torch.stack([start, end], dim=1).float().cpu().numpy()  # [B, 2, T]
            for j, w in enumerate(windows):
                out[w] = logits[j, :, : lengths[w]]
            rep.update(min(i + batch_size, len(order)))
    rep.finish()
    return out


@dataclass
class Answers:
    """Post-processed predictions, in dev-question order."""

    predictions: dict[str, str]  # final answers ("" = unanswerable when with_null)
    best_spans: dict[str, str]  # the best non-null span of every question ("" when it has none)
    na_probs: dict[str, float]  # sigmoid(null score - best span score); 1.0 when there is no span
    no_span: int = 0  # questions without any valid span


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def postprocess(
    features: Features,
    logits: list[np.ndarray],
    *,
    n_best: int = 20,
    max_answer_length: int = 30,
    with_null: bool = False,
    reporter: Reporter | None = None,
) -> Answers:
    """The answer of each question from its windows' logits.

    In each window, the `n_best` highest start logits among the context tokens this window gives the
    widest context (BERT's max-context rule, so overlapping windows do not double-count a token) and
    the `n_best` highest end logits among its context tokens make the candidate spans: end ≥ start,
    at most `max_answer_length` tokens, scored start + end logit. The best over all windows (the first
    on ties) is the answer; its text is `context[offset(start).begin : offset(end).end]`, the original
    characters (case, accents, spacing) of the context, as BERT's projection of the predicted pieces onto
    the original text gives (a span may end inside a word when its last piece does). The null score
    is the smallest `start[CLS] + end[CLS]` over the question's windows; with `with_null` (v2.0), a null
    score above the best span's makes the answer "".
    """
    rep = reporter or NullReporter()
    data = features.data
    predictions: dict[str, str] = {}
    best_spans: dict[str, str] = {}
    na_probs: dict[str, float] = {}
    no_span = 0
    per_question = features.windows_of()
    rep.start("post-processing", total=len(data.questions))
    for qi, q in enumerate(data.questions):
        windows = per_question[qi]
        offsets = features.context_offsets[q.context]
        spans = [(int(features.doc_start[w]), int(features.doc_len[w])) for w in windows]
        owner = max_context_owner(spans, len(offsets))
        best = (-math.inf, 0, -1)  # score, first token, last token (context token indices)
        null = math.inf
        for j, w in enumerate(windows):
            lg = logits[w]
            null = min(null, float(lg[0, 0]) + float(lg[1, 0]))
            s0, n = spans[j]
            if n == 0:
                continue
            k = features.context_offset(w)
            start_l, end_l = lg[0, k : k + n], lg[1, k : k + n]
            own = owner[s0 : s0 + n] == j
            cand_s = np.flatnonzero(own)
            if len(cand_s) == 0:
                continue
            cand_s = cand_s[np.argsort(-start_l[cand_s], kind="stable")[:n_best]]
            cand_e = np.argsort(-end_l, kind="stable")[:n_best]
            length = cand_e[None, :] - cand_s[:, None]  # [S, E]
            ok = (length >= 0) & (length < max_answer_length)
            if not ok.any():
                continue
            score = np.where(ok, start_l[cand_s][:, None] + end_l[cand_e][None, :], -np.inf)
            flat = int(np.argmax(score))  # the first maximum: the best start rank, then the best end
            si, ei = divmod(flat, score.shape[1])
            value = float(score[si, ei])
            if value > best[0]:
                best = (value, s0 + int(cand_s[si]), s0 + int(cand_e[ei]))
        if best[2] < 0:
            no_span += 1
            text, prob = "", 1.0
        else:
            text = data.contexts[q.context][offsets[best[1]][0] : offsets[best[2]][1]]
            prob = _sigmoid(null - best[0])
        best_spans[q.id] = text
        na_probs[q.id] = prob
        predictions[q.id] = "" if with_null and (best[2] < 0 or null > best[0]) else text
        if qi % 512 == 0:
            rep.update(qi)
    rep.finish()
    return Answers(predictions, best_spans, na_probs, no_span)


def metrics_for(dev: sd.SquadData, answers: Answers, threshold_search: str = "official") -> dict[str, Any]:
    """The official metrics of the predictions; v2.0 adds the threshold search over the best spans."""
    gold = dev.gold()
    metrics = scoring.score(gold, answers.predictions, dev.version).metrics
    if dev.version == "2.0":
        searched = scoring.score_v2(
            gold, answers.best_spans, answers.na_probs, threshold_search=threshold_search
        ).metrics
        for key in ("best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh"):
            metrics[key] = searched[key]
    return metrics


# --------------------------------------------------------------------------------------------------
# The stage


@dataclass
class SquadEvalResult:
    artifact: artifacts.Artifact
    cached: bool
    metrics: dict[str, Any] = field(default_factory=dict)


def _data_ref(spec: str, data: sd.SquadData, role: str) -> artifacts.InputRef:
    if Path(spec).is_file():
        return artifacts.InputRef.from_file(spec, name=Path(spec).name, role=role)
    return artifacts.InputRef(
        path=f"hf:{data.source}", role=role, sha256=data.content_sha256(), name=data.source
    )


def _load_data(spec: str | None, split: str, version: str | None) -> tuple[str, sd.SquadData]:
    spec = spec or DEFAULT_HUB
    hint = (
        f"pass SQuAD JSON files with --train FILE --dev FILE (a sample ships with spanbert: "
        f"{SAMPLE_DIR}/train-sample.json and dev-sample.json), or set HF_DATASETS_OFFLINE=1 to use "
        "a cached copy"
    )
    return spec, sd.load_any(spec, split, version, hint)


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


@dataclass
class _Prepared:
    """What a fine-tuning is made of, resolved before the model is loaded."""

    plan: artifacts.Plan
    config: SquadConfig  # with the world size of the processes that run it
    pre: PretrainedRun
    train_data: sd.SquadData
    dev_data: sd.SquadData
    align: Any
    device: torch.device
    precision: str


def _prepare(
    run: str | os.PathLike | None,
    train: str | None,
    dev: str | None,
    config: SquadConfig,
    out: str | os.PathLike | None,
    workspace: str | os.PathLike | None,
    rep: Reporter,
    ctx: Any,
) -> _Prepared:
    if ctx is not None and ctx.world_size != config.world_size:
        config = dataclasses.replace(config, world_size=ctx.world_size)  # the batch is global
    config.validate()
    device = torch.device(ctx.device) if ctx is not None else resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    pre = resolve_run(run, workspace, rep)
    assert pre.tokenizer is not None
    from spanbert_cli.training.checkpoint import load_config  # the architecture, without the weights

    config = config.for_model(load_config(pre.source.path).max_position_embeddings)
    train_spec, train_all = _load_data(train, "train", None)
    dev_spec, dev_all = _load_data(dev, "validation", config.version)
    train_data, align = sd.align_answers(train_all.head(config.max_train_examples))
    dev_data = dev_all.head(config.max_eval_examples)

    params = {
        **config.fingerprint_params(dev_all.version),
        "precision": precision,
        "numerics": NUMERICS_VERSION,
    }
    inputs = [*pre.inputs, _data_ref(train_spec, train_all, "train"), _data_ref(dev_spec, dev_all, "dev")]
    dev_name = Path(dev_spec).name.split(".")[0] if Path(dev_spec).is_file() else dev_spec.replace("/", "-")
    plan = artifacts.plan(KIND, params, inputs, out=out, name=f"{pre.name}-{dev_name}", workspace=workspace)
    return _Prepared(plan, config, pre, train_data, dev_data, align, device, precision)


def plan_finetune_squad(
    run: str | os.PathLike | None,
    train: str | None,
    dev: str | None,
    config: SquadConfig,
    *,
    out: str | os.PathLike | None = None,
    workspace: str | os.PathLike | None = None,
    reporter: Reporter | None = None,
) -> artifacts.Plan:
    """The fingerprint and output directory this evaluation would have, without running it."""
    return _prepare(run, train, dev, config, out, workspace, reporter or NullReporter(), None).plan


def finetune_squad(
    run: str | os.PathLike | None,
    train: str | None,
    dev: str | None,
    config: SquadConfig,
    *,
    out: str | os.PathLike | None = None,
    workspace: str | os.PathLike | None = None,
    force: bool = False,
    reporter: Reporter | None = None,
    ctx: Any = None,
) -> SquadEvalResult:
    """Fine-tune RUN on `train`, predict and score `dev`; the EVAL artifact (an up-to-date one is reused).

    `train` / `dev`: SQuAD files, or `datasets` names (default `rajpurkar/squad`, train and validation).
    `ctx`: this process's `DistributedContext` when several processes fine-tune together (`spanbert eval
    squad --gpus N`): all of them train, rank 0 alone predicts, scores and writes the artifact.
    """
    main_process = ctx is None or ctx.is_main
    rep = (reporter or NullReporter()) if main_process else NullReporter()
    p = _prepare(run, train, dev, config, out, workspace, rep, ctx)
    plan, config, pre, device, precision = p.plan, p.config, p.pre, p.device, p.precision
    train_data, dev_data, align = p.train_data, p.dev_data, p.align
    tokenizer = pre.tokenizer
    assert tokenizer is not None
    with locks.exclusive(plan.out) if main_process else contextlib.nullcontext():
        if (hit := artifacts.existing(plan, force)) is not None:
            return SquadEvalResult(hit, True, json.loads(hit.file("metrics.json").read_text()))

        encoder = load_encoder(pre)
        cfg = encoder.config
        if config.max_seq_length > cfg.max_position_embeddings:
            raise UsageError(
                f"--max-seq-length {config.max_seq_length} exceeds the model's {cfg.max_position_embeddings} positions"
            )
        vocab = tokenizer.get_vocab_size(with_added_tokens=True)
        if vocab > cfg.vocab_size:
            raise DataError(
                f"{pre.spec}: the tokenizer has {vocab} tokens but the model only {cfg.vocab_size} embeddings"
            )
        torch.manual_seed(config.seed)
        model = QuestionAnswering(encoder).to(device)
        del encoder

        train_feats = build_features(train_data, tokenizer, config.features, training=True, reporter=rep)
        dev_feats = build_features(dev_data, tokenizer, config.features, training=False, reporter=rep)
        trained = train_qa(model, train_feats, config, device, precision, rep, ctx=ctx)
        if not main_process:  # rank 0 predicts and writes; the others read what it wrote
            ctx.barrier()
            art = artifacts.open_artifact(plan.out, KIND)
            return SquadEvalResult(art, False, json.loads(art.file("metrics.json").read_text()))
        t0 = time.perf_counter()
        logits = predict_logits(model, dev_feats, device, precision, config.eval_batch_size, rep)
        predict_s = time.perf_counter() - t0
        answers = postprocess(
            dev_feats,
            logits,
            n_best=config.n_best,
            max_answer_length=config.max_answer_length,
            with_null=dev_data.version == "2.0",
            reporter=rep,
        )
        metrics = metrics_for(dev_data, answers, config.threshold_search)

        stats = {
            "version": dev_data.version,
            "device": str(device),
            "precision": precision,
            "metrics": metrics,
            "train": {
                "questions": len(train_data),
                "unanswerable": train_data.num_unanswerable,
                "answers": align.to_dict(),
                "features": train_feats.stats.to_dict(),
                **trained,
            },
            "dev": {
                "questions": len(dev_data),
                "unanswerable": dev_data.num_unanswerable,
                "windows": len(dev_feats),
                "truncated_questions": dev_feats.stats.truncated_questions,
                "no_span": answers.no_span,
                "predict_seconds": predict_s,
            },
        }
        with artifacts.ArtifactWriter(plan) as w:
            write_json(w.path("predictions.json"), answers.predictions)
            if dev_data.version == "2.0":
                write_json(w.path("na_probs.json"), answers.na_probs)
                write_json(w.path("best_spans.json"), answers.best_spans)
            write_json(w.path("metrics.json"), metrics)
            extra = {
                "model": {"source": pre.description, "step": pre.source.step, "config": cfg.to_dict()},
                "runtime": {
                    "device": str(device),
                    "eval_batch_size": config.eval_batch_size,
                    "world_size": config.world_size,
                },
            }
            artifact = w.finalize(stats, extra=extra)
        if ctx is not None:
            ctx.barrier()
        return SquadEvalResult(artifact, False, metrics)
