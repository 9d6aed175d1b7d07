"""ControlNet guide images from controlnet-aux detectors that need no downloaded weights.

`import controlnet_aux` runs a package `__init__` that imports every detector, some of which need
torchvision (never installed here: the only build on offer breaks transformers). So the package is
registered as a bare module with its real `__path__`, and only the detector submodules we use are
imported; their own imports (cv2, numpy, torch) are all available.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import types

import numpy as np
from PIL import Image

from pipelines.errors import ModelUnavailableError
from pipelines.params import ControlParams, Guide

# ContentShuffle draws from numpy's global random state; a lock and a seed make guides repeatable.
_NUMPY_RANDOM_LOCK = threading.Lock()


def _controlnet_aux() -> None:
    """Make `controlnet_aux.<detector>` importable without running the package's __init__."""
    if "controlnet_aux" in sys.modules:
        return
    spec = importlib.util.find_spec("controlnet_aux")
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError(
            "ControlNet guides need controlnet-aux: run `pip install --no-deps controlnet-aux==0.0.10` (see setup.sh)."
        )
    package = types.ModuleType("controlnet_aux")
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    sys.modules["controlnet_aux"] = package


def import_detectors() -> None:
    """Import the detectors `make_guide` uses (see pipelines.import_model_stack)."""
    _controlnet_aux()
    from controlnet_aux.canny import CannyDetector  # noqa: F401
    from controlnet_aux.lineart_standard import LineartStandardDetector  # noqa: F401
    from controlnet_aux.shuffle import ContentShuffleDetector  # noqa: F401


def make_guide(image: Image.Image, control: ControlParams, *, seed: int = 0) -> Image.Image:
    """The guide image for `image` (RGB, same size), as the ControlNet of `control.guide` expects it.

    Detectors work at about the image's size, rounded to multiples of 64; the guide is resized back to
    the image's size so it lines up pixel for pixel with what the model renders.
    """
    _controlnet_aux()
    image = image.convert("RGB")
    # controlnet-aux scales the *short* side to this resolution (then rounds both to ×64), so the short
    # side keeps detection at about the image's own size; the long side would upscale wide images.
    resolution = min(image.size)
    if control.guide == Guide.canny:
        from controlnet_aux.canny import CannyDetector

        guide = CannyDetector()(
            image,
            low_threshold=control.low_threshold,
            high_threshold=control.high_threshold,
            detect_resolution=resolution,
            image_resolution=resolution,
            output_type="pil",
        )
    elif control.guide == Guide.lineart:
        from controlnet_aux.lineart_standard import LineartStandardDetector

        guide = LineartStandardDetector()(image, detect_resolution=resolution, output_type="pil")
    else:
        from controlnet_aux.shuffle import ContentShuffleDetector

        with _NUMPY_RANDOM_LOCK:
            state = np.random.get_state()
            np.random.seed(seed)
            try:
                guide = ContentShuffleDetector()(
                    image, detect_resolution=resolution, image_resolution=resolution, output_type="pil"
                )
            finally:
                np.random.set_state(state)
    return guide.convert("RGB").resize(image.size, Image.Resampling.BILINEAR)
