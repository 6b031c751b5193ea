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
  CARGO_TARGET_DIR="$tools/tansu-target" cargo install tansu --version "$TANSU_VERSION" --locked \
    --features dynostore,libsql --root "$tansu_dir.part" --quiet
  mv "$tansu_dir.part" "$tansu_dir"
  rm -rf "$tools/tansu-target"
fi
ln -sfn "$tansu_dir" "$tools/tansu"
log "tansu: $("$tools/tansu/bin/tansu" --version 2>/dev/null || echo "$tansu_dir/bin/tansu")"
