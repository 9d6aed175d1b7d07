"""Inpainting masks (pipelines.masks): uploads, canvas drawings, checks, feather, crop box, keep-unmasked.

PIL and numpy only: this module must not import torch (the web app checks masks without the model stack).
"""

from __future__ import annotations

import io
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from pipelines.errors import PipelineInputError
from pipelines.masks import (
    ERASE_COLOUR,
    PAINT_COLOUR,
    THRESHOLD,
    check_mask,
    feathered,
    keep_unmasked,
    mask_from_canvas,
    mask_from_upload,
    masked_box,
    working_size,
)
from studio.config import PROJECT_ROOT

REPO_ROOT = PROJECT_ROOT


def png_roundtrip(image: Image.Image, **save: object) -> Image.Image:
    """The image as an uploaded PNG decodes (tRNS transparency lands in .info)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **save)
    decoded = Image.open(io.BytesIO(buffer.getvalue()))
    decoded.load()
    return decoded


def values(mask: Image.Image) -> np.ndarray:
    return np.asarray(mask)


def block_mask(pattern: list[list[int]]) -> np.ndarray:
    return np.array(pattern, dtype=np.uint8) * 255


# --- import cost ---------------------------------------------------------------------------------


def test_masks_module_does_not_import_torch() -> None:
    code = "import sys, pipelines.masks; print(sorted(m for m in ('torch', 'diffusers') if m in sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# --- uploads -------------------------------------------------------------------------------------


def test_upload_rgb_white_on_black_resized_nearest_to_source_size() -> None:
    pattern = block_mask([[1, 0, 0, 1], [0, 1, 1, 0]])  # 4×2
    upload = Image.fromarray(np.stack([pattern] * 3, axis=-1), "RGB")
    mask = mask_from_upload(upload, (40, 30))  # ×10 wide, ×15 high: another size and aspect
    assert mask.mode == "L" and mask.size == (40, 30)
    # Nearest-neighbour with integer factors: every upload pixel becomes a 10×15 block, no grey edge.
    assert np.array_equal(values(mask), np.kron(pattern, np.ones((15, 10), dtype=np.uint8)))


def test_upload_downscaled_with_nearest_keeps_sampled_thin_strokes() -> None:
    upload = np.zeros((40, 40), dtype=np.uint8)
    upload[:, 6] = 255  # a 1 px stroke on the column nearest-neighbour samples for output column 1 (4·1 + 2)
    mask = values(mask_from_upload(Image.fromarray(upload, "L"), (10, 10)))
    # An averaging filter would make it 255/4 ≈ 64 and the threshold would drop it.
    assert (mask[:, 1] == 255).all()
    assert mask.sum() == 255 * 10


def test_upload_non_integer_resize_is_binary() -> None:
    rng = np.random.default_rng(0)
    upload = Image.fromarray(rng.integers(0, 256, (20, 30), dtype=np.uint8), "L")
    mask = mask_from_upload(upload, (100, 76))
    assert mask.mode == "L" and mask.size == (100, 76)
    assert set(np.unique(values(mask)).tolist()) <= {0, 255}
    # Roughly half the random grey levels are above the threshold.
    assert 0.35 < (values(mask) == 255).mean() < 0.65


@pytest.mark.parametrize(("grey", "expected"), [(0, 0), (THRESHOLD, 0), (THRESHOLD + 1, 255), (255, 255)])
def test_upload_greyscale_threshold(grey: int, expected: int) -> None:
    assert THRESHOLD == 127
    mask = mask_from_upload(Image.new("L", (16, 12), grey), (16, 12))
    assert np.unique(values(mask)).tolist() == [expected]


def test_upload_rgba_counts_only_opaque_white() -> None:
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)  # transparent black background
    rgba[0, :] = (255, 255, 255, 0)  # transparent *white*: must not count
    rgba[1, :] = (255, 255, 255, 255)  # opaque white: repaint
    rgba[2, :] = (0, 0, 0, 255)  # opaque black: keep
    rgba[3, :] = (255, 255, 255, THRESHOLD)  # half transparent white, just below the threshold
    rgba[4, :] = (255, 255, 255, THRESHOLD + 1)  # just above
    mask = values(mask_from_upload(png_roundtrip(Image.fromarray(rgba, "RGBA")), (8, 8)))
    assert mask[:, 0].tolist() == [0, 255, 0, 0, 255, 0, 0, 0]
    assert (mask == mask[:, :1]).all()


def test_upload_la_counts_only_opaque_white() -> None:
    alpha = np.zeros((6, 6), dtype=np.uint8)
    alpha[2:4, 2:4] = 255
    upload = Image.merge("LA", [Image.new("L", (6, 6), 255), Image.fromarray(alpha, "L")])
    assert np.array_equal(values(mask_from_upload(upload, (6, 6))), alpha)


def test_upload_palette_with_transparency() -> None:
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([255, 255, 255, 0, 0, 0, 255, 255, 255])  # 0: white, 1: black, 2: white
    palette.paste(1, (0, 0, 8, 2))
    palette.paste(2, (2, 4, 6, 6))
    upload = png_roundtrip(palette, transparency=0)  # index 0, white, is the transparent background
    assert upload.mode == "P" and "transparency" in upload.info
    expected = np.zeros((8, 8), dtype=np.uint8)
    expected[4:6, 2:6] = 255
    assert np.array_equal(values(mask_from_upload(upload, (8, 8))), expected)


def test_upload_palette_without_transparency_is_greyscale() -> None:
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([255, 255, 255, 0, 0, 0])
    palette.paste(1, (0, 0, 8, 2))
    mask = values(mask_from_upload(png_roundtrip(palette), (8, 8)))
    assert (mask[:2] == 0).all() and (mask[2:] == 255).all()


# --- canvas --------------------------------------------------------------------------------------


def css_rgba(colour: str) -> tuple[int, int, int, int]:
    red, green, blue, alpha = (float(part) for part in re.findall(r"[\d.]+", colour))
    return int(red), int(green), int(blue), round(alpha * 255)


PAINT = css_rgba(PAINT_COLOUR)
ERASE = css_rgba(ERASE_COLOUR)


def stroke(canvas: np.ndarray, box: tuple[int, int, int, int], colour: tuple[int, int, int, int]) -> None:
    """Draw a rectangle the way a browser canvas does (source-over; getImageData gives straight alpha)."""
    left, top, right, bottom = box
    region = canvas[top:bottom, left:right].astype(np.float64)
    src_alpha = colour[3] / 255
    dst_alpha = region[..., 3:] / 255
    out_alpha = src_alpha + dst_alpha * (1 - src_alpha)
    rgb = (np.array(colour[:3]) * src_alpha + region[..., :3] * dst_alpha * (1 - src_alpha)) / np.maximum(
        out_alpha, 1e-9
    )
    canvas[top:bottom, left:right, :3] = np.round(rgb)
    canvas[top:bottom, left:right, 3:] = np.round(out_alpha * 255)


def empty_canvas(width: int = 24, height: int = 18) -> np.ndarray:
    return np.zeros((height, width, 4), dtype=np.uint8)


def test_canvas_colours_are_the_translucent_brush_and_eraser() -> None:
    assert PAINT == (255, 255, 255, 153)
    assert ERASE == (0, 0, 0, 153)


def test_canvas_paint_stroke_is_masked_background_is_not() -> None:
    canvas = empty_canvas()
    stroke(canvas, (4, 3, 10, 9), PAINT)
    mask = mask_from_canvas(canvas, (24, 18))
    assert mask.mode == "L" and mask.size == (24, 18)
    expected = np.zeros((18, 24), dtype=np.uint8)
    expected[3:9, 4:10] = 255
    assert np.array_equal(values(mask), expected)


def test_canvas_eraser_over_paint_unmasks_and_paint_over_eraser_masks() -> None:
    canvas = empty_canvas()
    stroke(canvas, (0, 0, 12, 18), PAINT)
    stroke(canvas, (6, 0, 12, 18), ERASE)  # erase the right half of the paint
    stroke(canvas, (12, 0, 24, 18), ERASE)
    stroke(canvas, (18, 0, 24, 18), PAINT)  # paint again over the right half of the eraser
    assert canvas[0, 7].tolist() == [73, 73, 73, 214]  # erased paint: opaque enough, but dark
    assert canvas[0, 19].tolist() == [182, 182, 182, 214]  # paint over the eraser: light again
    mask = values(mask_from_canvas(canvas, (24, 18)))
    assert mask[0].tolist() == [255] * 6 + [0] * 12 + [255] * 6
    assert (mask == mask[:1]).all()


def test_canvas_faint_edge_and_eraser_alone_are_not_masked() -> None:
    canvas = empty_canvas()
    stroke(canvas, (0, 0, 8, 18), (255, 255, 255, 60))  # anti-aliased brush edge
    stroke(canvas, (8, 0, 16, 18), ERASE)
    with pytest.raises(PipelineInputError, match="paint"):
        check_mask(mask_from_canvas(canvas, (24, 18)))


def test_canvas_drawing_is_resized_to_the_source_with_nearest() -> None:
    canvas = empty_canvas(12, 9)  # the canvas shows the source at half size
    stroke(canvas, (3, 2, 7, 5), PAINT)
    mask = values(mask_from_canvas(canvas, (24, 18)))
    expected = np.zeros((18, 24), dtype=np.uint8)
    expected[4:10, 6:14] = 255
    assert np.array_equal(mask, expected)


@pytest.mark.parametrize("shape", [(18, 24), (18, 24, 3), (18, 24, 4, 1)])
def test_canvas_bad_shape_is_refused(shape: tuple[int, ...]) -> None:
    with pytest.raises(PipelineInputError, match="RGBA"):
        mask_from_canvas(np.zeros(shape, dtype=np.uint8), (24, 18))


# --- check_mask ----------------------------------------------------------------------------------


def test_empty_mask_is_refused_with_advice() -> None:
    with pytest.raises(PipelineInputError, match=r"empty: paint over the area to repaint"):
        check_mask(Image.new("L", (32, 32), 0))


def test_one_painted_pixel_is_enough() -> None:
    mask = Image.new("L", (32, 32), 0)
    mask.putpixel((31, 31), 255)
    check_mask(mask)


# --- feather, crop box, working size -------------------------------------------------------------


def rect_mask(size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return mask


def test_feather_zero_is_unchanged() -> None:
    mask = rect_mask((64, 48), (20, 10, 40, 30))
    assert np.array_equal(values(feathered(mask, 0)), values(mask))


def test_feather_softens_the_edge_only() -> None:
    mask = rect_mask((96, 72), (32, 24, 64, 48))
    soft = values(feathered(mask, 4))
    assert feathered(mask, 4).mode == "L"
    assert 0 < soft[36, 31] < 255 and 0 < soft[36, 32] < 255  # both sides of the left edge
    assert soft[36, 48] == 255  # the middle stays fully painted
    # PIL's Gaussian reaches about 2.5 × the radius (10 px for 4); 3 × is always untouched.
    far = np.ones_like(soft, dtype=bool)
    far[24 - 12 : 48 + 12, 32 - 12 : 64 + 12] = False
    assert (soft[far] == 0).all()
    assert soft[36, 32 - 9] > 0  # but it does reach past the painted area


def test_masked_box_with_padding() -> None:
    mask = rect_mask((100, 76), (40, 24, 70, 52))
    assert masked_box(mask, 0) == (40, 24, 70, 52)
    assert masked_box(mask, 8) == (32, 16, 78, 60)


def test_masked_box_padding_is_clipped_to_the_image() -> None:
    mask = rect_mask((100, 76), (3, 70, 96, 75))
    assert masked_box(mask, 10) == (0, 60, 100, 76)


def test_masked_box_of_empty_mask_is_refused() -> None:
    with pytest.raises(PipelineInputError, match="empty"):
        masked_box(Image.new("L", (10, 10), 0), 4)


@pytest.mark.parametrize(
    ("size", "long_side", "expected"),
    [
        ((100, 76), 128, (128, 96)),  # 97.28 → 96
        ((38, 36), 64, (64, 56)),  # small crop scaled up
        ((2000, 1000), 1024, (1024, 512)),  # scaled down
        ((36, 100), 64, (16, 64)),  # portrait: 23.04 → 16
        ((1, 1), 64, (64, 64)),  # a one-pixel area
        ((500, 3), 64, (64, 8)),  # a sliver keeps at least one latent
    ],
)
def test_working_size(size: tuple[int, int], long_side: int, expected: tuple[int, int]) -> None:
    assert working_size(*size, long_side) == expected


def test_working_size_long_side_is_exact_for_every_size() -> None:
    wrong = [(w, working_size(w, 30, 1024)) for w in range(31, 400) if max(working_size(w, 30, 1024)) != 1024]
    assert wrong == []


# --- keep unmasked -------------------------------------------------------------------------------


def random_rgb(size: tuple[int, int], seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def test_keep_unmasked_is_byte_identical_where_the_soft_mask_is_zero() -> None:
    original, generated = random_rgb((64, 48), 1), random_rgb((64, 48), 2)
    soft = feathered(rect_mask((64, 48), (16, 12, 48, 36)), 4)
    result = np.asarray(keep_unmasked(original, generated, soft))
    weight = values(soft)
    outside, inside = weight == 0, weight == 255
    assert outside.any() and inside.any() and (~outside & ~inside).any()
    assert np.array_equal(result[outside], np.asarray(original)[outside])
    assert np.array_equal(result[inside], np.asarray(generated)[inside])
    # The feathered band blends: never outside the range of the two inputs.
    band = ~outside & ~inside
    low = np.minimum(np.asarray(original), np.asarray(generated))[band].astype(int)
    high = np.maximum(np.asarray(original), np.asarray(generated))[band].astype(int)
    assert ((result[band] >= low - 1) & (result[band] <= high + 1)).all()


def test_keep_unmasked_resizes_the_generated_image_to_the_original() -> None:
    original = random_rgb((100, 76), 1).convert("RGBA")
    generated = random_rgb((64, 48), 2)
    soft = rect_mask((100, 76), (40, 24, 70, 52))
    result = keep_unmasked(original, generated, soft)
    assert result.size == (100, 76) and result.mode == "RGB"
    outside = values(soft) == 0
    assert np.array_equal(np.asarray(result)[outside], np.asarray(original.convert("RGB"))[outside])
    assert not np.array_equal(np.asarray(result)[~outside], np.asarray(original.convert("RGB"))[~outside])
