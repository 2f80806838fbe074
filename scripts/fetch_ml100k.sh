#!/usr/bin/env bash
# Fetches MovieLens-100K as RecBole's atomic files ml-100k.inter and ml-100k.item (genres) from
# the recbole==1.2.1 wheel on PyPI into a cache directory (nothing of MovieLens is stored in this
# repository) and prints that directory. Usage: bash scripts/fetch_ml100k.sh [DEST_DIR]
#   default DEST_DIR: ${GOALRANK_CACHE:-$HOME/.cache/goalrank_jax}/ml-100k
set -euo pipefail
dest="${1:-${GOALRANK_CACHE:-${HOME:-/tmp}/.cache/goalrank_jax}/ml-100k}"
if [ -s "$dest/ml-100k.inter" ] && [ -s "$dest/ml-100k.item" ]; then
  echo "$dest"
  exit 0
fi
mkdir -p "$dest"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python -m pip download --quiet --no-deps recbole==1.2.1 -d "$tmp" >&2
python - "$tmp" "$dest" <<'PY'
import glob
import os
import sys
import zipfile

wheel_dir, dest = sys.argv[1:]
wheels = glob.glob(os.path.join(wheel_dir, "recbole-1.2.1-*.whl"))
if not wheels:
    sys.exit(f"recbole-1.2.1 wheel not found in {wheel_dir}")
# The interactions and the movies' genres (item side features).
with zipfile.ZipFile(wheels[0]) as wheel:
    for name in ("ml-100k.inter", "ml-100k.item"):
        data = wheel.read(f"recbole/dataset_example/ml-100k/{name}")
        tmp_path = os.path.join(dest, name + ".tmp")
        with open(tmp_path, "wb") as f:
            f.write(data)
        os.replace(tmp_path, os.path.join(dest, name))
PY
echo "$dest"
