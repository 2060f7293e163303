"""Models shipped with cellmaps, by name: ``default`` (H&E / IHC nuclei), ``ki67`` and, where
it was bundled, ``fluo-nuclei``; each with a model card (``models/cards.json``, written by
``benchmarks/model_cards.py`` from the model files and the results JSON, never by hand).

``cellmaps models`` lists them, ``cellmaps models NAME`` prints a card, and ``cellmaps
predict NAME images/`` runs one.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np

from cellmaps.errors import CellmapsInputError
from cellmaps.io.modality import (
    BRIGHTFIELD,
    FLUORESCENCE,
    PHASE,
    image_modality,
    modality_warning,
)
from cellmaps.model import Model, load_model

MODELS_DIR = Path(__file__).parent / "models"
CARDS = MODELS_DIR / "cards.json"
#: what to suggest for an image of each modality (the bundled model's name, or advice)
FOR_MODALITY = {
    BRIGHTFIELD: "the default model (or ki67 for Ki67 IHC)",
    FLUORESCENCE: "cellmaps predict fluo-nuclei ...",
    PHASE: "a model trained on phase-contrast images (recipe deepdistance, README 'Train')",
}


def model_cards() -> dict[str, dict]:
    """Every bundled model's card (name → card) whose file is in this installation."""
    cards = json.loads(CARDS.read_text(encoding="utf-8")) if CARDS.is_file() else {}
    return {n: c for n, c in cards.items() if (MODELS_DIR / c["file"]).is_file()}


def model_card(name: str) -> dict:
    """One bundled model's card; a clear error naming the bundled models otherwise."""
    cards = model_cards()
    if name not in cards:
        raise CellmapsInputError(
            f"no bundled model named {name!r}; bundled: {', '.join(sorted(cards)) or 'none'}"
        )
    return cards[name]


def is_bundled_name(arg: str | os.PathLike) -> bool:
    """Whether a command-line argument names a bundled model (not a file that exists)."""
    return isinstance(arg, str) and not Path(arg).exists() and arg in model_cards()


def load_bundled(name: str) -> Model:
    """A bundled model by name, knowing its name and the modality it was trained on."""
    card = model_card(name)
    model = Model.load(MODELS_DIR / card["file"])
    model.training.setdefault("modality", card["modality"])
    model.training.setdefault("bundled_name", name)
    return model


def suggestion_for(modality: str) -> str | None:
    """What to use for images of ``modality``: a bundled model where one is installed."""
    if modality == FLUORESCENCE and "fluo-nuclei" not in model_cards():
        return "a model trained on fluorescence images (recipe deepsplit, README 'Split')"
    return FOR_MODALITY.get(modality)


def format_card(name: str, card: dict) -> str:
    """A model card as text: what it finds, in which images, trained on what data (and its
    licence), at which scale, its validation and test figures, the command that made it."""
    lines = [f"{name}: {card['what']}", f"  modality: {card['modality']}"]
    lines.append(f"  scale: {card['scale']}")
    for d in card["data"]:
        lines.append(f"  data: {d['name']} ({d['role']}); licence: {d['licence']}")
    for split in ("validation", "test"):
        for row in card.get(split, []):
            lines.append(f"  {split}: {row}")
    lines.append(f"  trained by: {card['command']}")
    lines.append(f"  file: {card['file']} (sha256 {card['sha256'][:16]}…)")
    return "\n".join(lines)


def resolve_model(model) -> Model:
    """A :class:`Model` as given, a bundled model by name (``fluo-nuclei``), the bundled
    default model for None, or a model file."""
    if model is None or (isinstance(model, str) and is_bundled_name(model)):
        return load_bundled(model or "default")
    return load_model(model)


def check_modality(m: Model, image: np.ndarray, f: Path, state: dict) -> None:
    """Warn (once per run, naming the first such image) when an image looks like another
    microscopy than the model was trained on (:func:`cellmaps.io.modality.image_modality`;
    the model's ``training.modality``, recorded at training or by its card): its detections
    there cannot be trusted (the default model finds nothing in fluorescence images)."""
    trained = m.training.get("modality")
    if trained is None or state.get("modality_warned"):
        return
    seen = image_modality(image)
    if seen != trained:
        state["modality_warned"] = True
        warnings.warn(modality_warning(seen, trained, f.name, suggestion_for(seen)), stacklevel=2)
