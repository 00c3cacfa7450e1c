"""Derive the small cranial-cavity template shipped in voxelprompt/data/templates/.

Source: the MNI152NLin6Asym 1 mm T1w template and its brain mask as shipped in the PyPI package
`nimare` (resources/templates/). Output: the T1w at 3 mm (uint8) and a cranial-cavity mask at 3 mm
(the brain mask, closed and hole-filled so that it covers ventricles and sulcal CSF). Licence and
attribution: voxelprompt/data/templates/LICENSE-MNI152.txt.

Run: python scripts/make_cavity_template.py  (needs `pip install --no-deps nimare==0.22.1`)
"""

import importlib.util
from pathlib import Path

import numpy as np
from scipy import ndimage

from voxelprompt.core.io import load_volume, save_volume

SPACING_MM = 3.0
OUT = Path(__file__).resolve().parents[1] / "voxelprompt" / "data" / "templates"


def main() -> None:
    spec = importlib.util.find_spec("nimare")
    if spec is None or spec.origin is None:
        raise SystemExit("install the source data first: pip install --no-deps nimare==0.22.1")
    source = Path(spec.origin).parent / "resources" / "templates"
    t1 = load_volume(source / "tpl-MNI152NLin6Asym_res-01_T1w.nii.gz")
    brain = load_volume(source / "tpl-MNI152NLin6Asym_res-01_desc-brain_mask.nii.gz")

    # Anti-alias before subsampling: Gaussian with sigma ~ 0.4 of the new voxel size.
    smooth = t1.with_array(ndimage.gaussian_filter(t1.array, sigma=0.4 * SPACING_MM))
    t1_small = smooth.resampled_to_spacing(SPACING_MM, order=1)
    t1_small = t1_small.with_array(np.round(255 * t1_small.array / t1_small.array.max()))
    save_volume(t1_small, OUT / "mni152_T1w_3mm.nii.gz", dtype=np.uint8)

    cavity = ndimage.binary_closing(brain.array > 0.5, ndimage.generate_binary_structure(3, 1), iterations=3)
    cavity = ndimage.binary_fill_holes(cavity).astype(np.float32)
    cavity_small = brain.with_array(cavity).resampled_to(t1_small.grid, order=1)
    save_volume(cavity_small.with_array(cavity_small.array > 0.5), OUT / "mni152_cranialcavity_3mm.nii.gz", dtype=np.uint8)


if __name__ == "__main__":
    main()
