#!/usr/bin/env bash
# Here, with network: download the wheels of wheels.txt for the GPU machine (CPython 3.12, x86-64 Linux) into
# REPO/.whl (git-ignored; name it in the device call's `carry`). Packages published as source only (rouge-score)
# are built into a pure-Python wheel here.
#   bash examples/benchmarks/gpu/fetch_wheels.sh [--no-bitsandbytes] [--python-version 3.12]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
dest="$repo/.whl"
python_version=3.12
skip_bnb=0
while [ $# -gt 0 ]; do
  case "$1" in
    --no-bitsandbytes) skip_bnb=1 ;;
    --python-version) python_version=$2; shift ;;
    *) echo "unknown option $1 (use --no-bitsandbytes, --python-version X.Y)" >&2; exit 2 ;;
  esac
  shift
done
rm -rf "$dest" && mkdir -p "$dest"
platforms=()
for n in 2_17 2_24 2_27 2_28 2_31 2_34 2_35; do platforms+=(--platform "manylinux_${n}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64)
grep -v -E '^\s*(#|$)' "$here/wheels.txt" | while read -r requirement; do
  if [ "$skip_bnb" = 1 ] && [[ "$requirement" == bitsandbytes* ]]; then continue; fi
  if ! python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$python_version" \
      --implementation cp "${platforms[@]}" -d "$dest" "$requirement" 2>/dev/null; then
    # Source-only on PyPI: build a wheel here (pure Python packages only).
    python3 -m pip wheel -q --no-deps -w "$dest" "$requirement"
  fi
done
for whl in "$dest"/*.whl; do
  case "$(basename "$whl")" in
    *-py3-none-any.whl | *-py2.py3-none-any.whl | *-py"${python_version/./}"-none-any.whl | *manylinux*x86_64*.whl) ;;
    *) echo "error: $(basename "$whl") would not install on CPython $python_version x86-64" >&2; exit 1 ;;
  esac
done
ls -1 "$dest"
echo "$(ls "$dest" | wc -l) wheels, $(du -sm "$dest" | cut -f1) MB in $dest"
