"""Line protocol shared by the timing workers of benchmarks/peers_speed.py (each runs in
its own tool's virtual environment, so it imports nothing from cellmaps): one JSON request
per stdin line {"image": path, "truth": path}, one JSON reply per stdout line with the
stage times in seconds and the object count."""

from __future__ import annotations

import json
import sys
import time


def serve(run, info: dict | None = None) -> None:
    """Answer requests with ``run(image_path, truth_path) -> dict`` until stdin closes. The
    ready line carries ``info`` (how the tool is set up: versions, threads, precision).
    Seconds a run reports under ``extra`` (timings beside the end-to-end path, such as a
    tool's other tiling) are left out of its ``total_s``."""
    print(json.dumps({"ready": True, "info": info or {}}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        t = time.perf_counter()
        out = run(req["image"], req.get("truth"))
        out["total_s"] = time.perf_counter() - t - sum(out.get("extra", {}).values())
        print(json.dumps(out), flush=True)


class Stopwatch:
    """Named stage times: ``with sw("net"): ...``."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    def __call__(self, name: str):
        sw = self

        class _Stage:
            def __enter__(self):
                self.t = time.perf_counter()

            def __exit__(self, *exc):
                sw.times[name] = sw.times.get(name, 0.0) + time.perf_counter() - self.t

        return _Stage()
