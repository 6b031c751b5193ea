"""Checks a converted NanoDet model against its manifest and a fixture image.

Fails (exit 1) unless the input/output names and shapes match the manifest and at least one
person is found in the image. Independent of the Rust decoder on purpose: two implementations
of the same decode agreeing is the evidence that the manifest is right.
"""
import sys
import tomllib

import numpy as np
import onnxruntime as ort
from PIL import Image


def main(manifest_path, model_path, image_path):
    with open(manifest_path, "rb") as f:
        m = tomllib.load(f)
    inp = m["input"]
    sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    got_in = sess.get_inputs()[0]
    if got_in.name != inp["name"] or list(got_in.shape) != inp["shape"]:
        sys.exit(f"input mismatch: model has {got_in.name} {got_in.shape}, manifest says {inp['name']} {inp['shape']}")
    outs = {o.name: o.shape for o in sess.get_outputs()}
    _, _, h, w = inp["shape"]
    img = Image.open(image_path).convert("RGB")
    iw, ih = img.size
    x = np.asarray(img.resize((w, h), Image.BILINEAR), dtype=np.float32)
    if inp["channel-order"] == "bgr":
        x = x[:, :, ::-1]
    x = (x - np.array(inp["mean"], np.float32)) / np.array(inp["std"], np.float32)
    x = np.ascontiguousarray(x.transpose(2, 0, 1)[None])
    dec = m["decoder"]
    names = [n for lv in dec["levels"] for n in (lv["scores"], lv["boxes"])]
    for n in names:
        if n not in outs:
            sys.exit(f"output {n} named in manifest is not in the model (has {sorted(outs)})")
    res = dict(zip(names, sess.run(names, {inp["name"]: x})))
    bins = dec["reg-max"] + 1
    people = []
    for lv in dec["levels"]:
        s = lv["stride"]
        scores = res[lv["scores"]][0]
        boxes = res[lv["boxes"]][0].reshape(-1, 4, bins)
        g = w // s
        for i in np.nonzero(scores[:, 0] > m["thresholds"]["score"])[0]:
            d = np.exp(boxes[i] - boxes[i].max(axis=1, keepdims=True))
            d = (d / d.sum(axis=1, keepdims=True)) @ np.arange(bins) * s
            cx, cy = (i % g + 0.5) * s, (i // g + 0.5) * s
            people.append((scores[i, 0], (cx - d[0]) * iw / w, (cy - d[1]) * ih / h,
                           (cx + d[2]) * iw / w, (cy + d[3]) * ih / h))
    if not people:
        sys.exit(f"no person found in {image_path}: the model or its manifest is wrong")
    best = max(people)
    print(f"verified: {len(people)} person cells above threshold, best score {best[0]:.2f} "
          f"box {[round(float(v)) for v in best[1:]]}", file=sys.stderr)


if __name__ == "__main__":
    main(*sys.argv[1:])
