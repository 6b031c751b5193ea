#!/usr/bin/env bash
# make accuracy: every labelled clip analysed with the default config and with each variant
# below, scored by `retail-ai evaluate`, and the table written to docs/ACCURACY.md and into
# the README (between the accuracy markers). Variants run in the same session, so their fps
# are comparable with each other (not with another machine's).
set -euo pipefail
cd "$(dirname "$0")/.."
home="${RETAIL_AI_HOME:-$HOME/.cache/retail-ai}"
bin="${CARGO_TARGET_DIR:-$home/target}/debug/retail-ai"
out="${ACCURACY_OUT:-results/accuracy}"
# shellcheck source=versions.env
source scripts/versions.env

# Larger inputs of the same model (a manifest file each, models/nanodet-g/resize.py): the
# 4:3 vtest at 544x416 and the 16:9 Market Street at 736x416 instead of 416x416.
sized() { # HEIGHT WIDTH -> the manifest's path
  local dir="$home/models/nanodet-g-$HUMAN_MODELS_VERSION/$2x$1"
  if [ ! -s "$dir/manifest.toml" ]; then
    "$home/venv-quantize-ort$ORT_VERSION-onnx$QUANT_ONNX_VERSION/bin/python" models/nanodet-g/resize.py \
      "$home/models/nanodet-g-$HUMAN_MODELS_VERSION" models/nanodet-g/manifest.toml "$dir" "$1" "$2" >&2
  fi
  printf '%s' "$dir/manifest.toml"
}
m544=$(sized 416 544)
m736=$(sized 416 736)

# name | video | config | truth | extra config lines (a variant)
runs=(
  "vtest|$home/media/vtest.avi|tests/fixtures/vtest.toml|tests/fixtures/truth/vtest|"
  "vtest, every track counted|$home/media/vtest.avi|tests/fixtures/vtest.toml|tests/fixtures/truth/vtest|[analytics]\nstatic-min-move = 0"
  "vtest, input 544x416|$home/media/vtest.avi|tests/fixtures/vtest.toml|tests/fixtures/truth/vtest|[detector]\nmanifest = \"$m544\""
  "market-street|$home/media/market-street-1906.mp4||tests/fixtures/truth/market-street|"
  "market-street, every track counted|$home/media/market-street-1906.mp4||tests/fixtures/truth/market-street|[analytics]\nstatic-min-move = 0"
  "market-street, input 736x416|$home/media/market-street-1906.mp4||tests/fixtures/truth/market-street|[detector]\nmanifest = \"$m736\""
)
rm -rf "$out" && mkdir -p "$out"
reports=()
for run in "${runs[@]}"; do
  IFS='|' read -r name video config truth extra <<<"$run"
  dir="$out/run-${#reports[@]}"
  mkdir -p "$dir"
  cfg="$dir/config.toml"
  { [ -z "$config" ] || cat "$config"; printf '\n%b\n' "$extra"; } >"$cfg"
  echo "== $name" >&2
  "$bin" analyze "$video" --config "$cfg" --out "$dir" --detections "$dir/detections.jsonl" --quiet >/dev/null
  "$bin" evaluate --truth "$truth" --config "$cfg" "$dir" >&2
  printf '%s\n' "$name" >"$dir/name.txt"
  reports+=("$dir")
done
python3 scripts/accuracy_table.py "nanodet-g $HUMAN_MODELS_VERSION (the default INT8 copy)" "${reports[@]}" \
  >docs/ACCURACY.md.partial
mv docs/ACCURACY.md.partial docs/ACCURACY.md
python3 - <<'PY'
import re
import sys
table = open("docs/ACCURACY.md").read()
readme = open("README.md").read()
start, end = "<!-- accuracy:start -->", "<!-- accuracy:end -->"
pattern = re.escape(start) + ".*?" + re.escape(end)
if not re.search(pattern, readme, flags=re.S):
    sys.exit("README.md has no accuracy markers to put the table between")
new = re.sub(pattern, lambda _: start + "\n" + table + end, readme, flags=re.S)
open("README.md.partial", "w").write(new)
PY
mv README.md.partial README.md
cat docs/ACCURACY.md
