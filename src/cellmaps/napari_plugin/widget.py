"""The dock widget "Detect cells and nuclei": a magicgui form over
:func:`~cellmaps.napari_plugin.run.detect_layers` (the only module importing napari)."""

from pathlib import Path

# no `from __future__ import annotations`: magicgui reads the annotations as types
import napari.layers
import napari.types
from magicgui import magic_factory

from cellmaps.bundled import model_cards
from cellmaps.napari_plugin.run import detect_layers, layer_pixels


def bundled_choices(_widget=None) -> list[str]:
    """The bundled models of this installation, the default first."""
    names = sorted(model_cards())
    return sorted(names, key=lambda n: n != "default")


@magic_factory(
    call_button="Detect",
    model={"widget_type": "ComboBox", "choices": bundled_choices,
           "tooltip": "a bundled model (cellmaps models)"},
    model_file={"label": "or model file", "filter": "*.safetensors",
                "tooltip": "a model written by cellmaps train (overrides the bundled model)"},
    object_size={"min": 0.0, "max": 1000.0, "step": 0.5,
                 "tooltip": "median object radius in px; 0: the model's own policy"},
    pixel_size={"min": 0.0, "max": 100.0, "step": 0.01,
                "tooltip": "µm per pixel; 0: not known"},
    outlines={"tooltip": "also a Labels layer of outlines, with models that outline"},
)  # fmt: skip
def detect_widget(
    image: napari.layers.Image,
    model: str = "default",
    model_file: Path = Path(),
    object_size: float = 0.0,
    pixel_size: float = 0.0,
    outlines: bool = True,
) -> list[napari.types.LayerDataTuple]:
    """Find the cells or nuclei in the selected image layer with a cellmaps model."""
    pixels = layer_pixels(image.data, bool(image.rgb), image.name)
    chosen = model_file if model_file.is_file() else model
    return detect_layers(pixels, image.name, chosen, object_size=object_size or None,
                         pixel_size=pixel_size or None, outlines=None if outlines else False)  # fmt: skip
