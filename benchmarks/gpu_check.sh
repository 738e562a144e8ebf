#!/usr/bin/env bash
# The GPU check of one device lease (issue 14, item 5), prepared to run as one call of about 8 minutes on an
# H200: the training loop against the bare step (throughput.py, alone on the card), then the full profile's
# three trainings and the larger recipe (128 px, 60 epochs, 5x2 folds, all models) side by side (sweep.py).
# Everything it prints and writes goes to $OUT (the device tool brings that folder back).
#
#   bash benchmarks/gpu_check.sh --pack     # here, once: ../shared/data/bccd's two BCCD parts -> .gpu-data/ (20 MB)
#   run(command="bash benchmarks/gpu_check.sh", carry=[".gpu-data"], timeout_s=560)    # the device call
#   DEVICE=cpu QUICK=1 bash benchmarks/gpu_check.sh   # here: every step, tiny, on the CPU (a dry run, ~3 min)
#
# The device's own Python has torch, timm, pandas and scikit-learn: the library runs from src/ without the
# notebook packages (papermill, nbconvert), so the notebooks themselves are not run there; quality.py trains
# with the notebooks' protocol and the profile's recipe. The carried data is BCCD only: notebook 08's PBC
# (133 MB) is over what one call can carry.
set -uo pipefail
cd "$(dirname "$0")/.."
DATA_COPY=.gpu-data/bccd
if [[ "${1:-}" == "--pack" ]]; then
  shared=${BLOODLIB_DATA:-../shared/data/bccd}
  mkdir -p "$DATA_COPY" && cp -r "$shared/dataset-master" "$shared/BCCD_Dataset" "$DATA_COPY/" || exit
  exclude=$(git rev-parse --git-path info/exclude)  # ignored here, carried by name: never committed
  grep -qx '/.gpu-data/' "$exclude" 2>/dev/null || echo /.gpu-data/ >>"$exclude"
  du -sh .gpu-data
  exit
fi
[[ -d "$DATA_COPY/dataset-master" ]] || { echo "no $DATA_COPY: run 'bash benchmarks/gpu_check.sh --pack' first" >&2; exit 2; }

OUT=${OUT:-outputs/gpu-check}
DEVICE=${DEVICE:-cuda}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 BLOODLIB_DATA=$PWD/$DATA_COPY BLOODLIB_CACHE=/tmp/bloodlib-cache
if [[ -n "${QUICK:-}" ]]; then
  sizes=(64); measure=(--steps 2 --repeats 1); recipe=(--epochs 1 --folds 2); larger=(--size 64 --epochs 1 --folds 2)
  parallel=2; deadline=300
else
  sizes=(96 128); measure=(); recipe=(); larger=(--size 128 --epochs 60 --folds 5 --repeats 2)
  parallel=6; deadline=330
fi
started=$SECONDS
step() { echo "== $1 ($((SECONDS - started)) s)"; }

step "machine"
{ nvidia-smi -L 2>/dev/null; $PY -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__,
'cuda', torch.cuda.is_available())"; git log -1 --format='commit %H' 2>/dev/null || echo 'commit: no git here'; } | tee "$OUT/machine.txt"

# the ratio on the real images at the notebooks' batch (32), then on random images at a larger batch (the real
# training part holds too few images for enough steps of 128): how much of the gap is per-step overhead
step "throughput, real images, batch 32"
$PY benchmarks/throughput.py --device "$DEVICE" --real --sizes "${sizes[@]}" "${measure[@]}" 2>&1 | tee "$OUT/throughput-b32.txt"
step "throughput, random images, batch 128"
$PY benchmarks/throughput.py --device "$DEVICE" --sizes "${sizes[@]}" --batch-size 128 "${measure[@]}" \
  2>&1 | tee "$OUT/throughput-b128.txt"

step "full profile and larger recipe, side by side"
jobs=$OUT/jobs.txt
for model in resnet18 efficientnet_b0 alexnet; do
  echo "--model $model --threads 2 ${recipe[*]}"
  echo "--model $model --threads 2 ${larger[*]}"
done >"$jobs"
$PY benchmarks/sweep.py "$jobs" --jobs "$parallel" --deadline "$deadline" --log "$OUT/runs.jsonl" --logs "$OUT/logs" \
  2>&1 | tee "$OUT/sweep.txt"
# the logs folder holds one file per run: bring back one file, not six (the tool returns at most 8 files)
tail -n 40 "$OUT"/logs/*.log >"$OUT/sweep-logs.txt" 2>/dev/null && rm -rf "$OUT/logs"
step "done"
