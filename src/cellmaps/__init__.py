"""cellmaps — find, outline and classify cells and nuclei with multi-task FCNs.

The package is split as in DESIGN.md: ``io``, ``targets``, ``postprocess`` and
``metrics`` are pure numpy/scipy; nets, losses, training and inference use torch.
"""

from cellmaps.errors import CellmapsInputError

__all__ = ["CellmapsInputError", "__version__"]
__version__ = "0.1.0"
