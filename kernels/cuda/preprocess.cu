// Decoded YUV frames (NV12 or I420, any size, any pitch) to the model's input tensor:
// bilinear resize (stretch or letterbox, decided per frame on the host), YUV -> RGB with the
// frame's colour matrix, channel order, (v - mean) / std, planar NCHW, f32 or f16. A batch of
// frames of different sizes in one launch: grid.y is the frame, grid.x covers the output
// pixels. src/reference.rs is the CPU specification this must match.
#include "common.cuh"

// One source frame of the batch. Mirrors `FrameDesc` in src/layout.rs (64 bytes).
struct FrameDesc {
    u64 luma;           // Y plane
    u64 chroma_u;       // NV12: interleaved UV plane; I420: U plane
    u64 chroma_v;       // I420: V plane; NV12: unused
    int width, height;  // source size in pixels (even)
    int luma_pitch, chroma_pitch;  // bytes per row
    int format;         // 0 NV12, 1 I420
    int dst_x, dst_y, dst_w, dst_h;  // the part of the model input the frame fills
    int reserved;
};

// Mirrors `PreprocessParams` in src/layout.rs.
struct PreprocessParams {
    float matrix[9];      // rows R, G, B of (Y - y_offset, U - 128, V - 128)
    float y_offset;       // 16 for limited range, 0 for full
    float scale[3];       // per output channel: 1 / std
    float bias[3];        // per output channel: -mean / std
    float pad_value[3];   // per output channel: the normalised letterbox fill
    int channel_src[3];   // output channel c is R (0), G (1) or B (2)
    int out_w, out_h;
    int half;             // 0: f32 output, 1: f16 (IEEE binary16, round to nearest even)
};

RAI_DEVICE float texel(const u8* plane, int pitch, int stride, int offset, int w, int h, int x, int y) {
    x = x < 0 ? 0 : (x >= w ? w - 1 : x);
    y = y < 0 ? 0 : (y >= h ? h - 1 : y);
    return (float)plane[(long long)y * pitch + (long long)x * stride + offset];
}

// Bilinear sample at (u, v) in pixel coordinates (pixel centres at integer + 0.5 - 0.5 = i).
RAI_DEVICE float bilinear(const u8* plane, int pitch, int stride, int offset, int w, int h, float u, float v) {
    float fx0 = floorf(u), fy0 = floorf(v);
    int x0 = (int)fx0, y0 = (int)fy0;
    float ax = u - fx0, ay = v - fy0;
    float top = texel(plane, pitch, stride, offset, w, h, x0, y0) * (1.0f - ax) +
                texel(plane, pitch, stride, offset, w, h, x0 + 1, y0) * ax;
    float bottom = texel(plane, pitch, stride, offset, w, h, x0, y0 + 1) * (1.0f - ax) +
                   texel(plane, pitch, stride, offset, w, h, x0 + 1, y0 + 1) * ax;
    return top * (1.0f - ay) + bottom * ay;
}

RAI_DEVICE void store(void* out, long long at, float value, int half) {
    if (half) {
        ((u16*)out)[at] = f32_to_f16(value);
    } else {
        ((float*)out)[at] = value;
    }
}

extern "C" __global__ void yuv_to_tensor(const FrameDesc* __restrict__ frames, PreprocessParams p, void* out) {
    int pixel = blockIdx.x * blockDim.x + threadIdx.x;
    int item = blockIdx.y;
    if (pixel >= p.out_w * p.out_h) return;
    int x = pixel % p.out_w, y = pixel / p.out_w;
    FrameDesc f = frames[item];
    long long plane = (long long)p.out_w * p.out_h;
    long long base = (long long)item * 3 * plane + pixel;
    if (x < f.dst_x || y < f.dst_y || x >= f.dst_x + f.dst_w || y >= f.dst_y + f.dst_h) {
        for (int c = 0; c < 3; c++) store(out, base + c * plane, p.pad_value[c], p.half);
        return;
    }
    // Half-pixel centres: output pixel centre -> source coordinates.
    float u = ((float)(x - f.dst_x) + 0.5f) * ((float)f.width / (float)f.dst_w) - 0.5f;
    float v = ((float)(y - f.dst_y) + 0.5f) * ((float)f.height / (float)f.dst_h) - 0.5f;
    // Chroma is sited at the centre of each 2x2 block of luma.
    float cu = (u + 0.5f) * 0.5f - 0.5f, cv = (v + 0.5f) * 0.5f - 0.5f;
    int cw = f.width / 2, ch = f.height / 2;
    const u8* luma = (const u8*)f.luma;
    float yy = bilinear(luma, f.luma_pitch, 1, 0, f.width, f.height, u, v) - p.y_offset;
    float uu, vv;
    if (f.format == 0) {
        const u8* uv = (const u8*)f.chroma_u;
        uu = bilinear(uv, f.chroma_pitch, 2, 0, cw, ch, cu, cv) - 128.0f;
        vv = bilinear(uv, f.chroma_pitch, 2, 1, cw, ch, cu, cv) - 128.0f;
    } else {
        uu = bilinear((const u8*)f.chroma_u, f.chroma_pitch, 1, 0, cw, ch, cu, cv) - 128.0f;
        vv = bilinear((const u8*)f.chroma_v, f.chroma_pitch, 1, 0, cw, ch, cu, cv) - 128.0f;
    }
    float rgb[3];
    for (int i = 0; i < 3; i++) {
        float value = p.matrix[3 * i] * yy + p.matrix[3 * i + 1] * uu + p.matrix[3 * i + 2] * vv;
        rgb[i] = clampf(value, 0.0f, 255.0f);
    }
    for (int c = 0; c < 3; c++) {
        store(out, base + c * plane, rgb[p.channel_src[c]] * p.scale[c] + p.bias[c], p.half);
    }
}
