"""StarDist 2D trained from scratch within a wall-clock budget, then used on test images
(run with benchmarks/peers/stardist/.venv/bin/python; imports nothing from cellmaps).

    stardist_train.py JOB.json

JOB.json: {"train": [[image, mask], ...], "val": [[image, mask], ...],
"test": [[image, out_label_tif], ...], "minutes": budget, "patch": 128, "batch": 4,
"scale": input scale (1 = as read; 1/3 shrinks large cells to StarDist's patch),
"outdir": folder for StarDist's model, "seed": 0}

The pipeline of StarDist's own 2D training notebook: percentile normalisation (1–99.8),
label holes filled, random flips / 90° rotations / intensity scaling, 32 rays, grid 2×2,
its default U-Net; training stops when the budget is spent (at the end of the running
step), the weights with the best validation loss are kept, the probability and NMS
thresholds are optimised on the validation images (``optimize_thresholds``, its standard
step, timed separately). Each test image is then read, normalised, predicted (net + NMS +
polygon rendering) and its label image written; the end-to-end seconds per image are
reported. Prints one JSON line with the timings."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
import tifffile
from csbdeep.utils import normalize
from PIL import Image
from skimage.transform import resize
from stardist import fill_label_holes
from stardist.models import Config2D, StarDist2D

tf.config.threading.set_intra_op_parallelism_threads(int(os.environ.get("PEER_THREADS", "2")))
tf.config.threading.set_inter_op_parallelism_threads(1)


RNG = np.random.default_rng(0)  # reseeded from the job's seed in main()


def read_gray(path: str, scale: float) -> np.ndarray:
    img = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
    if scale != 1.0:
        shape = [max(8, round(s * scale)) for s in img.shape]
        img = resize(img, shape, order=1, preserve_range=True, anti_aliasing=True)
    return normalize(img, 1, 99.8, axis=(0, 1)).astype(np.float32)


def read_labels(path: str, scale: float) -> np.ndarray:
    lab = tifffile.imread(path).astype(np.int32)
    if scale != 1.0:
        shape = [max(8, round(s * scale)) for s in lab.shape]
        lab = resize(lab, shape, order=0, preserve_range=True, anti_aliasing=False)
    return fill_label_holes(lab.astype(np.int32))


def augment(x: np.ndarray, y: np.ndarray):
    """StarDist's notebook augmenter: random flips and 90° rotations, intensity scale/shift."""
    k = RNG.integers(4)
    x, y = np.rot90(x, k), np.rot90(y, k)
    for ax in (0, 1):
        if RNG.random() > 0.5:
            x, y = np.flip(x, ax), np.flip(y, ax)
    x = x * RNG.uniform(0.6, 2) + RNG.uniform(-0.2, 0.2)
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


class TimeLimit(tf.keras.callbacks.Callback):
    """Stop training once ``seconds`` of wall time have passed since training began."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds, self.t0, self.steps = seconds, None, 0

    def on_train_begin(self, logs=None):
        self.t0 = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if time.perf_counter() - self.t0 > self.seconds:
            self.model.stop_training = True


def upscale_labels(lab: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if lab.shape == tuple(shape):
        return lab
    return resize(lab, shape, order=0, preserve_range=True, anti_aliasing=False).astype(np.int32)


def main(job_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    scale = float(job.get("scale", 1.0))
    global RNG
    RNG = np.random.default_rng(int(job.get("seed", 0)))
    tf.keras.utils.set_random_seed(int(job.get("seed", 0)))
    t0 = time.perf_counter()
    X = [read_gray(i, scale) for i, _ in job["train"]]
    Y = [read_labels(m, scale) for _, m in job["train"]]
    Xv = [read_gray(i, scale) for i, _ in job["val"]]
    Yv = [read_labels(m, scale) for _, m in job["val"]]
    t_data = time.perf_counter() - t0
    patch = int(job.get("patch", 128))
    conf = Config2D(
        n_rays=32,
        grid=(2, 2),
        n_channel_in=1,
        train_patch_size=(patch, patch),
        train_batch_size=int(job.get("batch", 4)),
        use_gpu=False,
        train_tensorboard=False,  # TensorBoard is not installed in the peer venv
    )
    model = StarDist2D(conf, name="stardist", basedir=job["outdir"])
    model.prepare_for_training()
    limit = TimeLimit(60.0 * float(job["minutes"]))
    model.callbacks.append(limit)
    t0 = time.perf_counter()
    model.train(X, Y, validation_data=(Xv, Yv), augmenter=augment, epochs=10000, steps_per_epoch=50)
    t_train = time.perf_counter() - t0
    best = Path(job["outdir"]) / "stardist" / "weights_best.weights.h5"
    if not best.is_file():
        best = best.with_name("weights_best.h5")
    if best.is_file():
        model.keras_model.load_weights(str(best))
    t0 = time.perf_counter()
    thresholds = model.optimize_thresholds(Xv, Yv)
    t_thresholds = time.perf_counter() - t0
    per_image = []
    for image, out in job["test"]:
        t0 = time.perf_counter()
        x = read_gray(image, scale)
        lab, _ = model.predict_instances(
            x, n_tiles=model._guess_n_tiles(x), show_tile_progress=False
        )
        full = Image.open(image).size[::-1]
        lab = upscale_labels(lab, full)
        per_image.append(time.perf_counter() - t0)
        tifffile.imwrite(out, lab.astype(np.int32))
    print(
        json.dumps(
            {
                "data_s": t_data,
                "train_s": t_train,
                "train_steps": limit.steps,
                "thresholds_s": t_thresholds,
                "thresholds": {k: float(v) for k, v in thresholds.items()},
                "predict_s": per_image,
                "weights": str(best) if best.is_file() else "last",
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main(sys.argv[1])
