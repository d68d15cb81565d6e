#!/usr/bin/env bash
# The GPU checks of issues 5 and 6, as one script for a lent GPU machine (run from the repository root):
#   CORPUS=path/to/corpus OUT=results/ bash benchmarks/gpu_check.sh
# 1. bench_train: BERT-base, 512 tokens, bf16, spanbert vs transformers' BertForMaskedLM (tokens/s, MFU);
# 2. `spanbert pretrain --gpus 1` (the distributed launcher, NCCL) at BERT-base, 512 tokens, bf16.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
CORPUS=${CORPUS:-../shared/data/corpus}
OUT=${OUT:-gpu-results}
WORK=$(mktemp -d)
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, transformers; print('torch', torch.__version__, torch.cuda.get_device_name(), 'transformers', transformers.__version__)"

python3 benchmarks/bench_train.py --device cuda --preset base --seq-len 512 --batch-size 32 --precision bf16 \
    --corpus "$CORPUS" 2>&1 | tee "$OUT/bench_train.txt"

python3 -m spanbert_cli tokenize "$CORPUS" --docs file --vocab-size 30522 --out "$WORK/tok" --quiet
python3 -m spanbert_cli shard "$WORK/tok" --max-seq-len 512 --out "$WORK/shards" --quiet
python3 -m spanbert_cli pretrain "$WORK/shards" --gpus 1 --model base --precision bf16 --batch-size 32 \
    --max-steps 60 --warmup-steps 6 --log-every 10 --eval-every 0 --save-every 60 --num-workers 4 \
    --out "$WORK/run" --json | tee "$OUT/pretrain_gpus1.json"
cp "$WORK/run/metrics.jsonl" "$OUT/pretrain_gpus1_metrics.jsonl"

python3 benchmarks/bench_train.py --device cuda --preset base --seq-len 512 --batch-size 32 --precision bf16 \
    --corpus "$CORPUS" --compile --no-hf 2>&1 | tee "$OUT/bench_train_compile.txt"
