#!/usr/bin/env bash
# The GPU checks of issue 14, as one script for a lent GPU machine (run from the repository root):
#   CORPUS=path/to/corpus OUT=results/ bash benchmarks/gpu_check.sh [bench|pretrain|all]
# `bench` and `pretrain` each fit one 10-minute device call (compilation included); `all` (the default)
# runs both. Everything printed is saved under $OUT; $OUT/summary.txt has the figures, one per line.
# bench: bench_train on real shards of 512 tokens (the corpus tokenized --docs file --vocab-size 30522),
#   BERT-base in bf16, 32 sequences a micro-batch: unpadded eager, padded eager and transformers'
#   BertForMaskedLM (SDPA, padded to the longest sequence), then the same compiled (unpadded compiled,
#   padded compiled, BertForMaskedLM compiled); tokens/s of real tokens and MFU; then bf16-master.
# pretrain: `spanbert pretrain --gpus 1` (the distributed launcher, NCCL, unpadded), BERT-base, 512
#   tokens, 256 sequences a step in micro-batches of 32: bf16 eager, then bf16 compiled, with the logged MFU.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PART=${1:-all}
CORPUS=${CORPUS:-../shared/data/corpus}
OUT=${OUT:-gpu-results}
WORK=$(mktemp -d)
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/device.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, torch.cuda.get_device_name(), 'transformers', transformers.__version__)" | tee -a "$OUT/device.txt"

if [[ $PART == all || $PART == bench ]]; then
    BENCH="python3 benchmarks/bench_train.py --device cuda --preset base --seq-len 512 --batch-size 32 --corpus $CORPUS --cache $WORK/bench --steps 10 --repeats 3"
    $BENCH --precision bf16 2>&1 | tee "$OUT/bench_train_bf16.txt"
    $BENCH --precision bf16 --compile --warmup 3 2>&1 | tee "$OUT/bench_train_bf16_compile.txt"
    $BENCH --precision bf16-master --compile --warmup 3 --sides unpadded 2>&1 | tee "$OUT/bench_train_bf16-master_compile.txt"
    grep -H "^unpadded\|^padded\|^transformers" "$OUT"/bench_train_*.txt | tee "$OUT/summary.txt"
fi

if [[ $PART == all || $PART == pretrain ]]; then
    python3 -m spanbert_cli tokenize "$CORPUS" --docs file --vocab-size 30522 --out "$WORK/tok" --quiet
    python3 -m spanbert_cli shard "$WORK/tok" --max-seq-len 512 --out "$WORK/shards" --quiet
    PRETRAIN="python3 -m spanbert_cli pretrain $WORK/shards --gpus 1 --model base --batch-size 256 --micro-batch-size 32 --warmup-steps 3 --log-every 5 --eval-every 0 --num-workers 6 --json"
    # Eager first, then compiled (total token counts vary per micro-batch: dynamic shapes); metrics.jsonl has mfu.
    $PRETRAIN --precision bf16 --max-steps 20 --save-every 20 --out "$WORK/run-bf16" | tee "$OUT/pretrain_bf16.json"
    $PRETRAIN --precision bf16 --compile --max-steps 30 --save-every 30 --out "$WORK/run-compile" \
        | tee "$OUT/pretrain_bf16_compile.json"
    cp "$WORK/run-bf16/metrics.jsonl" "$OUT/pretrain_bf16_metrics.jsonl"
    cp "$WORK/run-compile/metrics.jsonl" "$OUT/pretrain_bf16_compile_metrics.jsonl"
    for f in "$OUT"/pretrain_*_metrics.jsonl; do grep -H '"mfu"' "$f" | tail -n 2; done | tee -a "$OUT/summary.txt"
fi
