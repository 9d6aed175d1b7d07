"""What Qwen-Image-Edit needs beyond its diffusers pipeline on this stack: an image-only processor, and small
condition images for the tiny preview models.

transformers 5's `Qwen2VLProcessor` insists on a video processor, and the only one needs torchvision (which must
not be installed here: its CPU build is not on offer, and the CUDA one breaks transformers' imports). The editor
never sends video, so `ImageOnlyQwenProcessor` drops that part; the cache loads it from a checkpoint's
`processor/` folder and hands it to the pipeline.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import diffusers.pipelines.qwenimage.pipeline_qwenimage_edit as edit_module
import diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus as edit_plus_module
from transformers import AutoTokenizer, Qwen2VLImageProcessorPil, Qwen2VLProcessor

# The editors resize every input image to about 1 MP (Plus: 384² for the language model) before encoding it; a
# tiny preview model does the same at this area, so a test run takes a fraction of a second, not a minute.
PREVIEW_CONDITION_AREA = 64 * 64


class ImageOnlyQwenProcessor(Qwen2VLProcessor):
    """Qwen2-VL's processor without its video part (tokenizer + PIL image processor)."""

    @classmethod
    def get_attributes(cls) -> list[str]:
        return ["image_processor", "tokenizer"]


def load_processor(location: str, *, local_files_only: bool) -> ImageOnlyQwenProcessor:
    """The checkpoint's processor (its `processor/` folder), image part only."""
    image_processor = Qwen2VLImageProcessorPil.from_pretrained(
        location, subfolder="processor", local_files_only=local_files_only
    )
    tokenizer = AutoTokenizer.from_pretrained(location, subfolder="processor", local_files_only=local_files_only)
    return ImageOnlyQwenProcessor(image_processor=image_processor, tokenizer=tokenizer)


@contextmanager
def small_condition_images() -> Iterator[None]:
    """While a preview model runs: the editors' condition (and VAE) images at PREVIEW_CONDITION_AREA. Callers hold
    pipelines.cache.RUN_LOCK, so no other run sees the change."""
    originals = edit_module.calculate_dimensions, edit_plus_module.calculate_dimensions

    def small(module_function):
        return lambda _area, ratio: module_function(PREVIEW_CONDITION_AREA, ratio)

    edit_module.calculate_dimensions, edit_plus_module.calculate_dimensions = (small(f) for f in originals)
    try:
        yield
    finally:
        edit_module.calculate_dimensions, edit_plus_module.calculate_dimensions = originals
