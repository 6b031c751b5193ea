// Host emulation of the few CUDA built-ins the kernels use, so the same .cu source runs on
// the CPU in tests (each launch is a loop over the grid; see src/host.rs).
#pragma once
#include <math.h>
#include <cstdint>
#include <cstring>

typedef uint64_t u64;
typedef uint32_t u32;
typedef uint16_t u16;
typedef uint8_t u8;

struct rai_dim3 {
    unsigned x, y, z;
};
extern thread_local rai_dim3 threadIdx, blockIdx, blockDim, gridDim;

#define __global__
#define RAI_DEVICE static inline
#define __restrict__

// IEEE 754 binary16, round to nearest even (as PTX cvt.rn.f16.f32).
static inline u16 f32_to_f16(float f) {
    u32 x;
    std::memcpy(&x, &f, 4);
    u32 sign = (x >> 16) & 0x8000u;
    u32 mag = x & 0x7fffffffu;
    if (mag >= 0x7f800000u) return (u16)(sign | 0x7c00u | (mag > 0x7f800000u ? 0x200u : 0u));
    if (mag >= 0x477ff000u) return (u16)(sign | 0x7c00u);  // rounds to infinity
    if (mag < 0x38800000u) {                               // subnormal or zero
        if (mag < 0x33000000u) return (u16)sign;
        u32 e = mag >> 23;
        u32 m = (mag & 0x7fffffu) | 0x800000u;
        u32 shift = 126u - e;                               // 14..24
        u32 half = m >> shift;
        u32 rem = m & ((1u << shift) - 1u);
        u32 mid = 1u << (shift - 1u);
        if (rem > mid || (rem == mid && (half & 1u))) half++;
        return (u16)(sign | half);
    }
    u32 half = ((mag - 0x38000000u) >> 13);
    u32 rem = mag & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (half & 1u))) half++;
    return (u16)(sign | half);
}

static inline u32 next_slot(u32* counter) { return (*counter)++; }
static inline void add_u64(u64* sum, u64 v) { *sum += v; }
