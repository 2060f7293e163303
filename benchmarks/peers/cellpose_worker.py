"""Cellpose 3 timing worker (run with benchmarks/peers/cellpose/.venv/bin/python).

Random weights (no downloads): ``CellposeModel(pretrained_model=False)`` builds the cyto3
network (CPnet, 32–256 channels, 2 input channels) without loading weights. End to end per
image: read (cellpose.io.imread), the grey + empty channel pair and percentile normalisation cellpose applies
for ``channels=[0, 0]``, the net (224-px tiles, overlap 0.1, batch 8: cellpose's defaults,
diameter 30 so no resizing), and the post-processing (``compute_masks``: 200 flow
iterations, mask assembly, flow-error QC) — run on flows and cell probability made from
the truth labels (``masks_to_flows``), as cellpose's training code makes them, because a
net with random weights predicts no usable flows."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import numpy as np  # noqa: E402
import tifffile  # noqa: E402
import torch  # noqa: E402
from cellpose import dynamics, models, transforms  # noqa: E402
from cellpose.io import imread  # noqa: E402
from worker_common import Stopwatch, serve  # noqa: E402

torch.set_num_threads(int(os.environ.get("PEER_THREADS", "2")))
torch.manual_seed(0)
MODEL = models.CellposeModel(gpu=False, pretrained_model=False)
TRUTH_MAPS: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def truth_maps(path: str) -> tuple[np.ndarray, np.ndarray]:
    if path not in TRUTH_MAPS:
        lab = tifffile.imread(path).astype(np.int32)
        # the net is trained to predict 5 × the unit flows (cellpose's loss), and
        # compute_masks divides by 5 again
        flows = 5.0 * dynamics.masks_to_flows(lab).astype(np.float32)
        cellprob = np.where(lab > 0, 5.0, -5.0).astype(np.float32)
        TRUTH_MAPS[path] = (flows, cellprob)
    return TRUTH_MAPS[path]


def run(image: str, truth: str) -> dict:
    sw = Stopwatch()
    flows, cellprob = truth_maps(truth)  # prepared outside the timed stages (cached)
    with sw("read"):
        img = imread(image)[..., :3]  # cellpose's reader (OpenCV); RGB
    with sw("normalise"):
        grey = img.mean(axis=2, dtype=np.float32)
        x = np.stack([grey, np.zeros_like(grey)], axis=-1)[np.newaxis]
        x = transforms.normalize_img(x, axis=-1)
    with sw("net"):
        dp, cp, _ = MODEL._run_net(x, batch_size=8, bsize=224, tile_overlap=0.1)
    with sw("post"):
        masks = dynamics.compute_masks(flows, cellprob, niter=200)
        masks = masks[0] if isinstance(masks, tuple) else masks
    return {"stages": sw.times, "count": int(masks.max()), "net_shape": list(cp.shape)}


if __name__ == "__main__":
    serve(run)
