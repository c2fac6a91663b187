#!/usr/bin/env bash
# The GPU measurements still pending, one prepared run per device call (each well inside the 10-minute limit).
#
#   make device-wheels                                      # here, once: the packages the device image lacks
#   device run, carry [".whl"]: bash benchmarks/gpu_checks.sh step         # bench_step --preset gpu
#   device run, carry [".whl"]: bash benchmarks/gpu_checks.sh efficiency   # bench_efficiency --preset gpu
#
# JSON, logs and plots go to $OUT (which the device tool brings back), else benchmarks/results. Flags after the
# name go to the benchmark, so the same command smoke-tests on a CPU with tiny sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/results}"
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA')"
case "${1:-}" in
  step)
    python3 benchmarks/bench_step.py --preset gpu --output "$out/bench_step_gpu.json" "${@:2}" 2>&1 |
      tee "$out/bench_step_gpu.log" ;;
  efficiency)
    python3 benchmarks/bench_efficiency.py --preset gpu --output "$out/efficiency_gpu.json" --plots_dir "$out/images" \
      --markdown "$out/efficiency_gpu.md" "${@:2}" 2>&1 | tee "$out/efficiency_gpu.log" ;;
  *)
    echo "usage: $0 step|efficiency [benchmark flags]" >&2
    exit 2 ;;
esac
