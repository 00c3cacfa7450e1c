"""Build the anatomy cache once (`anatomy.cache_dir()`): the oasis-dk label map and the atlas image
it was drawn on (one registration shared by both), and the fsaverage map when its optional package
is installed. Training, synthesis, the evaluation and the tests read them from there; each is built
once per build version. CI runs this before the tests, so that no test pays for the build.

    .venv/bin/python scripts/build-anatomy-cache.py
"""

import importlib.util
import time

from voxelprompt.synth.atlas import atlas_image
from voxelprompt.synth import anatomy

started = time.perf_counter()
sources = ["oasis-dk"] + (["fsaverage"] if importlib.util.find_spec(anatomy.FREESURFER_PACKAGE) else [])
for source in sources:
    anatomy.load(source)
atlas_image()
print(f"anatomy cache ({', '.join(sources)}, atlas image) ready in {anatomy.cache_dir()} "
      f"after {time.perf_counter() - started:.0f} s")
