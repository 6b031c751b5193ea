// Host emulation of the kernel launches for the CPU-side tests: the same kernel bodies, one
// "thread" at a time over the whole grid (blockDim 256 as on the GPU).
#include "preprocess.cu"
#include "decode.cu"
#include "gate.cu"

thread_local rai_dim3 threadIdx, blockIdx, blockDim, gridDim;

static void for_grid(unsigned items, unsigned work, void (*body)(void*), void* ctx) {
    blockDim = {256, 1, 1};
    gridDim = {(work + 255) / 256, items, 1};
    for (unsigned y = 0; y < gridDim.y; y++)
        for (unsigned b = 0; b < gridDim.x; b++)
            for (unsigned t = 0; t < blockDim.x; t++) {
                blockIdx = {b, y, 0};
                threadIdx = {t, 0, 0};
                body(ctx);
            }
}

struct YuvArgs {
    const FrameDesc* frames;
    const PreprocessParams* p;
    void* out;
};

extern "C" void rai_host_yuv_to_tensor(const FrameDesc* frames, unsigned batch, const PreprocessParams* p, void* out) {
    YuvArgs a = {frames, p, out};
    for_grid(batch, (unsigned)(p->out_w * p->out_h),
             [](void* c) {
                 YuvArgs* a = (YuvArgs*)c;
                 yuv_to_tensor(a->frames, *a->p, a->out);
             },
             &a);
}

struct NanoDetArgs {
    const float* scores;
    const float* boxes;
    int cells, grid_w, stride, num_classes, reg_max;
    const u32* classes;
    int n_classes;
    float min_score, in_w, in_h;
    Candidate* out;
    u32* count;
    u32 capacity;
};

extern "C" void rai_host_nanodet_decode(const float* scores, const float* boxes, unsigned batch, int cells, int grid_w,
                                        int stride, int num_classes, int reg_max, const u32* classes, int n_classes,
                                        float min_score, float in_w, float in_h, Candidate* out, u32* count,
                                        u32 capacity) {
    NanoDetArgs a = {scores, boxes, cells, grid_w, stride, num_classes, reg_max, classes, n_classes,
                     min_score, in_w, in_h, out, count, capacity};
    for_grid(batch, (unsigned)cells,
             [](void* c) {
                 NanoDetArgs* a = (NanoDetArgs*)c;
                 nanodet_decode(a->scores, a->boxes, a->cells, a->grid_w, a->stride, a->num_classes, a->reg_max,
                                a->classes, a->n_classes, a->min_score, a->in_w, a->in_h, a->out, a->count,
                                a->capacity);
             },
             &a);
}

struct YoloArgs {
    const float* pred;
    int anchors, num_classes;
    const u32* classes;
    int n_classes;
    float min_score, in_w, in_h;
    Candidate* out;
    u32* count;
    u32 capacity;
};

extern "C" void rai_host_yolov8_decode(const float* pred, unsigned batch, int anchors, int num_classes,
                                       const u32* classes, int n_classes, float min_score, float in_w, float in_h,
                                       Candidate* out, u32* count, u32 capacity) {
    YoloArgs a = {pred, anchors, num_classes, classes, n_classes, min_score, in_w, in_h, out, count, capacity};
    for_grid(batch, (unsigned)anchors,
             [](void* c) {
                 YoloArgs* a = (YoloArgs*)c;
                 yolov8_decode(a->pred, a->anchors, a->num_classes, a->classes, a->n_classes, a->min_score, a->in_w,
                               a->in_h, a->out, a->count, a->capacity);
             },
             &a);
}

extern "C" void rai_host_luma_band_absdiff(const u8* luma, int pitch, const u8* ref, int width, int height,
                                           int band_rows, u64* sums) {
    struct Args {
        const u8* luma;
        int pitch;
        const u8* ref;
        int width, height, band_rows;
        u64* sums;
    } a = {luma, pitch, ref, width, height, band_rows, sums};
    unsigned spans = (unsigned)((width + RAI_GATE_SPAN - 1) / RAI_GATE_SPAN);
    for_grid(1, spans * (unsigned)height,
             [](void* c) {
                 Args* a = (Args*)c;
                 luma_band_absdiff(a->luma, a->pitch, a->ref, a->width, a->height, a->band_rows, a->sums);
             },
             &a);
}

extern "C" void rai_host_copy_luma(const u8* luma, int pitch, u8* ref, int width, int height) {
    struct Args {
        const u8* luma;
        int pitch;
        u8* ref;
        int width, height;
    } a = {luma, pitch, ref, width, height};
    for_grid(1, (unsigned)(width * height),
             [](void* c) {
                 Args* a = (Args*)c;
                 copy_luma(a->luma, a->pitch, a->ref, a->width, a->height);
             },
             &a);
}

// Lets the tests check the software f16 rounding against Rust's.
extern "C" u16 rai_host_f32_to_f16(float x) { return f32_to_f16(x); }
