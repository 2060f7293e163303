"""Draw one target-map panel per modality from ../shared/data into docs/ (issue: check by eye).

    python -m benchmarks.target_panels

H&E with masks (MoNuSeg), H&E with classified points only (CRCHisto), fluorescence
(DSB 2018) and phase contrast (Usiigaci). A crop of each image keeps the maps legible.
"""

from __future__ import annotations

import argparse

from benchmarks._common import REPO, SHARED_DATA
from cellmaps.io import Dataset
from cellmaps.targets.build import Annotations
from cellmaps.targets.panel import draw_target_panel

PANELS = [
    # (dataset, image id, crop (r0, c0, h, w), use mask?, output name)
    ("monuseg", "TCGA-21-5784-01Z-00-DX1", (300, 300, 200, 200), True, "targets_he_monuseg.png"),
    ("crchisto", "crc_img79", (150, 150, 200, 200), False, "targets_he_crchisto_points.png"),
    (
        "dsb2018_fluo",
        "dsb_03398329ced0",
        (0, 0, 256, 256),
        True,
        "targets_fluorescence_dsb2018.png",
    ),
    ("usiigaci_phc", "usi_set1", (300, 300, 350, 350), True, "targets_phase_contrast_usiigaci.png"),
]


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args(argv)
    for name, image_id, (r0, c0, h, w), use_mask, out in PANELS:
        ds = Dataset(SHARED_DATA / name)
        pts = ds.points(image_id)
        a = Annotations(
            image=ds.image(image_id),
            points=pts.coords,
            labels=pts.labels,
            mask=ds.mask(image_id) if use_mask else None,
            source=f"{name}/{image_id} crop r{r0}:{r0 + h} c{c0}:{c0 + w}",
        ).crop(r0, c0, h, w)
        names = draw_target_panel(a, REPO / "docs" / out)
        print(f"docs/{out}: {', '.join(names)}")


if __name__ == "__main__":
    main()
