"""The napari plugin's figure for the docs: a MoNuSeg crop in a napari viewer after
"Detect cells and nuclei" with the bundled default model (points coloured by class, the
outlines as a Labels layer), saved from the viewer's canvas.

Needs ``cellmaps[napari]`` and an X display (``xvfb-run -a python -m
benchmarks.napari_screenshot``); writes docs/napari_plugin.png. Not a measurement: a picture
of what the widget adds, made the way the widget makes it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks._common import REPO, SHARED_DATA
from cellmaps.io.dataset import Dataset
from cellmaps.io.images import read_image

IMAGE_ID = "TCGA-21-5784-01Z-00-DX1"  # the crop the plugin's test scores
CROP = 384
OUT = REPO / "docs" / "napari_plugin.png"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    import napari

    ds = Dataset(SHARED_DATA / "monuseg")
    image = read_image(ds.image_path(IMAGE_ID))[:CROP, :CROP]
    viewer = napari.Viewer(show=True)  # drawn on the (virtual) display
    layer = viewer.add_image(image, name="MoNuSeg crop", rgb=True)
    _, widget = viewer.window.add_plugin_dock_widget("cellmaps", "Detect cells and nuclei")
    widget.image.value = layer
    widget.object_size.value = 10.0  # 40×: nuclei of about 10 px radius
    widget()
    viewer.layers["MoNuSeg crop default outlines"].contour = 2
    viewer.reset_view()
    viewer.screenshot(str(args.out), canvas_only=True, flash=False)
    viewer.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
