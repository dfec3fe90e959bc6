#!/usr/bin/env bash
# The GPU check on a bare machine without network: install the carried wheels and mmrobust into a
# private folder, then run benchmarks/gpu_check.py with the arguments given.
#
#   bash benchmarks/gpu_check.sh --fetch-wheels          here, with the package registry: wheels -> .whl/
#   bash benchmarks/gpu_check.sh --device cuda -o OUT   on the GPU machine, with .whl/ copied along
#
# Environment: PYTHON (default python3), MMROBUST_WHEELS (default .whl), MMROBUST_SITE (default
# /tmp/mmrobust_site, emptied first).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELS=${MMROBUST_WHEELS:-.whl}
SITE=${MMROBUST_SITE:-/tmp/mmrobust_site}

if [ "${1:-}" = "--fetch-wheels" ]; then
    mkdir -p "$WHEELS"
    grep -v '^#' benchmarks/gpu_wheels.txt | xargs "$PYTHON" -m pip download -q --no-deps --only-binary=:all: \
        --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$WHEELS"
    du -ch "$WHEELS"/*.whl | tail -n 1
    exit 0
fi

wanted=$(grep -vc '^#' benchmarks/gpu_wheels.txt)
found=$(find "$WHEELS" -maxdepth 1 -name '*.whl' 2>/dev/null | wc -l)
if [ "$found" -lt "$wanted" ]; then
    echo "gpu_check.sh: $WHEELS holds $found of the $wanted wheels of benchmarks/gpu_wheels.txt;" \
         "run 'bash benchmarks/gpu_check.sh --fetch-wheels' where pip reaches the registry, and carry $WHEELS" >&2
    exit 2
fi
rm -rf "$SITE"
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$WHEELS"/*.whl
# mmrobust itself, from this tree (its stage folders install as mmseg_robust.*).
"$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" benchmarks/gpu_check.py "$@"
