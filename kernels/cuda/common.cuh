// Shared by every kernel. Compiled by NVRTC on a GPU machine and, for the CPU-side tests, by
// the host C++ compiler with host_shim.h (see kernels/README.md): keep to the subset both
// accept (no CUDA headers, no templates over device intrinsics).
#pragma once

#ifdef __CUDACC_RTC__
typedef unsigned long long u64;
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;
#define RAI_DEVICE __device__ __forceinline__

// NVRTC 13.0 has no built-in cuda_fp16.h: round to nearest even with one PTX instruction.
RAI_DEVICE u16 f32_to_f16(float x) {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(x));
    return h;
}
RAI_DEVICE u32 next_slot(u32* counter) { return atomicAdd(counter, 1u); }
RAI_DEVICE void add_u64(u64* sum, u64 v) { atomicAdd(sum, v); }
#else
#include "host_shim.h"
#endif

RAI_DEVICE float clampf(float x, float lo, float hi) { return fminf(fmaxf(x, lo), hi); }
