#!/usr/bin/env bash
# The GPU measurements still pending, as one prepared run per device call (each well inside the 10-minute limit).
#
#   make device-wheels                                   # here, once: the packages the device image lacks
#   device run, carry [".whl"]: bash benchmarks/gpu_checks.sh all          # everything below in one call (~9 min)
#   device run, carry [".whl"]: bash benchmarks/gpu_checks.sh step         # bench_step --preset gpu (+ profile)
#   device run, carry [".whl"]: bash benchmarks/gpu_checks.sh efficiency   # bench_efficiency --preset gpu
#     (EFFICIENCY_TIMEOUT=<s> stops it early; the rows of the methods already done still come back)
#
# Results go to $OUT (which the device tool brings back, at most 8 files), else benchmarks/results: each JSON and
# log (written as they run, so a run cut short still returns its log), and results.tar.gz with the plots, the
# step's profile table and trace. Flags after the name go to the benchmark, so
# the same command smoke-tests on a CPU with tiny sizes (`all` takes them in STEP_FLAGS and EFFICIENCY_FLAGS). `all` stops the efficiency run at GPU_CHECKS_DEADLINE_S
# seconds after its start (default 540), so the step results always come back.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/results}"
work="$(mktemp -d)"
mkdir -p "$out"
start=$SECONDS
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__,
  'transformers', transformers.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA')"

step() {
  python3 benchmarks/bench_step.py --preset gpu --output "$out/bench_step_gpu.json" --profile_dir "$work/profile" "$@" \
    2>&1 | tee "$out/bench_step_gpu.log"
}
efficiency() {  # under $EFFICIENCY_TIMEOUT seconds when it is set (SIGINT, so the log says where it stopped)
  ${EFFICIENCY_TIMEOUT:+timeout --signal=INT "$EFFICIENCY_TIMEOUT"} python3 benchmarks/bench_efficiency.py \
    --preset gpu --output "$out/efficiency_gpu.json" --plots_dir "$work/images" --markdown "$out/efficiency_gpu.md" \
    --work_dir "$work/efficiency" "$@" 2>&1 | tee "$out/efficiency_gpu.log"
}
pack() {  # plots, profile, trace and each finished method's row (kept if the run is cut short), in one file
  tar -czf "$out/results.tar.gz" -C "$work" --exclude "efficiency/latents" --exclude "efficiency/data.safetensors" \
    --exclude "*.safetensors" .
}

case "${1:-}" in
  step) step "${@:2}"; pack ;;
  efficiency) efficiency "${@:2}" || echo "gpu_checks: the efficiency run stopped early"; pack ;;
  all)
    # shellcheck disable=SC2086  # the flag variables are word lists
    step ${STEP_FLAGS:-}
    left=$(( ${GPU_CHECKS_DEADLINE_S:-540} - (SECONDS - start) ))
    echo "gpu_checks: ${left} s left for the efficiency run"
    if (( left > 60 )); then
      # A short run of the headline rows: LMD-CS against both MAEs on the same data and budget.
      # shellcheck disable=SC2086
      EFFICIENCY_TIMEOUT=$left efficiency --methods lmd-cs mae-pixel mae-ours --budget_s 20 --projector_steps 300 \
        --no-throughput ${EFFICIENCY_FLAGS:-} || echo "gpu_checks: the efficiency run stopped early"
    fi
    pack ;;
  *)
    echo "usage: $0 step|efficiency|all [benchmark flags]" >&2
    exit 2 ;;
esac
echo "gpu_checks: done in $(( SECONDS - start )) s"
