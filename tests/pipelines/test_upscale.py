"""2× and 4× upscaling on the tiny offline upscalers: sizes, determinism, progress, cancel and input checks."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from pipelines.cache import clear_cache, pick_device, pick_dtype
from pipelines.errors import PipelineInputError, RunCancelled
from pipelines.params import MAX_UPSCALED_SIDE, Img2ImgParams
from pipelines.registry import ModelRef, ensure_preview_model, resolve_model
from pipelines.upscale import UpscaleRequest, run_upscale

MODELS = {2: "preview-upscaler-x2", 4: "preview-upscaler-x4"}
# Non-square sources of valid sizes: 2× takes multiples of 32 px (at least 64), 4× multiples of 8.
SOURCES = {2: (96, 64), 4: (64, 48)}
STEPS = 2


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("upscalers")
    for name in MODELS.values():
        ensure_preview_model(folder, name)
    yield folder
    clear_cache()


def ref(models_dir: Path, factor: int) -> ModelRef:
    return resolve_model(MODELS[factor], models_dir=models_dir)


def photo(width: int, height: int) -> Image.Image:
    """Gradients, so the upscaler has structure to work on."""
    gradient = Image.linear_gradient("L")
    flat = Image.new("L", gradient.size, 128)
    return Image.merge("RGB", (gradient, gradient.rotate(90), flat)).resize((width, height))


def request(factor: int, size: tuple[int, int] | None = None, **params) -> UpscaleRequest:
    params = {"prompt": "", "steps": STEPS, "seed": 1} | params
    return UpscaleRequest(photo(*(size or SOURCES[factor])), Img2ImgParams(**params), factor)


@pytest.mark.parametrize("factor", [2, 4])
def test_output_is_exactly_factor_times_the_source(models_dir: Path, factor: int) -> None:
    width, height = SOURCES[factor]
    result = run_upscale(ref(models_dir, factor), request(factor))
    assert result.image.size == (result.width, result.height) == (width * factor, height * factor)
    assert result.image.mode == "RGB"
    assert result.denoising_steps == STEPS
    assert result.scheduler == {2: "EulerDiscreteScheduler", 4: "DDIMScheduler"}[factor]
    device = pick_device()
    assert (result.device, result.dtype, result.guide) == (device, str(pick_dtype(device)).removeprefix("torch."), None)


@pytest.mark.parametrize(("factor", "source", "rounded"), [(2, (100, 70), (96, 64)), (4, (70, 53), (64, 48))])
def test_source_sides_are_rounded_down_to_what_the_upscaler_takes(
    models_dir: Path, factor: int, source: tuple[int, int], rounded: tuple[int, int]
) -> None:
    result = run_upscale(ref(models_dir, factor), request(factor, source, steps=1))
    assert result.image.size == (rounded[0] * factor, rounded[1] * factor)


@pytest.mark.parametrize("factor", [2, 4])
def test_same_seed_same_pixels_other_seed_other_pixels(models_dir: Path, factor: int) -> None:
    model = ref(models_dir, factor)
    first = run_upscale(model, request(factor, seed=7)).image
    assert run_upscale(model, request(factor, seed=7)).image.tobytes() == first.tobytes()
    assert run_upscale(model, request(factor, seed=8)).image.tobytes() != first.tobytes()


def test_noise_level_reaches_the_4x_upscaler(models_dir: Path) -> None:
    model = ref(models_dir, 4)
    low = run_upscale(model, request(4)).image
    high = run_upscale(model, replace(request(4), noise_level=300)).image
    assert low.tobytes() != high.tobytes()


@pytest.mark.parametrize("factor", [2, 4])
def test_progress_reports_every_step(models_dir: Path, factor: int) -> None:
    steps: list[tuple[int, int]] = []
    run_upscale(ref(models_dir, factor), request(factor, steps=3), on_step=lambda i, total: steps.append((i, total)))
    assert steps == [(1, 3), (2, 3), (3, 3)]


@pytest.mark.parametrize("factor", [2, 4])
def test_should_stop_cancels_between_steps(models_dir: Path, factor: int) -> None:
    steps: list[int] = []
    with pytest.raises(RunCancelled, match="after step 1 of 3"):
        run_upscale(
            ref(models_dir, factor),
            request(factor, steps=3),
            on_step=lambda i, total: steps.append(i),
            should_stop=lambda: bool(steps),
        )
    assert steps == [1]
    with pytest.raises(RunCancelled, match="before step 1"):
        run_upscale(ref(models_dir, factor), request(factor), should_stop=lambda: True)


@pytest.mark.parametrize(
    ("factor", "size", "limit"),
    [(2, (MAX_UPSCALED_SIDE // 2 + 16, 64), "2048 px"), (4, (64, MAX_UPSCALED_SIDE // 4 + 8), "1024 px")],
)
def test_too_large_source_is_refused_with_the_limit(
    models_dir: Path, factor: int, size: tuple[int, int], limit: str
) -> None:
    with pytest.raises(PipelineInputError, match=limit):
        run_upscale(ref(models_dir, factor), request(factor, size))


def test_too_small_source_for_2x_is_refused(models_dir: Path) -> None:
    with pytest.raises(PipelineInputError, match="at least 64 px"):
        run_upscale(ref(models_dir, 2), request(2, (128, 48)))


@pytest.mark.parametrize("factor", [3, 1, 8])
def test_only_2x_and_4x(models_dir: Path, factor: int) -> None:
    with pytest.raises(PipelineInputError, match="2× or 4×"):
        run_upscale(ref(models_dir, 2), UpscaleRequest(photo(64, 64), Img2ImgParams(prompt=""), factor))


@pytest.mark.parametrize("noise_level", [-1, 351])
def test_noise_level_is_checked(models_dir: Path, noise_level: int) -> None:
    with pytest.raises(PipelineInputError, match="Noise level"):
        run_upscale(ref(models_dir, 4), UpscaleRequest(photo(64, 64), Img2ImgParams(prompt=""), 4, noise_level))


def test_params_are_checked_without_needing_a_prompt_or_strength(models_dir: Path) -> None:
    with pytest.raises(PipelineInputError, match="Steps"):
        run_upscale(ref(models_dir, 4), request(4, steps=0))
    # strength 0 would run no img2img step; upscalers ignore it.
    assert run_upscale(ref(models_dir, 4), request(4, steps=1, strength=0.0)).denoising_steps == 1


@pytest.mark.parametrize("factor", [2, 4])
def test_tiny_upscalers_are_small(models_dir: Path, factor: int) -> None:
    folder = Path(ref(models_dir, factor).location)
    assert (folder / "model_index.json").is_file()
    assert sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) < 15_000_000
