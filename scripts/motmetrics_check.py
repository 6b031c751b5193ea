#!/usr/bin/env python3
"""The reference scores for `retail-ai evaluate`: motmetrics on the same files.

    motmetrics_check.py GT_TXT HYP_TXT LABELLED_FRAMES_TXT   -> one JSON line

GT rows with conf 0 or a class other than 1/-1 are not scored (as evaluate does); only the
listed frames are scored; boxes pair at IoU >= 0.5."""

import json
import sys
from collections import defaultdict

import motmetrics as mm
import numpy as np


def rows(path, truth):
    by_frame = defaultdict(list)
    for line in open(path):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        c = [float(v) for v in line.split(",")]
        if truth and ((len(c) > 6 and c[6] == 0) or (len(c) > 7 and c[7] not in (1, -1))):
            continue
        by_frame[int(c[0])].append((int(c[1]), c[2:6]))
    return by_frame


def main(gt_path, hyp_path, frames_path):
    gt, hyp = rows(gt_path, True), rows(hyp_path, False)
    frames = sorted(int(l) for l in open(frames_path) if l.strip())
    acc = mm.MOTAccumulator(auto_id=False)
    for f in frames:
        objs, hyps = gt.get(f, []), hyp.get(f, [])
        dists = mm.distances.iou_matrix(
            np.array([b for _, b in objs]).reshape(-1, 4), np.array([b for _, b in hyps]).reshape(-1, 4), max_iou=0.5
        )
        acc.update([i for i, _ in objs], [i for i, _ in hyps], dists, frameid=f)
    names = ["mota", "idf1", "idtp", "num_objects", "num_predictions", "num_matches", "num_switches",
             "num_misses", "num_false_positives"]
    summary = mm.metrics.create().compute(acc, metrics=names, name="x")
    print(json.dumps({n: float(summary[n].iloc[0]) for n in names}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
