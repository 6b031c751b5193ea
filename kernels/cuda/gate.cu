// Motion gating for frames in GPU memory: how far a picture's luma plane has moved from the
// reference (the luma of the last frame sent to inference, rows packed), as sums of absolute
// differences per band of rows. One thread per span of a row, one atomic add each: the
// host emulation runs it as it is (no shared memory, no block reduction).
#include "common.cuh"

#define RAI_GATE_SPAN 256

extern "C" __global__ void luma_band_absdiff(const u8* __restrict__ luma, int pitch, const u8* __restrict__ ref,
                                             int width, int height, int band_rows, u64* sums) {
    long long spans = (width + RAI_GATE_SPAN - 1) / RAI_GATE_SPAN;
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= spans * height) return;
    int y = (int)(i / spans);
    int x0 = (int)(i % spans) * RAI_GATE_SPAN;
    int x1 = x0 + RAI_GATE_SPAN < width ? x0 + RAI_GATE_SPAN : width;
    const u8* row = luma + (long long)y * pitch;
    const u8* ref_row = ref + (long long)y * width;
    u32 sum = 0;  // at most 256 x 255
    for (int x = x0; x < x1; x++) {
        int d = (int)row[x] - (int)ref_row[x];
        sum += (u32)(d < 0 ? -d : d);
    }
    add_u64(&sums[y / band_rows], (u64)sum);
}

// The reference: the picture's luma plane, rows packed. One thread per byte.
extern "C" __global__ void copy_luma(const u8* __restrict__ luma, int pitch, u8* __restrict__ ref, int width,
                                     int height) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)width * height) return;
    ref[i] = luma[(i / width) * pitch + i % width];
}
