"""ControlNet guides (pipelines.guides) and ControlNet img2img on the tiny offline models."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pipelines import cache, img2img, inpaint
from pipelines.errors import PipelineInputError
from pipelines.guides import make_guide
from pipelines.img2img import Img2ImgRequest, Img2ImgResult, run_img2img
from pipelines.inpaint import InpaintRequest, run_inpaint
from pipelines.params import ControlParams, Guide, Img2ImgParams
from pipelines.registry import ModelRef
from studio.config import PROJECT_ROOT
from tests.support import gradient

REPO_ROOT = PROJECT_ROOT
PARAMS = Img2ImgParams(prompt="a red sneaker, watercolor", strength=0.75, steps=4, guidance=7.5, seed=1)
CONTROL = ControlParams("preview-controlnet")
SOURCE_SIZE = (100, 76)  # img2img output: (96, 72)


@pytest.fixture
def denoise_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What run_img2img / run_inpaint hand the pipeline, delegating to the real denoise."""
    calls: list[dict[str, Any]] = []
    real_denoise = img2img.denoise

    def recording(pipe, params, call, **kwargs):
        image, seconds = real_denoise(pipe, params, call, **kwargs)
        calls.append({**call, "pipe": pipe, "rendered": image.size})
        return image, seconds

    monkeypatch.setattr(img2img, "denoise", recording)
    monkeypatch.setattr(inpaint, "denoise", recording)
    return calls


def steps_image(width: int = 96, height: int = 72) -> Image.Image:
    """Black | dark grey (a weak edge at x = 32) | white (a strong edge at x = 64)."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, 32:] = 40
    pixels[:, 64:] = 255
    return Image.fromarray(pixels, "RGB")


def scene(width: int, height: int) -> Image.Image:
    """The gradient with two hard-edged shapes, so every detector finds something."""
    image = gradient(width, height)
    image.paste((0, 0, 0), (width // 5, height // 5, width // 2, height // 2))
    image.paste((255, 255, 255), (width // 2, height // 2, width - width // 6, height - height // 6))
    return image


def run(
    ref: ModelRef,
    control: ControlParams | None = CONTROL,
    params: Img2ImgParams = PARAMS,
    image: Image.Image | None = None,
    **kwargs: Any,
) -> Img2ImgResult:
    request = Img2ImgRequest(image=image or gradient(*SOURCE_SIZE), params=params, max_side=128, control=control)
    return run_img2img(ref, request, **kwargs)


def pixels(result: Img2ImgResult) -> np.ndarray:
    return np.asarray(result.image)


# --- guides --------------------------------------------------------------------------------------


@pytest.mark.parametrize("guide", list(Guide))
@pytest.mark.parametrize("size", [(96, 72), (72, 100), (130, 40)])
def test_guide_is_rgb_at_exactly_the_image_size(guide: Guide, size: tuple[int, int]) -> None:
    result = make_guide(scene(*size).convert("RGBA"), ControlParams("x", guide=guide), seed=3)
    assert result.mode == "RGB"
    assert result.size == size
    assert np.asarray(result).std() > 0  # not a blank image


def test_canny_thresholds_decide_which_edges_show() -> None:
    low = np.asarray(make_guide(steps_image(), ControlParams("x", low_threshold=5, high_threshold=20)))
    high = np.asarray(make_guide(steps_image(), ControlParams("x", low_threshold=200, high_threshold=250)))
    edge_columns = {
        name: set(np.nonzero(image.max(axis=(0, 2)) > 127)[0]) for name, image in (("low", low), ("high", high))
    }
    # Both find the black/white edge; only low thresholds find the faint black/grey one.
    assert edge_columns["high"] and all(60 <= x <= 67 for x in edge_columns["high"])
    assert any(28 <= x <= 35 for x in edge_columns["low"])
    assert not any(x < 50 for x in edge_columns["high"])
    assert (low > 127).sum() > (high > 127).sum()


def test_canny_low_threshold_extends_edges_and_high_threshold_seeds_them() -> None:
    """Hysteresis: an edge whose contrast fades from 60 (top) to 3 (bottom) is traced from where it is
    stronger than the high threshold down to where it drops below the low one."""
    fading = np.zeros((72, 96, 3), dtype=np.uint8)
    fading[:, 48:] = np.linspace(60, 3, 72).astype(np.uint8)[:, None, None]
    image = Image.fromarray(fading, "RGB")

    def edge_rows(low: int, high: int) -> int:
        guide = np.asarray(make_guide(image, ControlParams("x", low_threshold=low, high_threshold=high)))
        return int((guide[:, :, 0].max(axis=1) > 127).sum())

    assert edge_rows(10, 200) == 72  # traced all the way down
    assert 10 < edge_rows(150, 200) < 60  # a higher low threshold stops it early
    assert edge_rows(10, 250) == 0  # nowhere strong enough to start an edge


def test_lineart_marks_the_edges_of_a_drawing() -> None:
    drawing = Image.new("RGB", (96, 72), "white")
    drawing.paste((0, 0, 0), (20, 0, 23, 72))  # a dark vertical line at x = 20…22
    guide = np.asarray(make_guide(drawing, ControlParams("x", guide=Guide.lineart)))
    # The detector scales line intensity so a typical line is about 127.
    assert guide[:, 18:25, 0].max(axis=1).min() > 100  # the line is bright in the guide, on every row
    assert guide[:, 50:].max() == 0  # blank paper stays black


def test_shuffle_is_seeded_and_leaves_numpy_global_random_state_alone() -> None:
    source = gradient(96, 72)
    control = ControlParams("x", guide=Guide.shuffle)
    np.random.seed(1234)
    first = np.asarray(make_guide(source, control, seed=7))
    after_guide = np.random.random(4)
    np.random.seed(1234)
    assert np.array_equal(after_guide, np.random.random(4)), "make_guide moved numpy's global random state"
    again = np.asarray(make_guide(source, control, seed=7))
    other = np.asarray(make_guide(source, control, seed=8))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert not np.array_equal(first, np.asarray(source))


def test_guides_do_not_run_controlnet_aux_init_or_import_torchvision() -> None:
    code = (
        "import sys\n"
        "from PIL import Image\n"
        "from pipelines.guides import make_guide\n"
        "from pipelines.params import ControlParams, Guide\n"
        "for guide in Guide:\n"
        "    make_guide(Image.new('RGB', (96, 72), (10, 200, 30)), ControlParams('x', guide=guide))\n"
        "package = sys.modules['controlnet_aux']\n"
        "assert 'controlnet_aux.canny' in sys.modules and 'controlnet_aux.shuffle' in sys.modules\n"
        "print(getattr(package, '__file__', None), hasattr(package, 'HEDdetector'), hasattr(package, '__version__'))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torchvision', 'timm')\n"
        "             or m in ('controlnet_aux.hed', 'controlnet_aux.leres', 'controlnet_aux.midas')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    # The real __init__ would set __file__ and __version__ and import every detector (HEDdetector, …).
    assert done.stdout.split("\n")[:2] == ["None False False", "[]"]


# --- ControlNet img2img --------------------------------------------------------------------------


def test_controlnet_img2img_size_guide_and_call(
    preview: ModelRef, preview_controlnet: ModelRef, denoise_calls: list[dict[str, Any]]
) -> None:
    control = ControlParams("preview-controlnet", guide=Guide.shuffle, conditioning_scale=0.7)
    result = run(preview, control, control_ref=preview_controlnet)
    (call,) = denoise_calls
    assert type(call["pipe"]).__name__ == "StableDiffusionControlNetImg2ImgPipeline"
    assert result.image.size == (result.width, result.height) == call["rendered"] == (96, 72)
    assert (call["width"], call["height"]) == (96, 72)
    # The guide returned is the one the pipeline followed, made from the resized source with the run's seed.
    assert call["control_image"] is result.guide
    assert call["controlnet_conditioning_scale"] == 0.7
    resized = gradient(*SOURCE_SIZE).resize((96, 72), Image.Resampling.LANCZOS)
    expected = make_guide(resized, control, seed=PARAMS.seed)
    assert np.array_equal(np.asarray(result.guide), np.asarray(expected))


def test_plain_img2img_returns_no_guide(preview: ModelRef) -> None:
    assert run(preview, control=None).guide is None


def test_controlnet_img2img_is_deterministic(preview: ModelRef, preview_controlnet: ModelRef) -> None:
    first = pixels(run(preview, control_ref=preview_controlnet))
    again = pixels(run(preview, control_ref=preview_controlnet))
    other = pixels(run(preview, params=replace(PARAMS, seed=2), control_ref=preview_controlnet))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_conditioning_scale_steers_the_result(preview: ModelRef, preview_controlnet: ModelRef) -> None:
    plain = pixels(run(preview, control=None))
    by_scale = {
        scale: pixels(run(preview, replace(CONTROL, conditioning_scale=scale), control_ref=preview_controlnet))
        for scale in (0.0, 1.0, 2.0)
    }
    assert not np.array_equal(by_scale[0.0], by_scale[1.0])
    assert not np.array_equal(by_scale[1.0], by_scale[2.0])
    # Scale 0 multiplies every residual by 0: byte-identical to plain img2img with the same seed.
    assert np.array_equal(by_scale[0.0], plain)


def test_the_guide_kind_changes_the_result(preview: ModelRef, preview_controlnet: ModelRef) -> None:
    results = [pixels(run(preview, replace(CONTROL, guide=guide), control_ref=preview_controlnet)) for guide in Guide]
    assert not np.array_equal(results[0], results[1])
    assert not np.array_equal(results[1], results[2])


# --- input checks --------------------------------------------------------------------------------


@pytest.fixture
def no_model_load(monkeypatch: pytest.MonkeyPatch) -> ModelRef:
    for module in (img2img, inpaint):
        monkeypatch.setattr(module, "get_base_pipeline", lambda _ref: pytest.fail("loaded a model for a bad request"))
        monkeypatch.setattr(module, "get_controlnet", lambda _ref: pytest.fail("loaded a ControlNet for a bad request"))
    return ModelRef("nobody/model", "nobody/model", is_preview=False, is_local=False)


def run_either(task: str, ref: ModelRef, control: ControlParams | None, control_ref: ModelRef | None) -> None:
    if task == "img2img":
        run(ref, control, control_ref=control_ref)
    else:
        mask = Image.new("L", SOURCE_SIZE, 0)
        mask.paste(255, (10, 10, 40, 40))
        request = InpaintRequest(image=gradient(*SOURCE_SIZE), mask=mask, params=PARAMS, control=control)
        run_inpaint(ref, request, control_ref=control_ref)


CONTROLNET_REF = ModelRef("some/controlnet", "some/controlnet", is_preview=False, is_local=False)


@pytest.mark.parametrize("task", ["img2img", "inpaint"])
@pytest.mark.parametrize(
    ("control", "control_ref"), [(CONTROL, None), (None, CONTROLNET_REF)], ids=["no-ref", "no-control"]
)
def test_control_and_controlnet_model_go_together(
    no_model_load: ModelRef, task: str, control: ControlParams | None, control_ref: ModelRef | None
) -> None:
    with pytest.raises(PipelineInputError, match="ControlNet settings and a ControlNet model go together"):
        run_either(task, no_model_load, control, control_ref)


@pytest.mark.parametrize("task", ["img2img", "inpaint"])
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"conditioning_scale": -0.1}, "ControlNet strength must be between 0 and 2, got -0.1"),
        ({"conditioning_scale": 2.5}, "ControlNet strength must be between 0 and 2, got 2.5"),
        ({"low_threshold": 200, "high_threshold": 100}, "got low 200 and high 100"),
        ({"low_threshold": 100, "high_threshold": 100}, "got low 100 and high 100"),
        ({"low_threshold": -1}, "got low -1 and high 200"),
        ({"high_threshold": 256}, "got low 100 and high 256"),
    ],
)
def test_bad_control_params_are_refused_before_loading(
    no_model_load: ModelRef, task: str, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(PipelineInputError, match=re.escape(message)):
        run_either(task, no_model_load, replace(CONTROL, **changes), CONTROLNET_REF)


# --- shared weights ------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["img2img", "inpaint"])
def test_controlnet_pipeline_shares_the_cached_weights(
    preview: ModelRef, preview_controlnet: ModelRef, denoise_calls: list[dict[str, Any]], task: str
) -> None:
    run_either(task, preview, CONTROL, preview_controlnet)
    run_either(task, preview, CONTROL, preview_controlnet)
    first, second = (call["pipe"] for call in denoise_calls)
    base = cache.get_base_pipeline(preview)
    for pipe in (first, second):
        assert pipe.unet is base.unet and pipe.vae is base.vae and pipe.text_encoder is base.text_encoder
        assert pipe.tokenizer is base.tokenizer
        assert pipe.controlnet is cache.get_controlnet(preview_controlnet)  # loaded once, shared too
        assert pipe.scheduler is not base.scheduler
        assert pipe.scheduler.config == base.scheduler.config
    assert first.scheduler is not second.scheduler  # each request has its own
