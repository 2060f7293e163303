"""Recipes: YAML data that say which net, tasks, losses, optimiser and decoding a system uses.

A recipe is validated against :data:`SCHEMA`: unknown or mistyped keys are refused with
the key's path named. Defaults fill anything a recipe leaves out. Old key names are
migrated first (:mod:`cellmaps.recipes.migrate`); command-line flags patch a recipe through
:func:`with_overrides`.

Longer than ~500 lines: :data:`SCHEMA`, with a comment on every key, is the reference of
what a recipe may say.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import yaml

from cellmaps.errors import CellmapsInputError
from cellmaps.io.scale import INTENSITY_MODES
from cellmaps.io.text import read_utf8_text
from cellmaps.losses import COMBINERS, LOSSES
from cellmaps.nets import ACTIVATIONS, NETS
from cellmaps.optim import OPTIMIZERS, SCHEDULES
from cellmaps.postprocess.decode import DECODERS
from cellmaps.recipes.migrate import migrate_recipe
from cellmaps.targets.build import TARGETS

RECIPE_DIR = Path(__file__).parent

# A schema is a dict: key -> (type or tuple of types, default) | nested dict | [item-schema].
NUM = (int, float)
NUM_OR_NONE = (int, float, type(None))
TASK = {
    "name": (str, None),
    "target": (str, None),
    "target_options": (dict, {}),
    "channels": (int, 1),
    "activation": (str, "identity"),
    "loss": (str, "mse"),
    "loss_options": (dict, {}),
    "weight": (NUM, 1.0),
    "weights_map": ((str, type(None)), None),
    "weights_map_options": (dict, {}),  # keyword arguments of the weights map's function
    "decode": ((str, type(None)), None),
    # the net output this task's loss reads; tasks naming the same head share one output
    # (weakly-points: three losses on one nucleus/background head). null = its own head
    "head": ((str, type(None)), None),
}
# A schema leaf (types, default, OMITTED_AT_DEFAULT) is left out of the validated recipe
# when it takes its default: a key added after models were saved then changes neither
# their stored recipe nor their fingerprint (Model.meta). Readers use .get(key, default).
OMITTED_AT_DEFAULT = "omitted at default"

SCHEMA = {
    "name": (str, None),
    "description": (str, ""),
    "paper": (str, ""),
    "net": {
        "kind": (str, "residual_unet"),
        "base": (int, 16),
        "depth": (int, 4),
        "dropout": (NUM, 0.5),
        "mca_levels": ((list, type(None)), None),
        "roi_head": ((str, type(None)), None),
        "decoders": ((list, type(None)), None),
        "cross": ((dict, type(None)), None),
        "resnet_depth": (int, 50),
        "width": (int, 64),
        "decoder_base": (int, 16),
        "encoder_weights": ((str, type(None)), None),
        # residual_unet: the heads at 1/2 or 1/4 resolution, logits resized (the speed issue);
        # left out of a validated recipe when 1, so models saved before it keep their
        # settings (and fingerprints)
        "output_stride": (int, 1, OMITTED_AT_DEFAULT),
    },
    "tasks": [TASK],
    "combine": {
        "kind": (str, "sum"),
        "stages": ((list, type(None)), None),
        "correlation_eta": (NUM, 0.0),
        "correlation_task": ((str, type(None)), None),
        "correlation_warmup": (NUM, 0.1),
    },
    "optimizer": {
        "kind": (str, "sgd"),
        "lr": (NUM, 0.01),
        "momentum": (NUM, 0.9),
        "nesterov": (bool, True),
        "weight_decay": (NUM, 1e-6),
        # learning rate by iteration (cellmaps.optim.lr_factor)
        "schedule": (str, "plateau"),
        "warmup": (NUM, 0.0),  # share of the run with a linear warm-up
        "final_lr": (NUM, 0.01),  # cosine / onecycle end at final_lr x lr
        "grad_clip": (NUM_OR_NONE, None),  # max global gradient norm
    },
    "schedule": {
        "plateau_factor": (NUM, 0.1),
        "plateau_patience": (int, 4),
        "min_lr": (NUM, 1e-4),
        "early_stop_patience": ((int, type(None)), None),
        "monitor": (str, "loss"),
    },
    "training": {
        "iterations": (int, 2000),
        "batch": (int, 4),
        "crop": (int, 200),
        "val_every": (int, 200),
        "checkpoint_every": (int, 200),
        "seed": (int, 0),
        "precision": (str, "auto"),
        "hist_eq": (bool, False),
        # input intensities: "range" = divided by the dtype's range (8-bit: 255), the same for
        # every image; "percentile" = each image stretched between its own 1st and 99.8th
        # percentiles (StarDist's normalisation; for fluorescence of varying brightness)
        "intensity": (str, "range"),
        "sampling": (str, "random"),
        "tile_stride": ((int, type(None)), None),
        # train at this median object radius (px) by resampling images and annotations;
        # null = train at the data's own scale (the measured size is recorded either way)
        "train_radius": (NUM_OR_NONE, None),
        # what is brought to train_radius: each "source" (one factor per dataset, from its
        # median radius) or each "image" (from its own, for sets of mixed magnifications;
        # predict such models with inference.object_size: auto)
        "object_scale": (str, "source"),
        # decay of an exponential moving average of the weights, used for validation and
        # saved as the model (e.g. 0.999); null = off
        "ema": (NUM_OR_NONE, None),
    },
    "augment": {
        "flip": (bool, True),
        "rot90": (bool, True),
        "rotate": (NUM, 0.0),
        "shift": (NUM, 0.0),
        "scale": (NUM, 0.0),
        "elastic": (NUM, 0.0),
        "color": (NUM, 0.0),
        # brightfield stain amounts: each of H / E / DAB scaled by U(1 - a, 1 + a), shifted
        # by U(-a, a)·stain_offset of its 99th percentile (3-channel images only; 0.1-0.3 is
        # typical)
        "stain": (NUM, 0.0),
        # the additive part of the stain jitter, per unit of a (0: scaling only; an additive
        # DAB offset tints every nucleus, positive or negative, brown)
        "stain_offset": (NUM, 0.25),
        "gamma": (NUM, 0.0),  # gamma exp(U(-g, g)), half of the crops
        "blur": (NUM, 0.0),  # Gaussian blur sigma ~ U(0, blur) px, half of the crops
        "noise": (NUM, 0.0),  # Gaussian noise sigma ~ U(0, noise), half of the crops
        "jpeg": (NUM, 0.0),  # share of crops saved as JPEG at quality 30-90
        # share of crops replaced by empty images (flat, uniform or Gaussian noise) whose
        # targets are 0: teaches the model that nothing there means no detection
        "empty": (NUM, 0.0),
    },
    "decode": {
        "kind": (str, "peaks"),
        "task": ((str, type(None)), None),
        "xi": (NUM, 0.5),
        "h": (NUM, 0.2),
        "min_distance": (int, 3),
        # the minimum peak distance in µm (weakly-points: 2.5); used instead of min_distance
        # when the model was trained with --pixel-size (it then knows µm per net pixel)
        "min_distance_um": (NUM_OR_NONE, None),
        "min_area": (int, 20),
        # absolute evidence floor: a detection's map value must reach it besides the
        # relative ξ (chosen on validation by `cellmaps tune`; 0 = no floor)
        "min_score": (NUM, 0.0),
        # the floor's factor for a detection on the image edge, easing to 1 one object radius
        # in (cellmaps.postprocess.peaks.edge_floor_factor): tiling mirrors the image there, which
        # doubles the variance of noise seen by the net; 1 = the same floor everywhere
        "edge_floor": (NUM, 2**0.5),
        # no detection where the input's local standard deviation (normalised intensities,
        # window of about twice the object radius) is below this: flat padding or background
        "min_contrast": (NUM, 0.002),
        "boundary_task": ((str, type(None)), None),
        "grid": ((list, type(None)), None),
        # channel of the decode task's map to decode (a softmax head's nucleus channel);
        # null = every channel (one class per channel)
        "channel": ((int, type(None)), None),
        # how `predict --masks` outlines objects: region_growing (DeepDistance §4.7, outer
        # distance + cell pixels), argmax (the decode map's channel wins the argmax; touching
        # objects split by a watershed from the detections) or split (DeepSplit: cells minus
        # the separation map of decode.boundary_task, border-length-limited watershed),
        # seeded (the cell pixels of the foreground task above cell_threshold, split by a
        # watershed from the detections over the negated detection map: touching objects
        # part where it dips between their peaks) or seeded_cells (the same over the negated
        # cell probability); null = region_growing
        "segment": ((str, type(None)), None),
        # decode.kind split (DeepSplit): touching cells are cut only along borders shorter
        # than this many pixel edges (null = every watershed cut is kept)
        "max_border": ((int, type(None)), 12),
        # decode.segment split / seeded: probability above which a pixel is a cell / a contact between
        # cells (the losses' class weights bias both upwards; `cellmaps tune` chooses them)
        "cell_threshold": (NUM, 0.5),
        "separation_threshold": (NUM, 0.5),
    },
    "evaluate": {
        "protocol": (str, "hungarian"),
        "radius": (NUM, 6.0),
    },
    "inference": {
        "tile": (int, 256),
        "stride": (int, 192),
        "batch": (int, 4),
        "blend": (str, "mean"),
        # px at each tile edge left out of the blend; None: (tile − stride) // 4
        "trim": ((int, type(None)), None),
        # object scale of inputs given no --object-size / --pixel-size: None = like the
        # training images; "auto" = estimated per image (cellmaps.inference.scale)
        "object_size": ((str, type(None)), None),
        # factor the auto estimate is multiplied by, measured on validation images (a net
        # fine-tuned at one magnification can answer most strongly off its training scale)
        "auto_scale_calibration": (NUM, 1.0),
    },
}

# Choices that are data, not code; the choices of nets, optimisers, schedules, combiners,
# losses and decoders come from their registries (see registry_choices).
STATIC_CHOICES = {
    "net.output_stride": (1, 2, 4),
    "schedule.monitor": ("loss", "f1"),
    "training.precision": ("auto", "bf16", "fp32"),
    "training.sampling": ("random", "tiles"),
    "training.intensity": INTENSITY_MODES,
    "training.object_scale": ("source", "image"),
    "evaluate.protocol": ("hungarian", "one-to-one", "iou"),
    "decode.segment": (None, "region_growing", "argmax", "split", "seeded", "seeded_cells"),
    "inference.blend": ("mean", "gaussian"),
    "inference.object_size": (None, "auto"),
}


def registry_choices() -> dict[str, tuple]:
    """Allowed values of every recipe key with a fixed set of choices: the static ones and
    the names registered in :data:`cellmaps.nets.NETS`, :data:`cellmaps.losses.LOSSES` /
    ``COMBINERS``, :data:`cellmaps.optim.OPTIMIZERS` / ``SCHEDULES``,
    :data:`cellmaps.nets.ACTIVATIONS` and :data:`cellmaps.postprocess.decode.DECODERS`, so a new entry
    there is a new recipe choice with no edit here."""
    return {
        **STATIC_CHOICES,
        "net.kind": tuple(NETS),
        "combine.kind": tuple(COMBINERS),
        "optimizer.kind": tuple(OPTIMIZERS),
        "optimizer.schedule": tuple(SCHEDULES),
        "decode.kind": tuple(DECODERS),
        "tasks.activation": tuple(ACTIVATIONS),
        "tasks.loss": tuple(LOSSES),
        "tasks.decode": (None, *DECODERS),
    }


def _type_name(t) -> str:
    ts = t if isinstance(t, tuple) else (t,)
    return " or ".join("null" if x is type(None) else x.__name__ for x in ts)


def _validate(value, schema, path: str, source: str, choices: dict):
    if isinstance(schema, dict):
        if value is None or value is _MISSING:
            value = {}
        if not isinstance(value, dict):
            raise CellmapsInputError(f"recipe key '{path}' must be a mapping", source)
        unknown = sorted(set(value) - set(schema))
        if unknown:
            where = f"'{path}.{unknown[0]}'" if path else f"'{unknown[0]}'"
            raise CellmapsInputError(
                f"unknown recipe key {where}; allowed here: {sorted(schema)}", source
            )
        out = {}
        for key, sub in schema.items():
            p = f"{path}.{key}" if path else key
            checked = _validate(value.get(key, _MISSING), sub, p, source, choices)
            if not (
                isinstance(sub, tuple) and sub[2:] == (OMITTED_AT_DEFAULT,) and checked == sub[1]
            ):
                out[key] = checked
        return out
    if isinstance(schema, list):
        if value is _MISSING or not isinstance(value, list) or not value:
            raise CellmapsInputError(f"recipe key '{path}' must be a non-empty list", source)
        return [
            _validate(v, schema[0], f"{path}[{i}]", source, choices) for i, v in enumerate(value)
        ]
    types, default = schema[:2]
    if value is _MISSING:
        if default is None and not (isinstance(types, tuple) and type(None) in types):
            raise CellmapsInputError(f"recipe key '{path}' is required", source)
        return copy.deepcopy(default)
    ok_types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in ok_types:
        ok = False
    else:
        ok = isinstance(value, ok_types)
    if not ok:
        raise CellmapsInputError(
            f"recipe key '{path}' must be {_type_name(types)}, got {type(value).__name__} {value!r}",
            source,
        )
    generic = ".".join(part.split("[")[0] for part in path.split("."))
    if generic in choices and value not in choices[generic]:
        raise CellmapsInputError(
            f"recipe key '{path}' must be one of {choices[generic]}, got {value!r}", source
        )
    return value


class _Missing:
    pass


_MISSING = _Missing()


def validate_recipe(data: dict, source: str = "recipe") -> dict:
    """Validate a recipe mapping and fill defaults; raise naming the first bad key. Old key
    names are migrated first (:func:`cellmaps.recipes.migrate.migrate_recipe`)."""
    recipe = _validate(
        migrate_recipe(data), SCHEMA, "", source, registry_choices()
    )  # read once per recipe
    names = [t["name"] for t in recipe["tasks"]]
    if len(set(names)) != len(names):
        raise CellmapsInputError(f"task names must be unique, got {names}", source)
    for t in recipe["tasks"]:
        if t["target"] not in TARGETS:
            raise CellmapsInputError(
                f"task '{t['name']}': unknown target {t['target']!r}; known {sorted(TARGETS)}",
                source,
            )
    _check_heads(recipe["tasks"], source)
    heads = list(dict.fromkeys(task_head(t) for t in recipe["tasks"]))
    if recipe["decode"]["task"] is None:
        recipe["decode"]["task"] = heads[0]
    elif recipe["decode"]["task"] not in names + heads:
        raise CellmapsInputError(
            f"decode.task {recipe['decode']['task']!r} is not a task or head", source
        )
    decode_task = recipe["decode"]["task"]
    if decode_task in names and decode_task not in heads:
        raise CellmapsInputError(
            f"decode.task {decode_task!r} shares head '{task_head(recipe['tasks'][names.index(decode_task)])}'"
            "; name the head",
            source,
        )
    _check_ranges(recipe, source)
    stride = recipe["net"].get("output_stride", 1)
    if stride != 1 and "output_stride" not in NETS[recipe["net"]["kind"]].options:
        raise CellmapsInputError(
            f"net.output_stride {stride} needs a net that takes it "
            f"({sorted(k for k, e in NETS.items() if 'output_stride' in e.options)}); "
            f"this recipe's net is {recipe['net']['kind']!r}",
            source,
        )
    bt = recipe["decode"]["boundary_task"]
    if recipe["decode"]["kind"] == "components" and bt not in names:
        raise CellmapsInputError(
            f"decode.kind components needs decode.boundary_task naming a task, got {bt!r}", source
        )
    return recipe


def task_head(task: dict) -> str:
    """Name of the net output a task's loss reads (its own name unless ``head`` says)."""
    return task.get("head") or task["name"]


def _check_heads(tasks: list[dict], source: str) -> None:
    """Tasks sharing a head must agree on its channels and activation."""
    first: dict[str, dict] = {}
    for t in tasks:
        owner = first.setdefault(task_head(t), t)
        for key in ("channels", "activation"):
            if t[key] != owner[key]:
                raise CellmapsInputError(
                    f"tasks '{owner['name']}' and '{t['name']}' share head "
                    f"'{task_head(t)}' but differ in {key} ({owner[key]!r} vs {t[key]!r})",
                    source,
                )


def _check_ranges(recipe: dict, source: str) -> None:
    """Refuse numbers outside their meaning (a negative warm-up, an EMA decay of 1, ...)."""
    opt, tr, dec = recipe["optimizer"], recipe["training"], recipe["decode"]
    rules = [
        ("optimizer.lr", opt["lr"], opt["lr"] > 0, "> 0"),
        ("optimizer.warmup", opt["warmup"], 0 <= opt["warmup"] < 1, "in [0, 1)"),
        ("optimizer.final_lr", opt["final_lr"], 0 <= opt["final_lr"] <= 1, "in [0, 1]"),
        (
            "optimizer.grad_clip",
            opt["grad_clip"],
            opt["grad_clip"] is None or opt["grad_clip"] > 0,
            "> 0 or null",
        ),
        ("training.ema", tr["ema"], tr["ema"] is None or 0 < tr["ema"] < 1, "in (0, 1) or null"),
        (
            "training.train_radius",
            tr["train_radius"],
            tr["train_radius"] is None or tr["train_radius"] > 0,
            "> 0 or null",
        ),
        (
            "training.object_scale",
            tr["object_scale"],
            tr["object_scale"] == "source" or tr["train_radius"] is not None,
            "'source' unless training.train_radius is set (what would each image be brought to?)",
        ),
        ("training.iterations", tr["iterations"], tr["iterations"] > 0, "> 0"),
        ("decode.xi", dec["xi"], 0 <= dec["xi"] <= 1, "in [0, 1]"),
        ("decode.min_score", dec["min_score"], 0 <= dec["min_score"] < float("inf"), ">= 0"),
        ("decode.edge_floor", dec["edge_floor"], 1 <= dec["edge_floor"] < float("inf"), ">= 1"),
        ("decode.min_contrast", dec["min_contrast"], 0 <= dec["min_contrast"] < 1, "in [0, 1)"),
        ("training.batch", tr["batch"], tr["batch"] > 0, "> 0"),
    ]
    aug = recipe["augment"]
    rules += [
        (f"augment.{k}", aug[k], 0 <= aug[k] <= 1, "in [0, 1]")
        for k in ("stain", "stain_offset", "jpeg", "empty", "noise")
    ]
    rules += [(f"augment.{k}", aug[k], 0 <= aug[k] < 10, "in [0, 10)") for k in ("gamma", "blur")]
    for key, value, ok, want in rules:
        if not ok:
            raise CellmapsInputError(f"recipe key '{key}' must be {want}, got {value!r}", source)


def recipe_path(name_or_path: str | os.PathLike) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    q = RECIPE_DIR / f"{name_or_path}.yaml"
    if q.is_file():
        return q
    raise CellmapsInputError(f"no recipe named {str(name_or_path)!r}; known: {list_recipes()}")


MAX_RECIPE_NODES = 100_000  # a real recipe has a few hundred values


def expanded_yaml_size(node: yaml.Node, memo: dict[int, int], path: Path) -> int:
    """Number of values ``node`` stands for once every alias is expanded, computed on the
    composed graph (each shared node once), so an alias bomb ("billion laughs") is measured
    without being built. Written here because PyYAML has no such limit."""
    key = id(node)
    if key in memo:
        if memo[key] < 0:
            raise CellmapsInputError("recipe YAML refers to itself through an alias", path)
        return memo[key]
    memo[key] = -1  # being counted: meeting it again means a cycle
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(expanded_yaml_size(child, memo, path) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(
            expanded_yaml_size(k, memo, path) + expanded_yaml_size(v, memo, path)
            for k, v in node.value
        )
    else:
        size = 1
    memo[key] = size
    return size


def read_recipe_yaml(path: Path) -> dict:
    """Parse a recipe file with the safe loader (no Python tags), refusing files that expand
    to more than :data:`MAX_RECIPE_NODES` values (alias bombs) before building them."""
    text = read_utf8_text(path, "recipe")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None:
            size = expanded_yaml_size(node, {}, path)
            if size > MAX_RECIPE_NODES:
                raise CellmapsInputError(
                    f"recipe expands to {size:,} values through YAML aliases (limit "
                    f"{MAX_RECIPE_NODES:,}); write the values out",
                    path,
                )
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problem = " ".join(str(exc).split())  # one line, without the source excerpt's layout
        raise CellmapsInputError(f"not valid YAML ({problem})", path) from exc
    if data is not None and not isinstance(data, dict):
        raise CellmapsInputError(
            f"a recipe is a YAML mapping (key: value), got {type(data).__name__}", path
        )
    return data or {}


def load_recipe(name_or_path: str | os.PathLike) -> dict:
    """Load a bundled recipe by name, or a YAML file by path, and validate it."""
    path = recipe_path(name_or_path)
    return validate_recipe(read_recipe_yaml(path), str(path))


def list_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def describe_recipes() -> list[tuple[str, str]]:
    """(name, one-line description) of every bundled recipe."""
    out = []
    for name in list_recipes():
        data = yaml.safe_load((RECIPE_DIR / f"{name}.yaml").read_text(encoding="utf-8")) or {}
        out.append(
            (
                name,
                str(data.get("description", "")).strip().splitlines()[0]
                if data.get("description")
                else "",
            )
        )
    return out


def tiling_options(recipe: dict) -> dict:
    """The recipe's ``inference`` options that tiled prediction takes (all but the
    object-scale policy)."""
    return {
        k: v
        for k, v in recipe["inference"].items()
        if k not in ("object_size", "auto_scale_calibration")
    }


#: ``with_overrides`` keywords that set a ``training`` key of the same name
TRAINING_OVERRIDES = ("iterations", "seed", "batch", "crop", "val_every", "checkpoint_every",
                      "precision", "train_radius")  # fmt: skip


def with_overrides(
    recipe: dict,
    *,
    schedule: str | None = None,
    combine: str | None = None,
    per_image_scale: bool = False,
    encoder_weights: str | os.PathLike | None = None,
    **training,
) -> dict:
    """A copy of ``recipe`` with the ``cellmaps train`` / ``crosseval`` settings that are not
    None: ``training`` keys (:data:`TRAINING_OVERRIDES`), ``optimizer.schedule``,
    ``combine.kind``, ``net.encoder_weights`` (a file; ResNet U-Net recipes only) and
    ``per_image_scale`` (each image brought to ``training.train_radius`` from its own
    radius, each input's scale then estimated: ``training.object_scale: image``,
    ``inference.object_size: auto``). The one place command-line flags patch a recipe."""
    unknown = sorted(set(training) - set(TRAINING_OVERRIDES))
    if unknown:
        raise TypeError(f"unknown recipe overrides {unknown}")
    out = copy.deepcopy(recipe)
    out["training"].update({k: v for k, v in training.items() if v is not None})
    if schedule:
        out["optimizer"]["schedule"] = schedule
    if per_image_scale:
        if out["training"]["train_radius"] is None:
            raise CellmapsInputError(
                "--per-image-scale needs the radius to bring each image to: give "
                "--train-radius R (or training.train_radius in the recipe)"
            )
        out["training"]["object_scale"] = "image"
        out["inference"]["object_size"] = "auto"
    if combine:
        out["combine"]["kind"] = combine
    if encoder_weights:
        if out["net"]["kind"] != "resnet_unet":
            raise CellmapsInputError(
                f"--encoder-weights needs a ResNet U-Net recipe (e.g. weakly-points); this "
                f"recipe's net is {out['net']['kind']!r}"
            )
        if not Path(encoder_weights).is_file():
            raise CellmapsInputError("encoder weights file does not exist", encoder_weights)
        out["net"]["encoder_weights"] = str(encoder_weights)
    return out
