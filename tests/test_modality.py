"""Which microscopy an image looks like (cellmaps.io.modality), on every image of the shared
datasets, and the warning a model gives an image far from its training images."""

from __future__ import annotations

import numpy as np
import pytest

from cellmaps.io import Dataset
from cellmaps.io.modality import BRIGHTFIELD, FLUORESCENCE, PHASE, image_modality
from tests.conftest import shared_dataset

EXPECTED = {
    "crchisto": BRIGHTFIELD,
    "monuseg": BRIGHTFIELD,
    "mbm_bonemarrow": BRIGHTFIELD,
    "bcdata_ki67": BRIGHTFIELD,
    "dsb2018_fluo": FLUORESCENCE,
    "usiigaci_phc": PHASE,
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_shared_image_is_told_its_modality(name):
    ds = Dataset(shared_dataset(name))
    seen = [image_modality(ds.image(i)) for i in ds.ids()]
    assert seen.count(EXPECTED[name]) == len(seen), {m: seen.count(m) for m in set(seen)}


def test_modality_follows_the_two_statistics():
    """By hand: a dark grey image is fluorescence (8-bit, or 12-bit in uint16); a mid-grey one phase
    contrast; a bright grey one or a coloured one brightfield; an RGB image with equal
    channels counts as grey."""
    rng = np.random.default_rng(0)
    dark = (rng.random((64, 64)) * 30).astype(np.uint8)
    assert image_modality(dark) == FLUORESCENCE
    twelve_bit = (100 + rng.random((64, 64)) * 100).astype(np.uint16)  # a 12-bit camera
    twelve_bit[20:30, 20:30] = 4000  # one bright nucleus
    assert image_modality(twelve_bit) == FLUORESCENCE
    mid = (110 + rng.random((64, 64)) * 40).astype(np.uint8)
    assert image_modality(mid) == PHASE
    assert image_modality(np.repeat(mid[..., None], 3, axis=2)) == PHASE
    assert image_modality(mid + 80) == BRIGHTFIELD  # bright grey: brightfield
    pink = np.stack([mid + 90, mid, mid + 60], axis=2).astype(np.uint8)
    assert image_modality(pink) == BRIGHTFIELD
