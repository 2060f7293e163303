"""cellmaps — find, outline and classify cells and nuclei with multi-task FCNs.

The package is split as in DESIGN.md: ``io``, ``targets``, ``postprocess`` and
``metrics`` are pure numpy/scipy; nets, losses, training and inference use torch.

The Python API, for notebooks and scripts::

    import cellmaps
    m = cellmaps.load_model()            # bundled: "default", "ki67", "fluo-nuclei"; or a file
    r = m.predict(image)                 # r.points, r.labels, r.table (one row per object)
    cellmaps.evaluate(truth, pred)       # arrays or folders

``load_model``, ``evaluate``, ``Model`` and ``Prediction`` are imported on first use, so
``import cellmaps`` stays light (no torch until a model is needed).
"""

from cellmaps.errors import CellmapsInputError
from cellmaps.version import __version__

__all__ = ["CellmapsInputError", "Model", "Prediction", "__version__", "evaluate", "load_model"]

_LAZY = {
    "load_model": "cellmaps.api",
    "evaluate": "cellmaps.api",
    "Model": "cellmaps.model",
    "Prediction": "cellmaps.model",
}


def __getattr__(name: str):
    """The API names, imported when first asked for (PEP 562)."""
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cellmaps' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
