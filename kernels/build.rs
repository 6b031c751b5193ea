//! Compiles the CUDA sources as plain C++ with a shim for the CUDA built-ins (host
//! emulation), so the CPU-side tests run the kernel bodies themselves.

fn main() {
    for f in [
        "cuda/common.cuh",
        "cuda/host_shim.h",
        "cuda/preprocess.cu",
        "cuda/decode.cu",
        "cuda/gate.cu",
        "cuda/host_launch.cpp",
    ] {
        println!("cargo:rerun-if-changed={f}");
    }
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .file("cuda/host_launch.cpp")
        .warnings(true)
        .extra_warnings(true)
        .warnings_into_errors(true)
        .compile("retail_kernels_host");
}
