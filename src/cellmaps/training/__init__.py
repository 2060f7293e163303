"""Training (torch): data and augmentation, optimisers, the fit loop with resume."""

from cellmaps.training.fit import Trainer, train

__all__ = ["Trainer", "train"]
