"""The training loop: crops → net → task losses → combined loss → step; learning rate by
iteration (warm-up, cosine / one-cycle, or the plateau rule), gradient clipping, an
exponential moving average of the weights, validation on whole images, early stopping,
checkpoints every N steps and exact resume.

Longer than ~500 lines: :class:`Trainer` keeps the loop, validation, checkpoints and resume
together, because exact resume needs every piece of the loop's state in one place.
"""

from __future__ import annotations

import copy
import csv
import os
import random
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from cellmaps.errors import CellmapsInputError
from cellmaps.inference import tile_starts
from cellmaps.io._atomic import atomic_path
from cellmaps.io.images import INTENSITY_RULE
from cellmaps.io.modality import image_modality
from cellmaps.io.scale import standardize
from cellmaps.losses import LOSSES, build_combiner, correlation_penalty
from cellmaps.model import Model, autocast, net_from_recipe
from cellmaps.nets import apply_activation, load_encoder_weights
from cellmaps.optim import build_optimizer, lr_factor
from cellmaps.provenance import code_version
from cellmaps.recipes import task_head
from cellmaps.training.data import TrainingData, load_training_data, make_batch, tile_origins
from cellmaps.tune import apply_tuning, tune_decoding

code_version()  # the code this process runs: read now, before anything edits the files


def validation_windows(h: int, w: int, crop: int) -> list[tuple[int, int, int, int]]:
    """(row, col, height, width) windows of at most crop × crop that cover an h × w image:
    the inference tiling (:func:`cellmaps.inference.tile_starts`) at stride ``crop``, whose
    last window of a row or column ends at the image edge, so every pixel is seen."""
    return [
        (r, c, min(crop, h), min(crop, w))
        for r in tile_starts(h, crop, crop)
        for c in tile_starts(w, crop, crop)
    ]


def ema_net(net: torch.nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel:
    """An exponential moving average of ``net``'s weights and buffers:
    θ_ema ← decay·θ_ema + (1 − decay)·θ after every step (torch's AveragedModel)."""
    return AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


LEAKY_SLOPE = 0.01


def training_activation(pred: torch.Tensor, activation: str) -> torch.Tensor:
    """A head's activation as the loss sees it. ReLU heads train through a leaky ReLU
    (slope 0.01 below 0) and predict with the ReLU: with a plain ReLU a regression head whose
    outputs all fall below 0 gets no gradient and stays dead (seen on DeepDistance's sparse
    inner-distance maps: a head at 0 everywhere after 250 steps, test F 0)."""
    if activation == "relu":
        return torch.nn.functional.leaky_relu(pred, LEAKY_SLOPE)
    return apply_activation(pred, activation)


def task_losses(
    out: dict[str, torch.Tensor],
    targets: dict[str, torch.Tensor],
    tasks: list[dict],
    present: dict[str, torch.Tensor] | None = None,
):
    """Per-task, per-sample losses (B,) for a batch. Heads with a sigmoid/softmax/relu
    activation get it applied except where the loss takes logits (BCE, CE). A sample whose
    annotations lack a task's target (``present`` 0) contributes 0 to that task — the
    indicator 1(y ≠ ∅) of KiNet Eq. 5."""
    losses = {}
    for t in tasks:
        pred = out[task_head(t)]
        kind = t["loss"]
        w = targets[t["weights_map"]] if t.get("weights_map") else None
        if kind == "masked_cross_entropy":
            loss = LOSSES[kind](pred, targets[t["target"]][:, 0])
        elif kind == "weighted_bce":
            loss = LOSSES[kind](pred, targets[t["target"]], w)
        else:
            pred = training_activation(pred.float(), t["activation"])
            opts = dict(t["loss_options"], **({"weights": w} if w is not None else {}))
            loss = LOSSES[kind](pred, targets[t["target"]], **opts)
        if present is not None:
            loss = loss * present[t["target"]]
        losses[t["name"]] = loss
    return losses


def with_class_channels(recipe: dict, classes: list[str]) -> dict:
    """The recipe with every per-class proximity head sized to the training data's classes
    (KiNet: one output channel per nucleus class)."""
    tasks = [
        {**t, "channels": len(classes)} if t["target"] == "proximity_per_class" else t
        for t in recipe["tasks"]
    ]
    if any(t["target"] == "proximity_per_class" for t in tasks) and len(classes) < 1:
        raise CellmapsInputError(
            "a per-class proximity task needs points with class labels; the training "
            "points have none (only 'nucleus'/'cell' or no label)"
        )
    return {**recipe, "tasks": tasks}


def scaled_stages(stages: list[dict], iterations: int) -> list[dict]:
    """Stages of a staged run stretched to ``iterations`` in the proportions the recipe
    gives (2000 + 2000 at 600 iterations → 300 + 300), so that ``--iterations`` never
    leaves a stage out; the last stage takes the rounding."""
    total = sum(int(s["iterations"]) for s in stages)
    if total <= 0:
        raise CellmapsInputError("staged training needs stages with iterations > 0")
    out, used = [], 0
    for k, s in enumerate(stages):
        n = (
            iterations - used
            if k == len(stages) - 1
            else int(round(s["iterations"] * iterations / total))
        )
        out.append({**s, "iterations": n})
        used += n
    return out


def load_matching_weights(net: torch.nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Start from another model's weights (fine-tuning): copy every tensor whose name and
    shape match, keep the new net's initialisation for the rest (e.g. a head with a
    different number of classes, a new ROI branch). Returns the names not copied; a
    warning lists them, and nothing matching at all is an error."""
    own = net.state_dict()
    copied = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not copied:
        raise CellmapsInputError(
            "the initial model shares no layer with this recipe's net (different net kind "
            "or width?)"
        )
    net.load_state_dict(copied, strict=False)
    fresh = sorted(k for k in own if k not in copied)
    if fresh:
        heads = sorted({k.split(".")[0] for k in fresh})
        warnings.warn(
            f"initial model: {len(copied)} tensors copied, {len(fresh)} newly initialised "
            f"(in {', '.join(heads)})",
            stacklevel=2,
        )
    return fresh


def freeze_blocks(net: torch.nn.Module, k: int) -> None:
    """Freeze the first k numbered blocks (MicroNet's fine-tuning study)."""
    if k <= 0:
        return
    if not hasattr(net, "numbered_blocks"):
        raise CellmapsInputError("--freeze needs a net with numbered blocks (residual_unet)")
    blocks = net.numbered_blocks()
    if k > len(blocks):
        raise CellmapsInputError(f"--freeze {k}: the net has only {len(blocks)} blocks")
    for block in blocks[:k]:
        for p in block.parameters():
            p.requires_grad_(False)


def _set_frozen_bn_eval(net: torch.nn.Module) -> None:
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d) and not any(p.requires_grad for p in m.parameters()):
            m.eval()


def keep_input_standardisation(data, init: Model) -> None:
    """A fine-tune standardises its inputs with the initial model's mean and std (its
    weights were learned on inputs standardised that way; statistics recomputed from the
    new data would shift every feature the fine-tune starts from). Kept when the channel
    counts agree; otherwise the new data's own statistics stay."""
    if init.mean.shape == data.mean.shape and init.std.shape == data.std.shape:
        data.mean = np.asarray(init.mean, dtype=np.float32).copy()
        data.std = np.asarray(init.std, dtype=np.float32).copy()


class Trainer:
    """Trains a recipe on :class:`TrainingData`; see :func:`train` for the entry point."""

    def __init__(
        self,
        recipe: dict,
        data: TrainingData,
        out: str | os.PathLike,
        val: TrainingData | None = None,
        val_sources: list | None = None,
        init: Model | None = None,
        freeze: int = 0,
        progress: bool = True,
        pixel_size: float | None = None,
        val_radii: list[float] | None = None,
    ) -> None:
        recipe = with_class_channels(recipe, data.classes)
        self.pixel_size = pixel_size
        self.recipe, self.data, self.val = recipe, data, val
        self.val_sources = val_sources or []
        self.val_radii = val_radii
        self.out = Path(out)
        self.ckpt_path = self.out.with_name(self.out.name + ".ckpt")
        self.log_path = self.out.with_name(self.out.stem + ".log.csv")
        self.curve_path = self.out.with_name(self.out.stem + ".loss.png")
        self.progress = progress
        tr = recipe["training"]
        seed = tr["seed"]
        torch.manual_seed(seed)
        random.seed(seed)
        self.rng = np.random.default_rng(seed)
        self.net = net_from_recipe(recipe, data.in_channels)
        weights = recipe["net"].get("encoder_weights")
        if weights and init is None:
            if recipe["net"]["kind"] != "resnet_unet":
                raise CellmapsInputError("net.encoder_weights needs net.kind resnet_unet")
            load_encoder_weights(self.net, weights)
        if init is not None:
            load_matching_weights(self.net, init.net.state_dict())
            keep_input_standardisation(data, init)
        freeze_blocks(self.net, freeze)
        self.net = self.net.to(memory_format=torch.channels_last)
        names = [t["name"] for t in recipe["tasks"]]
        comb = recipe["combine"]
        if comb["kind"] == "staged" and comb["stages"]:  # (a copy: the caller's recipe stays)
            comb = recipe["combine"] = {
                **comb,
                "stages": scaled_stages(comb["stages"], tr["iterations"]),
            }
        self.combiner = build_combiner(
            comb["kind"], names, {t["name"]: t["weight"] for t in recipe["tasks"]}, comb["stages"]
        )
        params = list(self.net.parameters()) + list(self.combiner.parameters())
        self.opt = build_optimizer(params, recipe["optimizer"])
        sch = recipe["schedule"]
        self.monitor_max = sch["monitor"] == "f1"
        inner = getattr(self.opt, "inner", self.opt)
        self.base_lrs = [g["lr"] for g in inner.param_groups]
        # the plateau rule runs for every schedule but only changes the rate for 'plateau'
        self.sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            inner,
            mode="max" if self.monitor_max else "min",
            factor=sch["plateau_factor"],
            patience=sch["plateau_patience"],
        )
        self.ema = ema_net(self.net, tr["ema"]) if tr["ema"] else None
        self.code = dict(code_version())
        self.tiles = None
        if tr["sampling"] == "tiles":
            self.tiles = tile_origins(data, tr["crop"], tr["tile_stride"] or tr["crop"] // 2)
        self.iteration = 0
        self.best = None
        self.best_state = None
        self.bad_rounds = 0
        self.rows: list[dict] = []
        self.started = time.time()
        self.elapsed_before = 0.0

    # -- checkpoints --------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "iteration": self.iteration,
            "net": self.net.state_dict(),
            "combiner": self.combiner.state_dict(),
            "opt": self.opt.state_dict(),
            "sched": self.sched.state_dict(),
            "ema": None if self.ema is None else self.ema.state_dict(),
            "code": self.code,
            "rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "py_rng": list(random.getstate()[1]),
            "best": self.best,
            "best_state": self.best_state,
            "bad_rounds": self.bad_rounds,
            "rows": self.rows,
            "elapsed": self.elapsed(),
        }

    def save_checkpoint(self) -> None:
        with atomic_path(self.ckpt_path) as tmp:
            torch.save(self.state(), tmp)

    def resume(self) -> None:
        if not self.ckpt_path.is_file():
            raise CellmapsInputError("no checkpoint to resume from", self.ckpt_path)
        try:
            st = torch.load(self.ckpt_path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CellmapsInputError(f"checkpoint is corrupt ({exc})", self.ckpt_path) from exc
        self.iteration = st["iteration"]
        self.net.load_state_dict(st["net"])
        self.combiner.load_state_dict(st["combiner"])
        self.opt.load_state_dict(st["opt"])
        self.sched.load_state_dict(st["sched"])
        if self.ema is not None and st.get("ema") is not None:
            self.ema.load_state_dict(st["ema"])
        self.code = st.get("code", self.code)  # the run's code version is its start's
        self.rng.bit_generator.state = st["rng"]
        torch.set_rng_state(st["torch_rng"])
        random.setstate((3, tuple(st["py_rng"]), None))
        self.best, self.best_state, self.bad_rounds = st["best"], st["best_state"], st["bad_rounds"]
        self.rows = st["rows"]
        self.elapsed_before = st["elapsed"]
        self.started = time.time()

    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.started

    # -- steps ------------------------------------------------------------------------------
    def step(self) -> dict[str, float]:
        tr, aug = self.recipe["training"], self.recipe["augment"]
        x, targets, w, present = make_batch(
            self.data, self.rng, tr["batch"], tr["crop"], aug, self.tiles
        )
        self.apply_stage_freezing()
        self.net.train()
        _set_frozen_bn_eval(self.net)
        with autocast(tr["precision"]):
            out = self.net(x.contiguous(memory_format=torch.channels_last))
        per_sample = task_losses(out, targets, self.recipe["tasks"], present)
        losses = {k: (v * w).sum() / w.sum() for k, v in per_sample.items()}
        total = self.combiner(losses, self.iteration)
        comb = self.recipe["combine"]
        if (
            comb["correlation_eta"]
            and self.iteration >= comb["correlation_warmup"] * tr["iterations"]
        ):
            task = comb["correlation_task"] or self.recipe["tasks"][0]["name"]
            head = next((task_head(t) for t in self.recipe["tasks"] if t["name"] == task), task)
            total = total + comb["correlation_eta"] * correlation_penalty(out[head]).mean()
        if not torch.isfinite(total):
            raise FloatingPointError(f"loss became {total.item()} at iteration {self.iteration}")
        self.opt.zero_grad()
        total.backward()
        grad_norm = self.clip_gradients()
        self.set_lr()
        self.opt.step()
        if self.ema is not None:
            self.ema.update_parameters(self.net)
        self.iteration += 1
        return {
            "loss": float(total.detach()),
            **{f"loss_{k}": float(v.detach()) for k, v in losses.items()},
            "grad_norm": grad_norm,
        }

    def clip_gradients(self) -> float:
        """Global gradient norm before clipping; clipped to ``optimizer.grad_clip`` if set."""
        params = [p for p in self.net.parameters() if p.grad is not None]
        clip = self.recipe["optimizer"]["grad_clip"]
        norm = torch.nn.utils.clip_grad_norm_(params, clip if clip else float("inf"))
        return float(norm)

    def set_lr(self) -> None:
        """Learning rate of this step: base × :func:`lr_factor`; after the warm-up, the
        plateau schedule leaves the rate to the plateau rule."""
        opt = self.recipe["optimizer"]
        kind, total = opt["schedule"], self.recipe["training"]["iterations"]
        n_warm = int(round(opt["warmup"] * total))
        if kind == "plateau" and self.iteration >= n_warm:
            return
        f = lr_factor(kind, self.iteration, total, opt["warmup"], opt["final_lr"])
        for g, base in zip(
            getattr(self.opt, "inner", self.opt).param_groups, self.base_lrs, strict=True
        ):
            g["lr"] = base * f

    def apply_stage_freezing(self) -> None:
        """Staged training: parameters whose names start with a prefix in the current
        stage's ``freeze`` list get no gradient (e.g. DeepSplit stage 1 freezes the
        separation decoder)."""
        stages = self.recipe["combine"]["stages"]
        if self.recipe["combine"]["kind"] != "staged" or not stages:
            return
        frozen = tuple(stages[self.combiner.stage(self.iteration)].get("freeze", []))
        for name, p in self.net.named_parameters():
            p.requires_grad_(not (frozen and name.startswith(frozen)))

    @property
    def eval_net(self) -> torch.nn.Module:
        """The weights validated and saved: the moving average when on, else the net."""
        return self.net if self.ema is None else self.ema.module

    def validate(self) -> dict[str, float]:
        """Validation loss over every pixel of every validation image (crop-sized windows
        by :func:`validation_windows`) and, when the recipe monitors F1, detection F1 on
        the whole validation images."""
        if self.val is None:
            return {}
        tr = self.recipe["training"]
        net = self.eval_net
        net.eval()
        weights = getattr(self.combiner, "weights", {})
        total, count = 0.0, 0
        with torch.no_grad():
            for s in self.val.samples:
                _, h, w = s.image.shape
                has = {k: torch.tensor([float(k not in s.missing)]) for k in s.targets}
                for r, c, hh, ww in validation_windows(h, w, tr["crop"]):
                    img = standardize(
                        s.image[:, r : r + hh, c : c + ww], self.data.mean, self.data.std
                    )
                    x = torch.from_numpy(img[None])
                    t = {
                        k: torch.from_numpy(
                            np.ascontiguousarray(v[None, :, r : r + hh, c : c + ww])
                        )
                        for k, v in s.targets.items()
                    }
                    with autocast(tr["precision"]):
                        out = net(x.contiguous(memory_format=torch.channels_last))
                    ls = task_losses(out, t, self.recipe["tasks"], has)
                    # weighted by the window's area so the mean is per pixel of the images
                    area = hh * ww
                    total += area * float(
                        sum(weights.get(k, 1.0) * v.mean() for k, v in ls.items())
                    )
                    count += area
        res = {"val_loss": total / max(count, 1)}
        if self.recipe["schedule"]["monitor"] == "f1" and self.val_sources:
            res["val_f1"] = self.validation_f1()
        return res

    def current_model(self) -> Model:
        m = Model(
            self.recipe,
            self.data.in_channels,
            self.data.mean.tolist(),
            self.data.std.tolist(),
            training=self.summary(),
        )
        m.net.load_state_dict(copy.deepcopy(self.eval_net.state_dict()))
        return m

    def validation_f1(self) -> float:

        best = tune_decoding(
            self.current_model(),
            self.val_sources,
            progress=False,
            min_distances=[self.recipe["decode"]["min_distance"]],
            evidence_floor=False,
            radii=self.val_radii,
            object_sizes=validation_object_sizes(
                self.recipe, self.data.object_sizes, self.val_sources
            ),
        )
        return best["f1"]

    def summary(self) -> dict:
        """What the model file records about its training (see README, 'Training')."""
        scales = self.data.object_sizes
        first = scales[0] if scales else {}
        out = {
            "classes": self.data.classes,
            "label": "nucleus",
            "n_images": len(self.data.samples),
            "iterations": self.iteration,
            "seed": self.recipe["training"]["seed"],
            "elapsed_seconds": round(self.elapsed(), 1),
            "code": self.code,
            # median object radius in the net's pixels, and in the training images' pixels
            "train_radius": self.data.train_radius,
            "data_object_size": first.get("radius"),
            "object_sizes": scales,
            "intensity_rule": INTENSITY_RULE,  # how stored pixels became [0, 1] (io.images)
            # what microscopy the training images look like, for the warning a far-off
            # input gets at prediction (cellmaps.io.modality)
            "modality": training_modality(self.data),
        }
        if self.pixel_size and first.get("radius"):
            out["train_radius_um"] = first["radius"] * self.pixel_size
        return out

    # -- loop --------------------------------------------------------------------------------
    def fit(self) -> Model:
        tr, sch = self.recipe["training"], self.recipe["schedule"]
        bar = tqdm(
            total=tr["iterations"],
            initial=self.iteration,
            desc="train",
            unit="it",
            disable=not self.progress,
        )
        stop_reason = "iterations"
        running = []
        while self.iteration < tr["iterations"]:
            running.append(self.step())
            bar.update()
            bar.set_postfix(loss=f"{running[-1]['loss']:.4f}")
            if self.iteration % tr["val_every"] == 0 or self.iteration == tr["iterations"]:
                row = {
                    "iteration": self.iteration,
                    "lr": self.current_lr(),
                    "elapsed": round(self.elapsed(), 1),
                }
                for k in running[-1]:
                    row[k] = float(np.mean([r[k] for r in running]))
                running = []
                row.update(self.validate())
                self.rows.append(row)
                if self.observe(row):
                    stop_reason = "early stopping"
                plateau = self.recipe["optimizer"]["schedule"] == "plateau"
                if plateau and self.current_lr() < sch["min_lr"]:
                    stop_reason = "learning rate below min_lr"
                self.write_log()
            if self.iteration % tr["checkpoint_every"] == 0 or stop_reason != "iterations":
                self.save_checkpoint()
            if stop_reason != "iterations":
                break
        bar.close()
        self.save_checkpoint()
        model = self.current_model()
        if self.best_state is not None:
            model.net.load_state_dict(self.best_state)
        model.training["stop_reason"] = stop_reason
        model.training["best_validation"] = self.best
        self.write_log(plot=True)
        return model

    def current_lr(self) -> float:
        return float(getattr(self.opt, "inner", self.opt).param_groups[0]["lr"])

    def observe(self, row: dict) -> bool:
        """Update best weights, LR plateau and early stopping; True means stop."""
        key = "val_f1" if self.monitor_max else "val_loss"
        value = row.get(key, row.get("val_loss", row["loss"]))
        better = self.best is None or (value > self.best if self.monitor_max else value < self.best)
        if better:
            self.best = value
            self.best_state = copy.deepcopy(self.eval_net.state_dict())
            self.bad_rounds = 0
        else:
            self.bad_rounds += 1
        self.sched.step(value)
        patience = self.recipe["schedule"]["early_stop_patience"]
        return patience is not None and self.bad_rounds >= patience

    def write_log(self, plot: bool = False) -> None:
        if not self.rows:
            return
        keys = list(dict.fromkeys(k for r in self.rows for k in r))
        with atomic_path(self.log_path) as tmp, tmp.open("w", newline="") as fh:
            w = csv.DictWriter(fh, keys)
            w.writeheader()
            w.writerows(self.rows)
        if plot:
            plot_loss_curve(self.rows, self.curve_path)


def training_modality(data: TrainingData, most: int = 64) -> str | None:
    """The modality most of the training images (up to ``most``, spread over the set) look
    like (:func:`cellmaps.io.modality.image_modality`); None without images."""
    samples = data.samples[:: max(1, len(data.samples) // most)]
    seen = [image_modality(np.moveaxis(s.image, 0, -1)) for s in samples]
    return max(sorted(set(seen)), key=seen.count) if seen else None  # ties: by name


def plot_loss_curve(rows: list[dict], path: Path) -> None:
    """Training and validation loss (and validation F1) above, learning rate below."""
    # imported here: matplotlib (Agg backend) is needed only for this plot and slows start-up
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    it = [r["iteration"] for r in rows]
    fig, (ax, ax_lr) = plt.subplots(
        2, 1, figsize=(6, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax.plot(it, [r["loss"] for r in rows], label="train loss")
    if "val_loss" in rows[0]:
        ax.plot(it, [r["val_loss"] for r in rows], label="validation loss")
    ax.set_yscale("log")
    ax.legend(loc="upper left")
    if "val_f1" in rows[0]:
        ax2 = ax.twinx()
        ax2.plot(it, [r.get("val_f1") for r in rows], "g--", label="validation F1")
        ax2.set_ylabel("validation F1")
        ax2.legend(loc="upper right")
    ax_lr.plot(it, [r["lr"] for r in rows], "k-")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_yscale("log")
    ax_lr.set_xlabel("iteration")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def train(
    recipe: dict,
    sources: list[tuple[str, str | None, float]],
    out: str | os.PathLike,
    val_sources: list[tuple[str, str | None]] | None = None,
    resume: bool = False,
    init: str | os.PathLike | None = None,
    freeze: int = 0,
    progress: bool = True,
    object_sizes: list[float | None] | None = None,
    pixel_size: float | None = None,
    val_radii: list[float] | None = None,
) -> Model:
    """Train a recipe and write the model file ``out`` (plus ``out.ckpt``, a CSV log and a
    loss / learning-rate PNG next to it). With ``resume`` the run continues from ``out.ckpt``.

    ``object_sizes`` gives the median object radius (px) of each source instead of measuring
    it; ``pixel_size`` (µm/px of the training images) lets the model take ``--pixel-size``
    at prediction. The validation images are resampled like the training images, ξ (or h)
    is tuned on them at the end (:func:`cellmaps.tune.apply_tuning`), matched within each
    source's radius in ``val_radii`` (default: the recipe's).
    """
    data = load_training_data(sources, recipe, progress, object_sizes=object_sizes)
    val = None
    if val_sources:
        val_scales = _validation_scales(data.object_sizes, val_sources)
        val = load_training_data(
            [(r, s, 1.0) for r, s in val_sources],
            recipe,
            progress,
            classes=data.classes,
            scales=val_scales,
        )
    init_model = Model.load(init) if init else None
    trainer = Trainer(
        recipe, data, out, val, val_sources, init_model, freeze, progress, pixel_size, val_radii
    )
    if resume:
        trainer.resume()
    model = trainer.fit()
    model.training["data"] = [
        {"folder": str(r), "split": s, "weight": w, "fraction": (f[0] if f else 1.0)}
        for r, s, w, *f in sources
    ]
    model.training["n_images"] = len(data.samples)
    fixed = set_min_distance_um(model)
    if val_sources:
        best = tune_decoding(
            model,
            val_sources,
            progress=progress,
            min_distances=[model.decode["min_distance"]] if fixed else None,
            radii=val_radii,
            object_sizes=validation_object_sizes(recipe, data.object_sizes, val_sources),
        )
        apply_tuning(model, best, val_sources)
    model.save(out)
    return model


def set_min_distance_um(model: Model) -> bool:
    """With ``decode.min_distance_um`` in the recipe (weakly-points: 2.5 µm) and a model
    trained with ``--pixel-size`` (so it knows µm per net pixel), set ``decode.min_distance``
    to that distance in net pixels and return True (tuning then keeps it); else False."""
    um = model.decode.get("min_distance_um")
    size_um, size_px = model.training.get("train_radius_um"), model.training.get("train_radius")
    if not (um and size_um and size_px):
        return False
    model.decode = model.decode.replace(min_distance=max(1, int(round(um * size_px / size_um))))
    return True


def validation_object_sizes(recipe: dict, scales: list[dict], val_sources) -> list | None:
    """Median object radius (px) of each validation folder, so that tuning resamples it as
    training did: with ``training.train_radius`` set, each source was brought to that size from
    its own radius (CRCHisto 5.4 px and MoNuSeg 12 px both to 6 px), which one model-wide
    input scale cannot repeat. None (the model's own input scale) for models trained at the
    data's scale. ``scales``: the training sources' records (``TrainingData.object_sizes``,
    a model's ``training["object_sizes"]``)."""
    if not val_sources or recipe["training"].get("train_radius") is None:
        return None
    return [s["radius"] for s in _validation_scales(scales, val_sources)]


def _validation_scales(scales: list[dict], val_sources) -> list[dict]:
    """Resampling of each validation folder: that of the training source with the same
    folder, else the first training source's."""
    by_folder = {Path(s["folder"]).resolve(): s for s in scales}
    first = scales[0]
    return [by_folder.get(Path(r).resolve(), first) for r, _ in val_sources]
