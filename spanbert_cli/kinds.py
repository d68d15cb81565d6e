"""The kinds of artifact the stages write, and the schema version of each, in one place.

A kind's schema version enters every fingerprint of that kind: bump it when a stage's output format
changes, so that old artifacts are recognised as different (and newer ones refused by an older spanbert).
"""

from __future__ import annotations

TOKENIZED = "spanbert/tokenized"  # tokenize: documents of token ids with sentence ends
SHARDS = "spanbert/shards"  # shard: [CLS] block [SEP] training sequences, train and valid
RUN = "spanbert/run"  # pretrain: checkpoints, metrics, the final Hugging Face export
EXPORT = "spanbert/export"  # export: a Hugging Face BERT directory of one checkpoint
EVAL_SQUAD = "spanbert/eval-squad"  # eval squad: predictions and official scores
EVAL_MLM = "spanbert/eval-mlm"  # eval mlm: held-out MLM / SBO figures

SCHEMA_VERSIONS: dict[str, int] = {
    TOKENIZED: 1,
    SHARDS: 1,
    RUN: 1,
    EXPORT: 1,
    EVAL_SQUAD: 1,
    EVAL_MLM: 1,
}
