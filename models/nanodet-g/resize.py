"""Writes NanoDet-g for another input size: the graph is fully convolutional (its Resize nodes
scale by factors, its Reshapes keep the cell count free), so only the declared input and
output shapes change. Writes the float and INT8 models and a manifest beside them, so a camera
with small people gets a larger input by pointing `detector.manifest` at a file, no code.
Accepted only if ONNX Runtime runs both and gives the cell count the manifest implies.

Usage: resize.py MODEL_DIR MANIFEST.toml OUT_DIR HEIGHT WIDTH
"""
import os
import re
import shutil
import sys

import numpy as np
import onnx
import onnxruntime as ort

model_dir, manifest, out_dir, height, width = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
strides = (8, 16, 32)
if height % 32 or width % 32 or not (64 <= height <= 2048 and 64 <= width <= 2048):
    sys.exit(f"input {width}x{height}: both sides must be multiples of 32 within 64..2048")
os.makedirs(out_dir, exist_ok=True)
cells = sum((height // s) * (width // s) for s in strides)
names = {}
for kind, src in (("file", "nanodet-g.onnx"), ("int8-file", "nanodet-g-int8.onnx")):
    model = onnx.load(os.path.join(model_dir, src))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_value, dims[3].dim_value = height, width
    for output in model.graph.output:
        output.type.tensor_type.shape.dim[1].dim_param = "cells"
    del model.graph.value_info[:]
    onnx.checker.check_model(model)
    name = src.replace("nanodet-g", f"nanodet-g-{width}x{height}")
    path = os.path.join(out_dir, name)
    onnx.save(model, path + ".partial")
    session = ort.InferenceSession(path + ".partial", providers=["CPUExecutionProvider"])
    outputs = session.run(None, {model.graph.input[0].name: np.zeros((1, 3, height, width), np.float32)})
    got = sum(o.shape[1] for o in outputs) // 2
    if got != cells:
        sys.exit(f"{name}: {got} cells, expected {cells}")
    os.replace(path + ".partial", path)
    names[kind] = name
text = open(manifest).read()
for pattern, value in (
    (r'(?m)^file = ".*"', f'file = "{names["file"]}"'),
    (r'(?m)^int8-file = ".*"', f'int8-file = "{names["int8-file"]}"'),
    (r"(?m)^shape = \[.*\]", f"shape = [1, 3, {height}, {width}]"),
    (r'(?m)^name = "nanodet-g"', f'name = "nanodet-g-{width}x{height}"'),
):
    text, n = re.subn(pattern, value, text)
    if n != 1:
        sys.exit(f"{manifest}: expected one line matching {pattern}, found {n}")
shutil.copy(os.path.join(os.path.dirname(manifest), "NOTICE"), out_dir)
# The manifest last: its presence means the folder is complete.
with open(os.path.join(out_dir, "manifest.toml.partial"), "w") as f:
    f.write(f"# NanoDet-g at {width}x{height}, written by models/nanodet-g/resize.py\n" + text)
os.replace(os.path.join(out_dir, "manifest.toml.partial"), os.path.join(out_dir, "manifest.toml"))
print(f"{out_dir}/manifest.toml: {width}x{height}, {cells} cells")
