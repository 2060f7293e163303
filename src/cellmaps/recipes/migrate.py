"""Old names → current names, in one place: recipes and model files written by earlier
versions of cellmaps still load.

- ``training.object_size`` (recipe) and ``object_size`` / ``object_size_um`` (a model file's
  training summary) meant the radius the net was trained at; they are now
  ``train_radius`` / ``train_radius_um``, so that ``object_size`` means one thing only: the
  size of objects in an input image (``--object-size``, ``inference.object_size``).
- ``decode.elevation`` (a development model of the seeded outlines, recipe and model file):
  ``cells`` is now ``decode.segment: seeded_cells``; ``detection`` is ``seeded`` itself.
"""

from __future__ import annotations

import copy

#: recipe ``training`` keys renamed: old → new
RECIPE_TRAINING_RENAMES = {"object_size": "train_radius"}
#: model file ``training`` summary keys renamed: old → new
SUMMARY_RENAMES = {"object_size": "train_radius", "object_size_um": "train_radius_um"}


def _renamed(section: dict, renames: dict[str, str], where: str) -> dict:
    out = dict(section)
    for old, new in renames.items():
        if old in out:
            if new in out and out[new] != out[old]:
                raise ValueError(f"{where} has both {old!r} (old name) and {new!r}")
            out.setdefault(new, out.pop(old))
            out.pop(old, None)
    return out


def migrate_decode(decode: dict | None) -> dict | None:
    """A recipe's or model file's ``decode`` settings with ``elevation`` folded into
    ``segment`` (a copy)."""
    if not isinstance(decode, dict) or "elevation" not in decode:
        return decode
    out = dict(decode)
    if out.pop("elevation") == "cells" and out.get("segment") == "seeded":
        out["segment"] = "seeded_cells"
    return out


def migrate_recipe(data: dict) -> dict:
    """A recipe mapping with old key names replaced (a copy; the input is not changed)."""
    if not isinstance(data, dict) or not isinstance(data.get("training"), dict):
        return data
    out = copy.copy(data)
    out["training"] = _renamed(data["training"], RECIPE_TRAINING_RENAMES, "recipe training")
    if isinstance(data.get("decode"), dict):
        out["decode"] = migrate_decode(data["decode"])
    return out


def migrate_summary(training: dict | None) -> dict:
    """A model file's training summary with old key names replaced (a copy)."""
    return _renamed(training or {}, SUMMARY_RENAMES, "model training summary")
