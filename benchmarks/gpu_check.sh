#!/usr/bin/env bash
# The GPU checks of issues 5 and 6, as one script for a lent GPU machine (run from the repository root):
#   CORPUS=path/to/corpus OUT=results/ bash benchmarks/gpu_check.sh [bench|pretrain|all]
# `bench` and `pretrain` each fit one 10-minute device call (compilation included); `all` (the default)
# runs both. Everything printed is saved under $OUT; $OUT/summary.txt has one line per bench_train run.
# bench: bench_train, BERT-base, 512 tokens, spanbert vs transformers' BertForMaskedLM (tokens/s, MFU):
#   bf16 autocast and bf16-master (bf16 weights, fp32 master weights), 32 sequences a step, eager (both
#   models) and compiled (spanbert), then bf16-master compiled at the paper's 256 sequences a step
#   (8 micro-batches of 32).
# pretrain: `spanbert pretrain --gpus 1` (the distributed launcher, NCCL), BERT-base, 512 tokens, 256
#   sequences a step in micro-batches of 32: bf16 autocast eager, then bf16-master compiled.
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
    BENCH="python3 benchmarks/bench_train.py --device cuda --preset base --seq-len 512 --batch-size 32 --corpus $CORPUS --steps 10 --repeats 3"
    for precision in bf16 bf16-master; do
        $BENCH --precision "$precision" 2>&1 | tee "$OUT/bench_train_$precision.txt"
        $BENCH --precision "$precision" --compile --no-hf --warmup 3 --profile 2 2>&1 \
            | tee "$OUT/bench_train_${precision}_compile.txt"  # with the top operators of 2 steps
    done
    $BENCH --precision bf16-master --compile --no-hf --accumulate 8 --steps 4 --repeats 2 --warmup 2 2>&1 \
        | tee "$OUT/bench_train_bf16-master_compile_acc8.txt"
    grep -H "^spanbert\|^transformers" "$OUT"/bench_train_*.txt | tee "$OUT/summary.txt"
fi

if [[ $PART == all || $PART == pretrain ]]; then
    python3 -m spanbert_cli tokenize "$CORPUS" --docs file --vocab-size 30522 --out "$WORK/tok" --quiet
    python3 -m spanbert_cli shard "$WORK/tok" --max-seq-len 512 --out "$WORK/shards" --quiet
    PRETRAIN="python3 -m spanbert_cli pretrain $WORK/shards --gpus 1 --model base --batch-size 256 --micro-batch-size 32 --warmup-steps 3 --log-every 5 --eval-every 0 --num-workers 6 --json"
    # The obvious alternative first (autocast, eager), then bf16-master compiled; metrics.jsonl has mfu.
    $PRETRAIN --precision bf16 --max-steps 20 --save-every 20 --out "$WORK/run-bf16" | tee "$OUT/pretrain_bf16.json"
    $PRETRAIN --precision bf16-master --compile --max-steps 30 --save-every 30 --out "$WORK/run-master" \
        | tee "$OUT/pretrain_bf16-master_compile.json"
    cp "$WORK/run-bf16/metrics.jsonl" "$OUT/pretrain_bf16_metrics.jsonl"
    cp "$WORK/run-master/metrics.jsonl" "$OUT/pretrain_bf16-master_compile_metrics.jsonl"
    for f in "$OUT"/pretrain_*_metrics.jsonl; do grep -H '"mfu"' "$f" | tail -n 2; done | tee -a "$OUT/summary.txt"
fi
