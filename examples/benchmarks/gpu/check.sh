#!/usr/bin/env bash
# On the GPU machine (bare and offline): install the carried wheels from REPO/.whl into a separate folder, put it and
# the repository on the path (hf_unlearn runs from the source tree, no install), and run run_all.py; the report and
# the whole log go to $OUT (the device tool brings that folder back), or to REPO/gpu_check_out elsewhere.
#   device run: bash examples/benchmarks/gpu/check.sh            (carry: [".whl"], timeout_s ~560)
#   rehearsal:  DEVICE=cpu bash examples/benchmarks/gpu/check.sh --smoke
# Extra arguments go to run_all.py. HF_UNLEARN_COMMIT, if set, is written into the report. WHEEL_DIR (default .whl),
# SITE_DIR (where they are installed) and PYTHON (default python3) may be set.
set -uo pipefail
cd "$(dirname "$0")/../../.."
out=${OUT:-$PWD/gpu_check_out}
site=${SITE_DIR:-/tmp/hf_unlearn_site}
wheels=${WHEEL_DIR:-.whl}
python=${PYTHON:-python3}
mkdir -p "$out"
if compgen -G "$wheels/*.whl" >/dev/null; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$wheels"/*.whl \
    || { echo "installing the carried wheels failed" | tee "$out/gpu_check.log"; exit 1; }
else
  echo "no wheels in $wheels/: using what is installed (bash examples/benchmarks/gpu/fetch_wheels.sh fetches them)"
fi
export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
"$python" examples/benchmarks/run_all.py --device "${DEVICE:-cuda}" --output "$out/gpu_check.md" "$@" 2>&1 \
  | tee "$out/gpu_check.log"
exit "${PIPESTATUS[0]}"
