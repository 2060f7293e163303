"""One model file: weights + recipe + normalisation + tuned decoding + training summary.

The file is safetensors (tensors and a string metadata table only), so loading it can
never run code. Anything else — a pickle, a truncated or foreign file — is refused with
a clear error.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from cellmaps.errors import CellmapsInputError
from cellmaps.io._atomic import atomic_path

FORMAT = "cellmaps-model/1"


def save_model_file(path: str | os.PathLike, state: dict[str, torch.Tensor], meta: dict) -> None:
    """Write weights and metadata (JSON under the key 'cellmaps') atomically."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT, "cellmaps": json.dumps(meta)})


def _check_safetensors_header(path: Path) -> None:
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(9)
    if len(head) < 9:
        raise CellmapsInputError(f"not a cellmaps model file: only {size} bytes", path)
    (n,) = struct.unpack("<Q", head[:8])
    if head[8:9] != b"{" or n > size - 8:
        if head[:2] == b"\x80\x02" or head[:1] == b"\x80" or head[:2] == b"PK":
            raise CellmapsInputError(
                "refusing a pickled/zip torch file: cellmaps model files are safetensors "
                "(they cannot run code when loaded)",
                path,
            )
        raise CellmapsInputError(
            "not a cellmaps model file (expected safetensors; the file is foreign or truncated)",
            path,
        )


def load_model_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a model file; returns (state dict, metadata)."""
    path = Path(path)
    if not path.is_file():
        raise CellmapsInputError("model file does not exist", path)
    _check_safetensors_header(path)
    try:
        # imported here: only to tell a corrupt file from a foreign one
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            meta_raw = fh.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CellmapsInputError(f"corrupt or truncated model file ({exc})", path) from exc
    if meta_raw.get("format") != FORMAT or "cellmaps" not in meta_raw:
        raise CellmapsInputError(
            "safetensors file without cellmaps metadata: not a cellmaps model", path
        )
    try:
        meta = json.loads(meta_raw["cellmaps"])
    except json.JSONDecodeError as exc:
        raise CellmapsInputError(f"model metadata is not valid JSON ({exc})", path) from exc
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CellmapsInputError(
            f"{len(bad)} weight tensor(s) hold NaN or infinite values (e.g. {bad[0]}): the "
            "training that wrote it diverged; retrain with a lower learning rate",
            path,
        )
    return state, meta


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A plain state dict from safetensors, or from a torch file loaded with
    ``weights_only=True`` (user-supplied encoder weights)."""
    path = Path(path)
    if not path.is_file():
        raise CellmapsInputError("weights file does not exist", path)
    if path.suffix == ".safetensors":
        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for unsafe/corrupt files
        raise CellmapsInputError(f"cannot load weights safely ({exc})", path) from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CellmapsInputError("expected a state dict of tensors", path)
    return obj
