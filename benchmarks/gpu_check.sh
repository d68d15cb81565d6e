#!/usr/bin/env bash
# The GPU checks of issues 5 and 6, as one script for a lent GPU machine (run from the repository root):
#   CORPUS=path/to/corpus OUT=results/ bash benchmarks/gpu_check.sh
# Planned to fit one 10-minute device call (compilation included); everything it prints is saved under $OUT.
# 1. bench_train, BERT-base, 512 tokens, 32 sequences a step, spanbert vs transformers' BertForMaskedLM,
#    for each mixed-precision mode: bf16 autocast and bf16-master (bf16 weights, fp32 master weights),
#    eager (both models), then compiled (spanbert only) (tokens/s and MFU);
# 2. `spanbert pretrain --gpus 1` (the distributed launcher, NCCL) at BERT-base, 512 tokens,
#    --precision bf16-master --compile.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
CORPUS=${CORPUS:-../shared/data/corpus}
OUT=${OUT:-gpu-results}
WORK=$(mktemp -d)
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/device.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, torch.cuda.get_device_name(), 'transformers', transformers.__version__)" | tee -a "$OUT/device.txt"

BENCH="python3 benchmarks/bench_train.py --device cuda --preset base --seq-len 512 --batch-size 32 --corpus $CORPUS --steps 10 --repeats 3"
for precision in bf16 bf16-master; do
    $BENCH --precision "$precision" 2>&1 | tee "$OUT/bench_train_$precision.txt"
    $BENCH --precision "$precision" --compile --no-hf 2>&1 | tee "$OUT/bench_train_${precision}_compile.txt"
done
grep -H "^spanbert" "$OUT"/bench_train_*.txt | tee "$OUT/summary.txt"

python3 -m spanbert_cli tokenize "$CORPUS" --docs file --vocab-size 30522 --out "$WORK/tok" --quiet
python3 -m spanbert_cli shard "$WORK/tok" --max-seq-len 512 --out "$WORK/shards" --quiet
python3 -m spanbert_cli pretrain "$WORK/shards" --gpus 1 --model base --precision bf16-master --compile \
    --batch-size 32 --max-steps 80 --warmup-steps 8 --log-every 10 --eval-every 0 --save-every 80 \
    --num-workers 4 --out "$WORK/run" --json | tee "$OUT/pretrain_gpus1.json"
cp "$WORK/run/metrics.jsonl" "$OUT/pretrain_gpus1_metrics.jsonl"
