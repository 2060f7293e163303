"""The npe2 reader: a ``cellmaps predict`` output folder → its points and masks layers."""

from __future__ import annotations

from collections.abc import Callable

from cellmaps.napari_plugin.layers import LayerData, is_output_folder, output_folder_layers


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """napari's reader hook: a reader for one cellmaps output folder, else None (napari
    then asks its other readers)."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    return read_output_folder if is_output_folder(path) else None


def read_output_folder(path: str | list[str]) -> list[LayerData]:
    """The folder's layers (:func:`~cellmaps.napari_plugin.layers.output_folder_layers`)."""
    return output_folder_layers(path[0] if isinstance(path, list) else path)
