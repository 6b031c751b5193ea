#!/usr/bin/env bash
# The GPU check of issue 12, in one run on a machine with an NVIDIA GPU, a driver for CUDA 13
# and NVRTC 13 (libnvrtc.so.13: the CUDA toolkit's, or a pip nvidia-cuda-nvrtc's; the kernels
# are compiled there at start), no Rust, GStreamer or TensorRT needed.
#
#   here:            bash benches/gpu/verify.sh --build
#                    (builds the kernel tests and the benchmark into results/gpu-carry/,
#                    about 20 MiB, to carry to the GPU machine)
#   on the GPU box:  bash benches/gpu/verify.sh [results/gpu-carry]
#
# On the GPU it runs, each under a time limit so the whole finishes well inside 10 minutes:
#   1. the kernel tests with RETAIL_AI_REQUIRE_GPU=1: the device's preprocessing and decoding
#      against the host emulation of the same kernels and the CPU specification (bounds in
#      kernels/tests/kernels_cpu.rs), and PTX for sm_80/sm_90;
#   2. the same GPU tests under compute-sanitizer --tool memcheck;
#   3. the benchmark: batches of 1, 8, 32 NV12 1080p frames to 416x416, GB/s next to the
#      device-to-device copy bandwidth of the same run, and the CPU specification's frames/s.
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
  cp "$(cat "$out/.tests")" "$out/kernel-tests"
  cp "$(cat "$out/.bench")" "$out/gpu-preprocess"
  rm "$out/.tests" "$out/.bench"
  strip --strip-debug "$out/kernel-tests" "$out/gpu-preprocess"
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
echo
[ "$status" -eq 0 ] && echo "verify: all steps passed" || echo "verify: a step failed"
exit "$status"
