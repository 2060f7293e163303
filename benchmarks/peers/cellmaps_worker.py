"""cellmaps timing worker (run with the project's own Python): the bundled default model,
end to end per image — read, then ``Model.detect`` (normalisation, tiled net, streamed
decoding of its own predicted maps into detections). The net's share is the time spent in
``Model.forward`` outside the automatic scale estimate (the model's default policy), which
is timed as a stage of its own, its forward passes included; decoding (peaks, evidence
floor, flat-region rule) and normalisation are the rest of ``detect``.

``CELLMAPS_WORKER_MODE``: ``default`` (as a user runs it: the model's precision policy and
its automatic scale) or ``fp32-scale-1`` (fp32, and the object size given as the model's
training radius, so the net sees the image at its own pixels, as the peers do).
``CELLMAPS_WORKER_MODEL``: a model file to time instead of the bundled default (a candidate
that was not bundled)."""

from __future__ import annotations

import hashlib
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

import torch  # noqa: E402
from worker_common import Stopwatch, serve  # noqa: E402

from cellmaps.io import read_image  # noqa: E402
from cellmaps.model import bundled_model_path, load_model, uses_bf16  # noqa: E402

torch.set_num_threads(int(os.environ.get("PEER_THREADS", "2")))
MODE = os.environ.get("CELLMAPS_WORKER_MODE", "default")
MODEL_PATH = os.environ.get("CELLMAPS_WORKER_MODEL") or str(bundled_model_path())
MODEL = load_model(MODEL_PATH)
if MODE == "fp32-scale-1":
    MODEL.recipe["training"]["precision"] = "fp32"
    OBJECT_SIZE = MODEL.train_radius
elif MODE == "default":
    OBJECT_SIZE = None
else:
    raise SystemExit(f"unknown CELLMAPS_WORKER_MODE {MODE!r}")
PRECISION = MODEL.recipe["training"]["precision"]
_forward = MODEL.forward
NET_TIME = [0.0]


def timed_forward(x):
    t = time.perf_counter()
    out = _forward(x)
    NET_TIME[0] += time.perf_counter() - t
    return out


MODEL.forward = timed_forward
_input_scale = MODEL.input_scale
SCALE_TIME = [0.0, 0.0]  # seconds in the scale estimate, and its net's share of them


def timed_input_scale(*args, **kwargs):
    t, net0 = time.perf_counter(), NET_TIME[0]
    try:
        return _input_scale(*args, **kwargs)
    finally:
        SCALE_TIME[0] += time.perf_counter() - t
        SCALE_TIME[1] += NET_TIME[0] - net0


MODEL.input_scale = timed_input_scale


def run(image: str, truth: str | None) -> dict:
    sw = Stopwatch()
    with sw("read"):
        img = read_image(image)
    NET_TIME[0] = 0.0
    SCALE_TIME[:] = [0.0, 0.0]
    t = time.perf_counter()
    pts = MODEL.detect(img, object_size=OBJECT_SIZE)
    detect = time.perf_counter() - t
    sw.times["scale estimate (its net included)"] = SCALE_TIME[0]
    sw.times["net"] = NET_TIME[0] - SCALE_TIME[1]
    sw.times["decode + normalise"] = detect - SCALE_TIME[0] - sw.times["net"]
    return {"stages": sw.times, "count": len(pts)}


INFO = {
    "mode": MODE,
    "model": MODEL_PATH,
    "model_sha256": hashlib.sha256(open(MODEL_PATH, "rb").read()).hexdigest()[:16],
    "output_stride": MODEL.recipe["net"].get("output_stride", 1),
    "precision": PRECISION,
    "precision_used": "bf16" if uses_bf16(PRECISION) else "fp32",
    "object_size": "the model's policy: " + str(MODEL.recipe["inference"].get("object_size"))
    if OBJECT_SIZE is None
    else f"{OBJECT_SIZE} px (the training radius: scale 1)",
    "torch": torch.__version__,
    "threads": torch.get_num_threads(),
}

if __name__ == "__main__":
    serve(run, INFO)
