"""StarDist 2D timing worker (run with benchmarks/peers/stardist/.venv/bin/python).

Random weights (no downloads): the default 2D config with 3 input channels and grid 2×2,
the configuration StarDist recommends for H&E. End to end per image: read, percentile
normalisation (1–99.8, as StarDist's examples), the net as ``predict_instances`` runs it by
default (``model.predict(x)``, ``n_tiles=None``: the whole image at once), and the
post-processing (non-maximum suppression of star polygons and
rendering them to labels) — run on probability / distance maps made from the truth labels
(``edt_prob``, ``star_dist``), as StarDist's own training code makes them, because a
net with random weights predicts no usable maps.

Beside the end-to-end path (not in its total), the net is timed once more with the tiles
StarDist guesses for large images (``_guess_n_tiles``: 4 × 4 at 2048², each with its
receptive-field overlap), which an earlier version of this worker used for the net: 1.6–1.7×
slower than the whole image here."""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

import numpy as np  # noqa: E402
import stardist  # noqa: E402
import tensorflow as tf  # noqa: E402
import tifffile  # noqa: E402
from csbdeep.utils import normalize  # noqa: E402
from PIL import Image  # noqa: E402
from stardist import edt_prob, star_dist  # noqa: E402
from stardist.models import Config2D, StarDist2D  # noqa: E402
from worker_common import Stopwatch, serve  # noqa: E402

threads = int(os.environ.get("PEER_THREADS", "2"))
tf.config.threading.set_intra_op_parallelism_threads(threads)
tf.config.threading.set_inter_op_parallelism_threads(1)
tf.keras.utils.set_random_seed(0)  # python, numpy and TensorFlow seeds
MODEL = StarDist2D(Config2D(n_channel_in=3, grid=(2, 2)), name=None, basedir=None)
TRUTH_MAPS: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def truth_maps(path: str) -> tuple[np.ndarray, np.ndarray]:
    if path not in TRUTH_MAPS:
        lab = tifffile.imread(path)
        g = MODEL.config.grid
        prob = edt_prob(lab)[:: g[0], :: g[1]]
        dist = star_dist(lab, MODEL.config.n_rays, grid=g)
        TRUTH_MAPS[path] = (prob.astype(np.float32), dist.astype(np.float32))
    return TRUTH_MAPS[path]


def run(image: str, truth: str) -> dict:
    sw = Stopwatch()
    prob_t, dist_t = truth_maps(truth)  # prepared outside the timed stages (cached)
    with sw("read"):
        img = np.asarray(Image.open(image).convert("RGB"))
    with sw("normalise"):
        x = normalize(img, 1, 99.8, axis=(0, 1))
    with sw("net"):
        prob, dist = MODEL.predict(x)
    n_tiles = MODEL._guess_n_tiles(x)
    t = time.perf_counter()
    MODEL.predict(x, n_tiles=n_tiles, show_tile_progress=False)
    tiled = time.perf_counter() - t
    with sw("post"):
        labels, info = MODEL._instances_from_prediction(
            img.shape, prob_t, dist_t, prob_thresh=0.5, nms_thresh=0.4
        )
    return {"stages": sw.times, "count": len(info["points"]), "net_shape": list(prob.shape),
            "extra": {f"net, n_tiles {n_tiles[:2]} as StarDist guesses": tiled}}  # fmt: skip


INFO = {
    "tensorflow": tf.__version__,
    "stardist": stardist.__version__,
    "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
    "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
    # TensorFlow uses oneDNN on x86 Linux unless TF_ENABLE_ONEDNN_OPTS=0
    "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") != "0",
    "config": {
        "n_rays": MODEL.config.n_rays,
        "grid": list(MODEL.config.grid),
        "n_channel_in": MODEL.config.n_channel_in,
    },  # fmt: skip
    "input": "float32 after normalize(1, 99.8); net n_tiles None (whole image)",
    "precision": "fp32",
}

if __name__ == "__main__":
    serve(run, INFO)
