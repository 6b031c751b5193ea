"""Writes a copy of an ONNX detector whose batch dimension is dynamic, so that one call runs
several frames (the engine's cross-stream batches). tf2onnx fixes the batch at 1 in the
graph's input, outputs and the leading 1 of its Reshape targets; Reshape's 0 ("copy this
dimension from the input") makes them follow the batch. Accepted only if a batch of 3 gives
each frame's single-frame outputs.

Usage: batch.py MODEL.onnx OUT.onnx
"""
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

src, dst = sys.argv[1], sys.argv[2]
model = onnx.load(src)
initializers = {i.name: i for i in model.graph.initializer}
for node in model.graph.node:
    target = initializers.get(node.input[1]) if node.op_type == "Reshape" else None
    if target is None:
        continue
    shape = numpy_helper.to_array(target)
    if shape.ndim == 1 and len(shape) > 1 and shape[0] == 1:
        shape = shape.copy()
        shape[0] = 0
        target.CopyFrom(numpy_helper.from_array(shape, target.name))
for value in list(model.graph.input) + list(model.graph.output):
    value.type.tensor_type.shape.dim[0].dim_param = "batch"
del model.graph.value_info[:]
part = dst + ".part"
onnx.save(model, part)

options = ort.SessionOptions()
options.log_severity_level = 3
single = ort.InferenceSession(src, options, providers=["CPUExecutionProvider"])
batched = ort.InferenceSession(part, options, providers=["CPUExecutionProvider"])
name, shape = single.get_inputs()[0].name, single.get_inputs()[0].shape
frames = np.random.default_rng(7).uniform(-2, 2, size=[3] + list(shape[1:])).astype(np.float32)
outputs = batched.run(None, {name: frames})
for k in range(3):
    for got, want in zip(outputs, single.run(None, {name: frames[k : k + 1]})):
        if got.shape[0] != 3 or not np.allclose(got[k], want[0], atol=1e-4):
            sys.exit(f"{dst}: frame {k} of a batch differs from the same frame alone")
os.replace(part, dst)
print(f"batch model ready: {dst}", file=sys.stderr)
