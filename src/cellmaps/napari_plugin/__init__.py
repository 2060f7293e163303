"""The napari plugin (npe2 manifest ``napari.yaml``; ``pip install "cellmaps[napari]"``).

- **Detect cells and nuclei** (Plugins menu): runs a bundled model (``default``, ``ki67``,
  ``fluo-nuclei``) or a model file on the selected image layer and adds a Points layer (class
  colours; class, score and the per-object measurements as features) and, when asked for
  outlines, a Labels layer.
- **Reader**: drop a ``cellmaps predict`` output folder on napari to open every image's
  points (with their measurements) and masks.

:mod:`~cellmaps.napari_plugin.layers` turns predictions and output folders into napari's
layer-data tuples with numpy only; :mod:`~cellmaps.napari_plugin.widget` is the only module
that imports napari and Qt.
"""
