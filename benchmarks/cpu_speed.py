"""CPU speed: bf16 autocast + channels_last against plain fp32, for training and inference.

    python -m benchmarks.cpu_speed [--repeats 10] [--seed 0]

A base-16 U-Net (depth 4, two decoders, as DeepDistance) and the MicroNet residual U-Net
(base 16): one training step on a batch of 4 crops of 256×256, and inference on a batch of
4 tiles of 256×256, timed after 3 warm-up runs; median of ``--repeats``.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks._common import (
    machine,
    machine_line,
    median_time,
    update_benchmarks_md,
    write_results,
)
from cellmaps.model import autocast, bf16_supported
from cellmaps.nets import HeadSpec, build_net


def bench(kind: str, opts: dict, fast: bool, repeats: int, seed: int) -> dict:
    torch.manual_seed(seed)
    heads = [HeadSpec("a", 1), HeadSpec("b", 1)]
    net = build_net(kind, 3, heads, **opts)
    x = torch.randn(4, 3, 256, 256)
    precision = "bf16" if fast else "fp32"
    if fast:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)

    def train_step():
        net.train()
        with autocast(precision):
            out = net(x)
        loss = sum(v.float().pow(2).mean() for v in out.values())
        opt.zero_grad()
        loss.backward()
        opt.step()

    def infer():
        net.eval()
        with torch.no_grad(), autocast(precision):
            net(x)

    return {
        "train_step_s": median_time(train_step, repeats, warmup=3)[0],
        "inference_s": median_time(infer, repeats, warmup=3)[0],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    nets = {
        "U-Net base 16, 2 decoders": ("unet", {"base": 16, "depth": 4, "dropout": 0.2}),
        "MicroNet residual U-Net base 16": ("residual_unet", {"base": 16, "depth": 4}),
    }
    rows = []
    for name, (kind, opts) in nets.items():
        slow = bench(kind, opts, False, args.repeats, args.seed)
        fast = bench(kind, opts, True, args.repeats, args.seed)
        rows.append(
            {
                "net": name,
                "fp32": slow,
                "bf16_channels_last": fast,
                "train_speedup": slow["train_step_s"] / fast["train_step_s"],
                "inference_speedup": slow["inference_s"] / fast["inference_s"],
            }
        )
        print(rows[-1])
    mach = machine()
    mach["bf16_native"] = bf16_supported()
    mach["torch"] = torch.__version__
    mach["torch_threads"] = torch.get_num_threads()
    write_results(
        "cpu_speed", {"machine": mach, "seed": args.seed, "batch": 4, "tile": 256, "rows": rows}
    )
    lines = [
        "## CPU speed: bf16 autocast + channels_last (`benchmarks/cpu_speed.py`)",
        "",
        f"`python -m benchmarks.cpu_speed --repeats {args.repeats} --seed {args.seed}`: batch of 4 × 3 × 256 × 256, "
        f"median of {args.repeats} after 3 warm-ups; torch {torch.__version__}, {mach['torch_threads']} threads, "
        f"native bf16: {mach['bf16_native']}. {machine_line(mach)}",
        "",
        "| net | train step fp32 (s) | train step bf16+CL (s) | speed-up | inference fp32 (s) | inference bf16+CL (s) | speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['net']} | {r['fp32']['train_step_s']:.3f} | {r['bf16_channels_last']['train_step_s']:.3f} | "
            f"{r['train_speedup']:.2f}× | {r['fp32']['inference_s']:.3f} | {r['bf16_channels_last']['inference_s']:.3f} | "
            f"{r['inference_speedup']:.2f}× |"
        )
    lines.append("")
    lines.append(
        "`precision: auto` (the default in every recipe) turns bf16 on only where the CPU runs it natively "
        "(`torch.ops.mkldnn._is_mkldnn_bf16_supported()`); channels_last is always used."
    )
    update_benchmarks_md("cpu_speed", "\n".join(lines))


if __name__ == "__main__":
    main()
