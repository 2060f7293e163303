"""cellmaps timing worker (run with the project's own Python): the bundled default model,
end to end per image — read, then ``Model.detect`` (normalisation, tiled net, streamed
decoding of its own predicted maps into detections). The net's share is the time spent in
``Model.forward``; decoding (peaks, evidence floor, flat-region rule) is the rest of
``detect``."""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

import torch  # noqa: E402
from worker_common import Stopwatch, serve  # noqa: E402

from cellmaps.io import read_image  # noqa: E402
from cellmaps.model import load_model  # noqa: E402

torch.set_num_threads(int(os.environ.get("PEER_THREADS", "2")))
MODEL = load_model()
_forward = MODEL.forward
NET_TIME = [0.0]


def timed_forward(x):
    t = time.perf_counter()
    out = _forward(x)
    NET_TIME[0] += time.perf_counter() - t
    return out


MODEL.forward = timed_forward


def run(image: str, truth: str | None) -> dict:
    sw = Stopwatch()
    with sw("read"):
        img = read_image(image)
    NET_TIME[0] = 0.0
    t = time.perf_counter()
    pts = MODEL.detect(img)
    detect = time.perf_counter() - t
    sw.times["net"] = NET_TIME[0]
    sw.times["decode + normalise"] = detect - NET_TIME[0]
    return {"stages": sw.times, "count": len(pts)}


if __name__ == "__main__":
    serve(run)
