#!/usr/bin/env bash
# The tuning search (issue 22) on a lent GPU, in one call: the committed study goes along, several workers share
# it on the one card, and the study comes back in $OUT to replace the committed one. Every trial trains in fp32
# (search.search_settings pins it on CUDA too: no autocast, no TF32), so GPU trials join the CPU trials' studies
# under the same names; the trials table records each trial's device.
#
#   bash benchmarks/gpu_check.sh --pack && bash benchmarks/gpu_tune.sh --pack   # here, once: data and wheels
#   run(command="bash benchmarks/gpu_tune.sh", carry=[".gpu-data"], timeout_s=420)   # the device call
#   cp <files_at>/study.db benchmarks/results/tuning/study.db      # back here, with no local worker running
#   python -m bloodlib tune resnet18 efficientnet_b0 alexnet --trials 0   # rewrites trials.csv, prints the summary
#   DEVICE=cpu QUICK=1 bash benchmarks/gpu_tune.sh   # here: the same steps, a smoke study in outputs/ (~2 min)
#
# Run benchmarks/gpu_check.sh first in a lease (it is the lease's first check); this one uses what time is left.
# Workers stop drawing new trials after $SECONDS_FOR_TRIALS; a trial still running when the call ends is failed
# and queued again by the next search that opens the study (heartbeats), so nothing is half-counted.
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS=.gpu-data/wheels
if [[ "${1:-}" == "--pack" ]]; then
  # the device's python (3.12, torch, timm, pandas, scikit-learn) lacks the search's packages: carried as wheels
  mkdir -p "$WHEELS"
  .venv/bin/pip download --quiet --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 --no-deps \
    -d "$WHEELS" optuna==5.0.0 SQLAlchemy==2.1.9 alembic==1.20.1 Mako==1.4.3 colorlog==6.12.0 defusedxml==0.7.1 \
    greenlet || exit
  du -sh .gpu-data
  exit
fi
[[ -d .gpu-data/bccd/dataset-master ]] || { echo "no .gpu-data/bccd: run 'bash benchmarks/gpu_check.sh --pack'" >&2; exit 2; }

OUT=${OUT:-outputs/gpu-tune}
DEVICE=${DEVICE:-cuda}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 BLOODLIB_CACHE=/tmp/bloodlib-cache
if ! $PY -c "import optuna" 2>/dev/null; then
  $PY -m pip install --quiet --no-index --find-links "$WHEELS" --target /tmp/tune-packages optuna colorlog \
    defusedxml sqlalchemy alembic mako greenlet || exit
  export PYTHONPATH=/tmp/tune-packages
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
[[ "$DEVICE" == cpu ]] && export CUDA_VISIBLE_DEVICES=""
if [[ -n "${QUICK:-}" ]]; then
  workers=2; SECONDS_FOR_TRIALS=${SECONDS_FOR_TRIALS:-20}; profile=smoke; trials=1
else
  workers=${WORKERS:-6}; SECONDS_FOR_TRIALS=${SECONDS_FOR_TRIALS:-240}; profile=full; trials=12
  cp benchmarks/results/tuning/study.db "$OUT/study.db" || exit  # the committed study, continued there
fi
{ nvidia-smi -L 2>/dev/null; git log -1 --format='commit %H' 2>/dev/null; echo "workers $workers, new trials for ${SECONDS_FOR_TRIALS} s"; } \
  | tee "$OUT/machine.txt"
for i in $(seq "$workers"); do
  $PY -m bloodlib tune resnet18 efficientnet_b0 alexnet --trials "$trials" --profile "$profile" --threads 2 \
    --storage "sqlite:///$PWD/$OUT/study.db" --table "$OUT/trials.csv" --timeout "$SECONDS_FOR_TRIALS" \
    --data-dir .gpu-data/bccd >"$OUT/worker-$i.log" 2>&1 &
  sleep 3  # one worker at a time opens the study (its first draw sees the others' claims)
done
wait
tail -n 12 "$OUT"/worker-*.log >"$OUT/workers.txt" && rm -f "$OUT"/worker-*.log
$PY -m bloodlib tune resnet18 efficientnet_b0 alexnet --trials 0 --profile "$profile" \
  --storage "sqlite:///$PWD/$OUT/study.db" --table "$OUT/trials.csv" --data-dir .gpu-data/bccd | tee "$OUT/summary.txt"
