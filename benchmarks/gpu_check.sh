#!/usr/bin/env bash
# The one prepared GPU check (about 7 minutes on one H200): the `gpu` tests, the three benchmarks on CUDA, bf16 and
# fp16 tokenizer training, a bf16 prior run, and the shipped pipelines on CUDA; then one summary table.
#
#   bash benchmarks/gpu_check.sh            # from the repository root, on a machine with CUDA
#
# It runs from a plain checkout: `src/` goes on PYTHONPATH (nothing is installed), and packages the machine lacks may
# be brought as wheels in `.whl/` (installed into /tmp/site first; see docs/gpu.md for the list and the command that
# downloads them). Every stage has its own time limit and the next stage runs whatever happened; each stage's log
# goes to logs/ under $OUT (or gpu_check_out/), packed as logs.tar.gz at the end, beside summary.md (each stage's exit
# status and time).
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS="${OUT:-gpu_check_out}"
OUT_DIR="$RESULTS/logs"
mkdir -p "$OUT_DIR"
PYTHON="${PYTHON:-python3}"
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "installing the carried wheels failed"; exit 1; }
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD/src:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
WORK="$(mktemp -d)"
SUMMARY=()

stage() {  # stage NAME LIMIT_SECONDS COMMAND...: run, log to $OUT_DIR/NAME.log, remember status and time
  local name="$1" limit="$2"; shift 2
  local start=$SECONDS
  echo "=== $name (limit ${limit} s): $*"
  timeout "$limit" "$@" > "$OUT_DIR/$name.log" 2>&1
  local status=$?
  tail -n 40 "$OUT_DIR/$name.log"
  SUMMARY+=("| $name | $status | $((SECONDS - start)) |")
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT_DIR/device.txt"
"$PYTHON" -c "import torch, transformers, diffusers, accelerate; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'| transformers', transformers.__version__, '| diffusers', diffusers.__version__, '| accelerate', accelerate.__version__)" \
  | tee -a "$OUT_DIR/device.txt"
date -u +"%Y-%m-%d %H:%M UTC" | tee -a "$OUT_DIR/device.txt"

stage gpu_tests 240 "$PYTHON" -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py tests/test_host_syncs.py
stage bench_quantizer 150 "$PYTHON" benchmarks/bench_quantizer.py --device cuda --repeats 5
stage bench_train_step 120 "$PYTHON" benchmarks/bench_train_step.py --device cuda --batch-size 64 --repeats 10
stage bench_sampling 180 "$PYTHON" benchmarks/bench_sampling.py --device cuda --repeats 3
for precision in bf16 fp16; do
  stage "train_vqgan_$precision" 120 "$PYTHON" examples/train_vqgan.py --mixed_precision "$precision" \
    --max_train_steps 300 --report_to none --validation_steps 300 --checkpointing_steps 150 \
    --output_dir "$WORK/vqgan-$precision"
  "$PYTHON" - "$WORK/vqgan-$precision" "$precision" <<'EOF' | tee -a "$OUT_DIR/train_vqgan_$precision.log"
import json, sys
summary = json.load(open(f"{sys.argv[1]}/training_summary.json"))
validation = summary.get("validation", {})
print(f"{sys.argv[2]}: {summary['steps']} steps in {summary['train_seconds']} s, PSNR {validation.get('psnr', float('nan')):.2f} dB, "
      f"usage {validation.get('codebook_usage', float('nan')):.1%}")
EOF
done
stage encode_bf16 90 "$PYTHON" examples/encode_dataset.py --mixed_precision bf16 --output_dir "$WORK/codes"
stage train_prior_bf16 150 "$PYTHON" examples/train_prior.py --mixed_precision bf16 --codes_dir "$WORK/codes" \
  --max_train_steps 200 --report_to none --validation_steps 200 --checkpointing_steps 100 \
  --output_dir "$WORK/prior"
stage shipped_pipelines 150 "$PYTHON" benchmarks/shipped_pipelines_on_gpu.py

echo
echo "| stage | exit status | seconds |"
echo "|---|---:|---:|"
printf '%s\n' "${SUMMARY[@]}" | tee "$RESULTS/summary.md"
tar czf "$RESULTS/logs.tar.gz" -C "$RESULTS" logs && rm -rf "$OUT_DIR"
