"""Outpainting ("expand"): the geometry of every channel preset and aspect with every placement (pipelines.outpaint,
torch-free), its refusals, its recipe, and runs on the tiny offline preview model (64–128 px, 2 steps) keeping the
source byte for byte."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipelines.errors import PipelineInputError
from pipelines.inpaint import outpaint_request, run_inpaint
from pipelines.outpaint import (
    CHANNEL_PRESETS,
    WHITE,
    canvas_size,
    outpaint_canvas,
    outpaint_mask,
    plan_outpaint,
    preset_params,
)
from pipelines.params import (
    ASPECTS,
    CUSTOM,
    MAX_CANVAS_SIDE,
    Fill,
    Img2ImgParams,
    InpaintParams,
    OutpaintParams,
    Placement,
    RunSpec,
    Task,
)
from tests.support import gradient

SOURCES = [(100, 76), (76, 100), (90, 90)]  # landscape, portrait, square; not multiples of 8
FORMATS = [
    *(pytest.param(preset_params(name), id=name) for name in CHANNEL_PRESETS),
    *(pytest.param(OutpaintParams(aspect=aspect), id=aspect) for aspect in ASPECTS),
    pytest.param(OutpaintParams(aspect=CUSTOM, width=128, height=112), id="custom"),
]
PARAMS = Img2ImgParams(prompt="a studio backdrop", strength=1.0, steps=2, guidance=7.5, seed=3)
KEEP = InpaintParams(mask_blur=0, keep_unmasked=True)


def with_placement(params: OutpaintParams, placement: Placement) -> OutpaintParams:
    return OutpaintParams(**{**params.__dict__, "placement": placement})


def fits(width: int, height: int, params: OutpaintParams) -> bool:
    try:
        canvas_size(width, height, params)
    except PipelineInputError:
        return False
    return True


# Geometry: every preset, aspect and custom size × every placement × landscape, portrait and square sources


@pytest.mark.parametrize("placement", list(Placement))
@pytest.mark.parametrize("base", FORMATS)
@pytest.mark.parametrize(("width", "height"), SOURCES)
def test_every_format_and_placement_puts_the_source_where_asked(base, placement, width, height):
    params = with_placement(base, placement)
    if not fits(width, height, params):  # the square source already is 1:1
        assert width == height and params.aspect == "1:1"
        return
    plan = plan_outpaint(width, height, params)
    canvas_w, canvas_h = plan.canvas
    left, top, right, bottom = plan.box

    # The canvas holds the source at its own size, in the format: within a pixel of the aspect (the tight axis is
    # the source's own side), or exactly the custom size.
    assert (right - left, bottom - top) == (width, height)
    assert left >= 0 and top >= 0 and right <= canvas_w and bottom <= canvas_h
    if params.aspect == CUSTOM:
        assert plan.canvas == (params.width, params.height)
    else:
        ratio_w, ratio_h = map(int, params.aspect.split(":"))
        assert abs(canvas_w * ratio_h - canvas_h * ratio_w) < max(ratio_w, ratio_h)
        assert canvas_w == width or canvas_h == height  # the smallest canvas of the aspect
    # Placement: flush against its side, centred across the other axis (and centred on both for centre).
    free_x, free_y = canvas_w - width, canvas_h - height
    expected_left = {Placement.left: 0, Placement.right: free_x}.get(placement, free_x // 2)
    expected_top = {Placement.top: 0, Placement.bottom: free_y}.get(placement, free_y // 2)
    assert (left, top) == (expected_left, expected_top)

    # The mask: 255 on all the new area, 0 on the kept part of the source, fading (1…254) only on the seam band.
    mask = np.asarray(outpaint_mask(plan))
    assert mask.shape == (canvas_h, canvas_w)
    inside = np.zeros(mask.shape, bool)
    inside[top:bottom, left:right] = True
    kept = np.zeros(mask.shape, bool)
    kept_left, kept_top, kept_right, kept_bottom = plan.kept_box
    kept[kept_top:kept_bottom, kept_left:kept_right] = True
    assert (mask[~inside] == 255).all() and (~inside).any()
    assert (mask[kept] == 0).all()
    band = inside & ~kept
    assert (mask[band] > 0).all()
    # Each bordering side's seam is `seam` px deep; sides against the canvas edge keep the source to the edge.
    for borders, kept_edge, edge in zip(plan.borders, plan.kept_box, plan.box, strict=True):
        assert abs(kept_edge - edge) == (params.seam if borders else 0)

    # The canvas: the source's pixels exactly in place; the new area white, or the edges extended and blurred.
    source = gradient(width, height)
    canvas = np.asarray(outpaint_canvas(source, plan, params.fill))
    assert np.array_equal(canvas[top:bottom, left:right], np.asarray(source))
    if params.fill is Fill.white:
        assert (canvas[~inside] == WHITE).all()
    else:  # colours of the nearest edge: never a flat colour the source does not have
        assert not (canvas[~inside] == WHITE).all(axis=-1).all()
        assert canvas[~inside].min() >= np.asarray(source).min() and canvas[~inside].max() <= np.asarray(source).max()


def test_the_channel_presets_are_the_ones_marketing_needs():
    assert {name: (p.aspect, p.fill) for name, p in CHANNEL_PRESETS.items()} == {
        "instagram-post": ("1:1", Fill.blur),
        "instagram-feed": ("4:5", Fill.blur),
        "story": ("9:16", Fill.blur),
        "web-banner": ("16:9", Fill.blur),
        "marketplace": ("1:1", Fill.white),
    }


def test_a_seam_of_zero_masks_exactly_the_new_area():
    plan = plan_outpaint(60, 40, OutpaintParams(aspect="16:9", seam=0))
    left, top, right, bottom = plan.box
    mask = np.asarray(outpaint_mask(plan))
    assert plan.kept_box == plan.box and (mask[top:bottom, left:right] == 0).all()
    assert mask.sum() == 255 * (plan.canvas[0] * plan.canvas[1] - 60 * 40)


# Refusals: impossible formats, with the reason


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            OutpaintParams(aspect=CUSTOM, width=96, height=200),
            r"smaller than the 100×76 source: its width 96 px is less",
        ),
        (
            OutpaintParams(aspect=CUSTOM, width=64, height=64),
            r"its width 64 px is less than the source's 100 and height 64 px is less than the source's 76",
        ),
        (OutpaintParams(aspect=CUSTOM, width=100, height=76), "already has this format"),
        (OutpaintParams(aspect=CUSTOM, width=MAX_CANVAS_SIDE + 8, height=200), "between 8 and 4096 px"),
        (OutpaintParams(aspect=CUSTOM, width=0, height=0), "A custom width must be between"),
        (OutpaintParams(aspect="3:2"), "Unknown format '3:2'"),
        (OutpaintParams(seam=65), "Seam must be between 0 and 64 px"),
    ],
)
def test_impossible_formats_are_refused_with_the_reason(params, message):
    with pytest.raises(PipelineInputError, match=message):
        plan_outpaint(100, 76, params)


def test_a_canvas_beyond_the_studios_largest_image_is_refused():
    with pytest.raises(PipelineInputError, match=r"makes a 4096×7282 canvas; .* up to 4096 px per side"):
        plan_outpaint(4096, 4096, OutpaintParams(aspect="9:16"))
    with pytest.raises(PipelineInputError, match="Unknown channel preset 'tiktok'"):
        preset_params("tiktok")


# Recipes: the format and placement are recorded and read back exactly


def test_a_recipe_records_the_format_and_reads_back_the_same_spec():
    expand = OutpaintParams(aspect="9:16", placement=Placement.bottom, fill=Fill.white, seam=12)
    spec = RunSpec(task=Task.inpaint, params=PARAMS, inpaint=KEEP, outpaint=expand)
    spec.check()
    recipe = spec.to_dict()
    assert recipe["outpaint"] == {
        "aspect": "9:16",
        "width": 0,
        "height": 0,
        "placement": "bottom",
        "fill": "white",
        "seam": 12,
    }
    assert RunSpec.from_dict(recipe) == spec
    assert "outpaint" not in RunSpec(task=Task.inpaint, params=PARAMS, inpaint=KEEP).to_dict()  # older recipes as were


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"outpaint": {"placement": "middle"}}, "'middle' is not a valid Placement"),
        ({"outpaint": {"fill": "black"}}, "'black' is not a valid Fill"),
        ({"outpaint": {"seam": "8"}}, "seam should be a whole number"),
        ({"outpaint": "16:9"}, "outpaint should be a table"),
    ],
)
def test_a_bad_recipe_outpaint_table_is_refused_by_name(change, message):
    recipe = RunSpec(task=Task.inpaint, params=PARAMS, inpaint=KEEP, outpaint=OutpaintParams()).to_dict() | change
    with pytest.raises(PipelineInputError, match=message):
        RunSpec.from_dict(recipe)


@pytest.mark.parametrize(
    ("task", "inpaint", "message"),
    [
        (Task.img2img, None, "is an inpainting run"),
        (Task.inpaint, InpaintParams(mask_blur=4), "takes no mask blur"),
        (Task.inpaint, InpaintParams(mask_blur=0, soft=True), "takes no mask blur, soft mask"),
        (Task.inpaint, InpaintParams(mask_blur=0, only_masked=True), "only-masked crop"),
    ],
)
def test_outpainting_is_an_inpaint_run_without_the_mask_reshaping_options(task, inpaint, message):
    with pytest.raises(PipelineInputError, match=message):
        RunSpec(task=task, params=PARAMS, inpaint=inpaint, outpaint=OutpaintParams()).check()


# Runs on the tiny model: the new area painted, the source kept byte for byte


@pytest.mark.parametrize("placement", list(Placement))
def test_keep_unmasked_keeps_the_source_byte_for_byte_and_paints_the_new_area(preview, placement):
    source = gradient(96, 64)
    expand = OutpaintParams(aspect="1:1", placement=placement, seam=6)
    request = outpaint_request(source, expand, PARAMS, KEEP, max_side=128)
    result = np.asarray(run_inpaint(preview, request).image)

    plan = plan_outpaint(96, 64, expand)
    assert result.shape == (96, 96, 3)  # the canvas: the source's width, square
    left, top, right, bottom = plan.box
    kept_left, kept_top, kept_right, kept_bottom = plan.kept_box
    on_canvas = result[top:bottom, left:right]
    kept = (slice(kept_top - top, kept_bottom - top), slice(kept_left - left, kept_right - left))
    assert on_canvas[kept].tobytes() == np.asarray(source)[kept].tobytes()
    # The seam band and the new area are the model's.
    filled = np.asarray(outpaint_canvas(source, plan, expand.fill))
    new_area = np.asarray(outpaint_mask(plan)) == 255
    assert not np.array_equal(result[new_area], filled[new_area])
    assert not np.array_equal(on_canvas, np.asarray(source))


def test_without_keep_unmasked_the_source_goes_through_the_model(preview):
    source = gradient(96, 64)
    expand = OutpaintParams(aspect="16:9", placement=Placement.left)
    request = outpaint_request(source, expand, PARAMS, InpaintParams(mask_blur=0, keep_unmasked=False), max_side=128)
    result = run_inpaint(preview, request).image
    plan = plan_outpaint(96, 64, expand)
    assert result.size == plan.canvas == (114, 64)
    kept_left, kept_top, kept_right, kept_bottom = plan.kept_box
    assert not np.array_equal(
        np.asarray(result)[kept_top:kept_bottom, kept_left:kept_right], np.asarray(source)[:, :kept_right]
    )


def test_the_same_request_gives_the_same_pixels(preview):
    source = gradient(64, 96)
    expand = preset_params("web-banner", placement=Placement.right)
    first = run_inpaint(preview, outpaint_request(source, expand, PARAMS, KEEP, max_side=128)).image
    again = run_inpaint(preview, outpaint_request(source, expand, PARAMS, KEEP, max_side=128)).image
    assert first.size == (171, 96) and first.tobytes() == again.tobytes()


def test_a_marketplace_canvas_starts_white():
    plan = plan_outpaint(80, 64, preset_params("marketplace", placement=Placement.top))
    canvas = outpaint_canvas(Image.new("RGB", (80, 64), (10, 20, 30)), plan, Fill.white)
    assert canvas.size == (80, 80) and canvas.getpixel((0, 79)) == WHITE and canvas.getpixel((0, 0)) == (10, 20, 30)
