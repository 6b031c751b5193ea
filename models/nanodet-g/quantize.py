"""Static INT8 quantisation of NanoDet-g (QDQ, per-channel, u8 activations, s8 weights).

Calibrates on frames of the sample video and refuses the result unless it finds as many
people as the float model on the same frames (within 5 %) and still finds the person in the
fixture image. Usage: quantize.py MANIFEST FP32_ONNX FRAMES_BGR OUT_ONNX
FRAMES_BGR is raw packed BGR at the model's input size, frame after frame.
"""
import sys
import tomllib

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from PIL import Image


def load_frames(manifest, path):
    _, _, h, w = manifest["input"]["shape"]
    raw = np.fromfile(path, dtype=np.uint8)
    n = raw.size // (h * w * 3)
    if n < 10:
        sys.exit(f"only {n} calibration frames in {path}")
    return list(raw[: n * h * w * 3].reshape(n, h, w, 3))


def zooms(frame):
    """2x zooms of the four quadrants and a 3x zoom of the centre.

    The sample video shows small people; without larger ones the coarse (stride 16/32)
    heads are calibrated to a range that clips the scores of people close to the camera.
    """
    h, w, _ = frame.shape
    crops = [frame[y:y + h // 2, x:x + w // 2] for y in (0, h // 2) for x in (0, w // 2)]
    crops.append(frame[h // 3:2 * h // 3, w // 3:2 * w // 3])
    return [np.asarray(Image.fromarray(c).resize((w, h), Image.BILINEAR)) for c in crops]


def to_tensor(manifest, frame):
    mean = np.array(manifest["input"]["mean"], np.float32)
    std = np.array(manifest["input"]["std"], np.float32)
    return np.ascontiguousarray(((frame.astype(np.float32) - mean) / std).transpose(2, 0, 1)[None])


def infinite_pads(model_path):
    """Pad nodes that pad with +-inf (max-pool padding) and the nodes reading them.

    Their output range is infinite, which has no INT8 scale: quantising them turns the whole
    network into NaN. They are cheap, so they stay in float.
    """
    model = onnx.load(model_path)
    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    pads = [n for n in model.graph.node if n.op_type == "Pad" and len(n.input) > 2
            and n.input[2] in consts and not np.isfinite(consts[n.input[2]]).all()]
    outputs = {o for n in pads for o in n.output}
    readers = [n for n in model.graph.node if outputs & set(n.input)]
    return [n.name for n in pads + readers]


class Frames(CalibrationDataReader):
    def __init__(self, name, tensors):
        self.it = iter([{name: t} for t in tensors])

    def get_next(self):
        return next(self.it, None)


def person_cells(model_path, manifest, tensors):
    sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    names = [lv["scores"] for lv in manifest["decoder"]["levels"]]
    thr = manifest["thresholds"]["score"]
    total = 0
    for t in tensors:
        outs = sess.run(names, {manifest["input"]["name"]: t})
        total += sum(int((o[0][:, manifest["labels"]["person"]] > thr).sum()) for o in outs)
    return total


def main(manifest_path, fp32, frames_path, out):
    with open(manifest_path, "rb") as f:
        manifest = tomllib.load(f)
    frames = load_frames(manifest, frames_path)
    calib = [to_tensor(manifest, f) for f in frames[::2]]
    calib += [to_tensor(manifest, z) for f in frames[::8] for z in zooms(f)]
    check = [to_tensor(manifest, f) for f in frames[1::2]]
    quantize_static(
        fp32,
        out,
        Frames(manifest["input"]["name"], calib),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=infinite_pads(fp32),
    )
    ref, got = person_cells(fp32, manifest, check), person_cells(out, manifest, check)
    print(f"person cells above threshold on {len(check)} held-out frames: fp32 {ref}, int8 {got}", file=sys.stderr)
    if ref == 0 or abs(got - ref) > 0.05 * ref:
        sys.exit(f"int8 model disagrees with fp32 ({got} vs {ref} person cells): not accepted")


if __name__ == "__main__":
    main(*sys.argv[1:])
