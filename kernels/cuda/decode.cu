// Model output -> candidate boxes above a score threshold, on the GPU, so only candidates
// return to the host (NMS stays on the host: a few hundred boxes). One thread per cell
// (NanoDet, per level) or per anchor (YOLOv8); grid.y is the batch item. The CPU decoders in
// pipeline/infer/src/decode.rs are the specification.
#include "common.cuh"

// Mirrors `Candidate` in src/layout.rs (32 bytes). Box in 0..1 of the model input.
struct Candidate {
    float x1, y1, x2, y2;
    float score;
    u32 class_id;
    u32 item;
    u32 reserved;
};

RAI_DEVICE void emit(Candidate* out, u32* count, u32 capacity, float x1, float y1, float x2, float y2,
                     float score, u32 class_id, u32 item) {
    u32 slot = next_slot(count);
    if (slot >= capacity) return;  // the host sees count > capacity and reports it
    Candidate c;
    c.x1 = clampf(x1, 0.0f, 1.0f);
    c.y1 = clampf(y1, 0.0f, 1.0f);
    c.x2 = clampf(x2, 0.0f, 1.0f);
    c.y2 = clampf(y2, 0.0f, 1.0f);
    c.score = score;
    c.class_id = class_id;
    c.item = item;
    c.reserved = 0;
    out[slot] = c;
}

// Softmax expectation over `bins` logits, as `expected_bin` in the CPU decoder.
RAI_DEVICE float expected_bin(const float* logits, int bins) {
    float m = logits[0];
    for (int i = 1; i < bins; i++) m = fmaxf(m, logits[i]);
    float sum = 0.0f, weighted = 0.0f;
    for (int i = 0; i < bins; i++) {
        float e = expf(logits[i] - m);
        sum += e;
        weighted += e * (float)i;
    }
    return weighted / sum;
}

// One level of NanoDet: scores [batch, cells, num_classes] (already sigmoid), boxes
// [batch, cells, 4 * (reg_max + 1)] (distribution logits for left, top, right, bottom).
extern "C" __global__ void nanodet_decode(const float* __restrict__ scores, const float* __restrict__ boxes,
                                          int cells, int grid_w, int stride, int num_classes, int reg_max,
                                          const u32* __restrict__ classes, int n_classes, float min_score,
                                          float in_w, float in_h, Candidate* out, u32* count, u32 capacity) {
    int cell = blockIdx.x * blockDim.x + threadIdx.x;
    u32 item = blockIdx.y;
    if (cell >= cells) return;
    int bins = reg_max + 1;
    const float* row = scores + ((long long)item * cells + cell) * num_classes;
    const float* reg = boxes + ((long long)item * cells + cell) * 4 * bins;
    float s = (float)stride;
    float cx = ((float)(cell % grid_w) + 0.5f) * s;
    float cy = ((float)(cell / grid_w) + 0.5f) * s;
    bool have_dist = false;
    float d[4];
    for (int k = 0; k < n_classes; k++) {
        u32 class_id = classes[k];
        float score = row[class_id];
        if (score < min_score) continue;
        if (!have_dist) {
            for (int side = 0; side < 4; side++) d[side] = expected_bin(reg + side * bins, bins) * s;
            have_dist = true;
        }
        emit(out, count, capacity, (cx - d[0]) / in_w, (cy - d[1]) / in_h, (cx + d[2]) / in_w, (cy + d[3]) / in_h,
             score, class_id, item);
    }
}

// YOLOv8: predictions [batch, 4 + num_classes, anchors], rows cx, cy, w, h (model input
// pixels) then one score per class.
extern "C" __global__ void yolov8_decode(const float* __restrict__ pred, int anchors, int num_classes,
                                         const u32* __restrict__ classes, int n_classes, float min_score,
                                         float in_w, float in_h, Candidate* out, u32* count, u32 capacity) {
    int a = blockIdx.x * blockDim.x + threadIdx.x;
    u32 item = blockIdx.y;
    if (a >= anchors) return;
    const float* d = pred + (long long)item * (4 + num_classes) * anchors;
    for (int k = 0; k < n_classes; k++) {
        u32 class_id = classes[k];
        float score = d[(4 + class_id) * (long long)anchors + a];
        if (score < min_score) continue;
        float cx = d[a], cy = d[anchors + a], w = d[2 * (long long)anchors + a], h = d[3 * (long long)anchors + a];
        emit(out, count, capacity, (cx - w / 2.0f) / in_w, (cy - h / 2.0f) / in_h, (cx + w / 2.0f) / in_w,
             (cy + h / 2.0f) / in_h, score, class_id, item);
    }
}
