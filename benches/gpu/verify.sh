#!/usr/bin/env bash
# The GPU check of issue 12, in one run on a machine with an NVIDIA GPU, a driver for CUDA 13
# and NVRTC 13 (libnvrtc.so.13: the CUDA toolkit's, or a pip nvidia-cuda-nvrtc's; the kernels
# are compiled there at start), no Rust, GStreamer or TensorRT needed.
#
#   here:            bash benches/gpu/verify.sh --build
#                    (builds the kernel tests and the benchmark into results/gpu-carry/,
#                    with GStreamer and a clip for the NVDEC test: about 30 MiB, to carry
#                    to the GPU machine)
#   on the GPU box:  bash benches/gpu/verify.sh [results/gpu-carry]
#
# On the GPU it runs, each under a time limit so the whole finishes well inside 10 minutes:
#   1. the kernel tests with RETAIL_AI_REQUIRE_GPU=1: the device's preprocessing and decoding
#      against the host emulation of the same kernels and the CPU specification (bounds in
#      kernels/tests/kernels_cpu.rs), and PTX for sm_80/sm_90;
#   2. the same GPU tests under compute-sanitizer --tool memcheck;
#   3. the benchmark: batches of 1, 8, 32 NV12 1080p frames to 416x416, GB/s next to the
#      device-to-device copy bandwidth of the same run, and the CPU specification's frames/s;
#   4. NVDEC into CUDA memory handed to the kernels (pipeline/runtime/tests/nvdec.rs), with
#      GStreamer's libraries and plugins (nvcodec included) and an H.264 clip carried from here.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ "${1:-}" = --build ]; then
  out=results/gpu-carry
  rm -rf "$out" && mkdir -p "$out"
  exe() { python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == sys.argv[1]:
        print(m["executable"])' "$1"; }
  cargo test -p retail-kernels --features cuda --test gpu --no-run --message-format=json | exe gpu >"$out/.tests"
  cargo build -p retail-benches --features cuda --bin gpu-preprocess --message-format=json | exe gpu-preprocess >"$out/.bench"
  cargo test -p retail-runtime --features tensorrt --test nvdec --no-run --message-format=json | exe nvdec >"$out/.nvdec"
  cp "$(cat "$out/.tests")" "$out/kernel-tests"
  cp "$(cat "$out/.bench")" "$out/gpu-preprocess"
  cp "$(cat "$out/.nvdec")" "$out/nvdec-tests"
  rm "$out/.tests" "$out/.bench" "$out/.nvdec"
  strip --strip-debug "$out/kernel-tests" "$out/gpu-preprocess" "$out/nvdec-tests"
  # GStreamer for the NVDEC test: the plugins a decodebin of H.264 in MP4 needs, nvcodec, and
  # every library they and the test link but glibc's (the GPU machine has no GStreamer).
  plugins=/usr/lib/x86_64-linux-gnu/gstreamer-1.0
  mkdir -p "$out/gst/plugins" "$out/gst/lib"
  # openh264 decodes the test's reference frames on the CPU, independently of NVDEC.
  for p in coreelements typefindfunctions playback isomp4 videoparsersbad nvcodec app videoconvertscale openh264; do
    cp "$plugins/libgst$p.so" "$out/gst/plugins/"
  done
  if ldd "$out"/gst/plugins/*.so "$out/nvdec-tests" | grep "not found"; then
    echo "verify.sh: a library the carried GStreamer needs is not installed here" >&2; exit 1
  fi
  # Everything but glibc's own libraries, which must be the GPU machine's.
  ldd "$out"/gst/plugins/*.so "$out/nvdec-tests" | awk '$3 ~ /^\// {print $3}' | sort -u |
    grep -v -E '/(libc|libm|libmvec|ld-linux-x86-64|libpthread|libdl|librt|libresolv|libutil|libanl|libnsl|libthread_db)\.so' |
    xargs -I{} cp -L {} "$out/gst/lib/"
  gst-launch-1.0 -q videotestsrc num-buffers=12 pattern=ball ! video/x-raw,format=I420,width=1280,height=720,framerate=10/1 ! \
    x264enc ! video/x-h264,profile=constrained-baseline ! h264parse ! mp4mux ! filesink location="$out/nvdec.mp4"
  cp "$0" "$out/verify.sh"
  du -sh "$out"
  exit 0
fi

dir=${1:-results/gpu-carry}
for lib in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
  $(python3 -c 'import nvidia, os; print(os.path.join(nvidia.__path__[0], "cu13", "lib"))' 2>/dev/null); do
  [ -d "$lib" ] && export LD_LIBRARY_PATH="$lib:${LD_LIBRARY_PATH:-}"
done
export RETAIL_AI_REQUIRE_GPU=1 RETAIL_AI_REQUIRE_NVRTC=1
status=0
step() { echo; echo "== $1"; shift; "$@" || { echo "!! failed: $?"; status=1; }; }
step "GPU" nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv
step "kernel tests (device vs host emulation and reference)" timeout 180 "$dir/kernel-tests" --test-threads=1
if command -v compute-sanitizer >/dev/null || [ -x /usr/local/cuda/bin/compute-sanitizer ]; then
  cs=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  step "compute-sanitizer memcheck" timeout 240 "$cs" --tool memcheck --error-exitcode 99 \
    "$dir/kernel-tests" --test-threads=1 gpu_
else
  echo "!! compute-sanitizer not found"; status=1
fi
step "benchmark" timeout 120 "$dir/gpu-preprocess" --reps 50
# GStreamer from the carry only, its registry built in-process and afresh (nvcodec's elements
# depend on the driver it finds); nvcodec registers its CUDA elements and NVDEC decoders when
# it finds the driver and libnvcuvid. Its conversions compile with NVRTC for compute_52,
# which NVRTC 13 no longer targets: the test's NV12 passes through unconverted.
registry=$(mktemp -d)/registry.bin
step "NVDEC into CUDA memory, handed to the kernels" env LD_LIBRARY_PATH="$dir/gst/lib:${LD_LIBRARY_PATH:-}" \
  GST_PLUGIN_SYSTEM_PATH_1_0="$dir/gst/plugins" GST_PLUGIN_PATH_1_0= GST_REGISTRY_FORK=no \
  GST_REGISTRY_1_0="$registry" GST_CUDA_NVRTC_LIBNAME=libnvrtc.so.13 \
  RETAIL_AI_NVDEC_CLIP="$dir/nvdec.mp4" timeout 120 "$dir/nvdec-tests" --test-threads=1 --nocapture
echo
[ "$status" -eq 0 ] && echo "verify: all steps passed" || echo "verify: a step failed"
exit "$status"
