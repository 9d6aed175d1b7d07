"""Comparing images of different sizes and shapes: nothing is stretched."""

from __future__ import annotations

from PIL import Image, ImageChops

from studio.media.compare import BACKGROUND, same_size, split_view


def _content_box(image: Image.Image) -> tuple[int, int, int, int]:
    """The box of what is not the grey background."""
    return ImageChops.difference(image, Image.new("RGB", image.size, BACKGROUND)).getbbox()


def test_a_result_of_the_same_shape_is_scaled_to_the_source():
    source, result = Image.new("RGB", (1000, 800), "red"), Image.new("RGB", (504, 400), "blue")
    first, second = same_size(source, result)
    assert first.size == second.size == (1000, 800)
    assert second.getpixel((0, 0)) == (0, 0, 255)


def test_an_expanded_result_and_its_source_keep_their_shapes_on_one_canvas():
    source, expanded = Image.new("RGB", (1000, 800), "red"), Image.new("RGB", (1424, 800), "blue")  # 5:4 → 16:9
    first, second = same_size(source, expanded)
    assert first.size == second.size == (1424, 800)
    assert _content_box(second) == (0, 0, 1424, 800)  # the wider fills the canvas
    left, top, right, bottom = _content_box(first)
    assert (right - left, bottom - top) == (1000, 800)  # the source unstretched, centred
    assert left == 212 and first.getpixel((100, 400)) == BACKGROUND
    assert split_view(source, expanded, 0.5).size == (1424, 800)


def test_a_taller_result_is_matched_by_width():
    source, story = Image.new("RGB", (800, 800), "red"), Image.new("RGB", (400, 712), "blue")  # 1:1 → 9:16
    first, second = same_size(source, story)
    assert first.size == second.size == (800, 1424)
    left, top, right, bottom = _content_box(first)
    assert (right - left, bottom - top) == (800, 800)
    assert _content_box(second) == (0, 0, 800, 1424)
