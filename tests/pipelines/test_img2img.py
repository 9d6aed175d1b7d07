"""The model layer on the tiny offline preview pipeline: 256 px images, a few steps."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import diffusers
import numpy as np
import pytest
import torch
from PIL import Image

from pipelines import cache, img2img, tiny
from pipelines.errors import ModelUnavailableError, PipelineInputError, RunCancelled
from pipelines.families import get_family
from pipelines.img2img import Img2ImgRequest, library_versions, run_img2img
from pipelines.params import Img2ImgParams, output_size
from pipelines.registry import PREVIEW_MODEL, ModelRef, ensure_preview_model, resolve_model
from studio.config import PROJECT_ROOT
from tests.support import gradient

REPO_ROOT = PROJECT_ROOT
PARAMS = Img2ImgParams(prompt="a red sneaker, watercolor", strength=0.5, steps=4, guidance=7.5, seed=1)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    models = tmp_path_factory.mktemp("models")
    ensure_preview_model(models)
    return models


def run(ref: ModelRef, params: Img2ImgParams = PARAMS, image: Image.Image | None = None, **kwargs):
    return run_img2img(ref, Img2ImgRequest(image=image or gradient(256, 256), params=params), **kwargs)


# --- import cost ---------------------------------------------------------------------------------


def test_light_modules_do_not_import_torch() -> None:
    code = (
        "import sys, pipelines, pipelines.errors, pipelines.params, pipelines.registry\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert 'diffusers' not in sys.modules, 'diffusers was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True, timeout=60)


# --- preview model -------------------------------------------------------------------------------


def test_preview_model_is_built_once(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = models_dir / PREVIEW_MODEL
    assert (folder / "model_index.json").is_file()

    def no_rebuild(*_args: object, **_kwargs: object) -> Path:
        raise AssertionError("the preview model was rebuilt")

    monkeypatch.setattr(tiny, "save_tiny_sd_pipeline", no_rebuild)
    assert ensure_preview_model(models_dir) == folder
    assert not [p for p in models_dir.iterdir() if p.name.startswith(".")], "a staging folder was left behind"


def test_preview_race_keeps_first_complete_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A build that loses the race to another process drops its own copy and uses the winner's."""
    real_save = tiny.save_tiny_sd_pipeline
    winner = tmp_path / PREVIEW_MODEL

    def save_while_another_process_wins(folder: Path, seed: int = 0) -> Path:
        real_save(winner)  # the other process renames its complete folder into place first
        return real_save(folder, seed)

    monkeypatch.setattr(tiny, "save_tiny_sd_pipeline", save_while_another_process_wins)
    assert ensure_preview_model(tmp_path) == winner
    assert sorted(p.name for p in tmp_path.iterdir()) == [PREVIEW_MODEL]


def test_tiny_build_is_deterministic() -> None:
    first, second = tiny.build_tiny_sd_pipeline(seed=0), tiny.build_tiny_sd_pipeline(seed=0)
    for component in ("unet", "vae", "text_encoder"):
        a, b = getattr(first, component).state_dict(), getattr(second, component).state_dict()
        assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a), component


# --- resolve_model -------------------------------------------------------------------------------


def test_resolve_preview(tmp_path: Path) -> None:
    ref = resolve_model("preview", models_dir=tmp_path)
    assert ref == ModelRef("preview", str(tmp_path / "preview"), is_preview=True, is_local=True)


def test_resolve_existing_folder(tmp_path: Path) -> None:
    ref = resolve_model(str(tmp_path), models_dir=tmp_path / "models")
    assert ref.is_local and not ref.is_preview
    assert ref.location == str(tmp_path.resolve())


def test_resolve_hub_id(tmp_path: Path) -> None:
    ref = resolve_model("stable-diffusion-v1-5/stable-diffusion-v1-5", models_dir=tmp_path)
    assert ref.location == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert not ref.is_local and not ref.is_preview


@pytest.mark.parametrize("name", ["", "   ", "a b c", "just-a-name", "owner/", "bad id/with space"])
def test_resolve_rejects_junk(name: str, tmp_path: Path) -> None:
    with pytest.raises(PipelineInputError, match=r"STUDIO_MODEL|hub id"):
        resolve_model(name, models_dir=tmp_path)


def test_resolve_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailableError, match=r"Model folder './no/such/folder' does not exist"):
        resolve_model("./no/such/folder", models_dir=tmp_path)


# --- cache ---------------------------------------------------------------------------------------


def test_base_pipeline_is_loaded_once(preview: ModelRef, monkeypatch: pytest.MonkeyPatch) -> None:
    real_load = diffusers.StableDiffusionImg2ImgPipeline.from_pretrained
    loads: list[str] = []

    def counting_load(*args: object, **kwargs: object):
        loads.append(str(args[0]))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(diffusers.StableDiffusionImg2ImgPipeline, "from_pretrained", counting_load)
    cache.clear_cache()
    # Two threads asking at once, then a third call: one load.
    results: list[object] = []
    threads = [threading.Thread(target=lambda: results.append(cache.get_base_pipeline(preview))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results[0] is results[1] is cache.get_base_pipeline(preview)
    assert loads == [preview.location]
    assert cache.loaded_models() == [f"{preview.location} (cpu, float32)"]


def test_request_pipeline_shares_models_not_scheduler_or_dtype() -> None:
    """A half-precision base (as on CUDA) stays half precision after requests derive from it."""
    base = tiny.build_tiny_sd_pipeline().to(dtype=torch.float16)
    pipe = cache.request_pipeline(base, get_family("sd15"))
    assert pipe.unet is base.unet and pipe.vae is base.vae and pipe.text_encoder is base.text_encoder
    assert pipe.scheduler is not base.scheduler
    assert pipe.scheduler.config == base.scheduler.config
    assert base.unet.dtype == base.vae.dtype == base.text_encoder.dtype == torch.float16


def test_unavailable_hub_id_fails_fast_with_help(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ref = resolve_model("nobody/definitely-not-a-model", models_dir=tmp_path)
    with pytest.raises(ModelUnavailableError) as info:
        cache.get_base_pipeline(ref)
    message = str(info.value)
    assert "'nobody/definitely-not-a-model' is not available on this machine" in message
    assert "hf download nobody/definitely-not-a-model" in message
    assert "STUDIO_MODEL" in message
    assert isinstance(info.value.__cause__, OSError)


def test_incomplete_local_folder_is_unavailable(tmp_path: Path) -> None:
    ref = resolve_model(str(tmp_path), models_dir=tmp_path)
    with pytest.raises(ModelUnavailableError, match="not a complete diffusers pipeline folder"):
        cache.get_base_pipeline(ref)


# --- output size ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "max_side", "expected"),
    [
        ((256, 384), 1024, (256, 384)),
        ((300, 260), 1024, (296, 256)),
        ((2000, 1000), 1024, (1024, 512)),
        ((1000, 2000), 1024, (512, 1024)),
        ((3000, 1001), 1024, (1024, 336)),  # 1001 × 1024 / 3000 = 341.6 → 341 → 336
        ((100, 100), 1024, (96, 96)),  # never scaled up
        ((4000, 10), 1024, (1024, 8)),  # at least one latent
    ],
)
def test_output_size(size: tuple[int, int], max_side: int, expected: tuple[int, int]) -> None:
    assert output_size(*size, max_side) == expected


def test_output_size_rejects_empty() -> None:
    with pytest.raises(PipelineInputError, match="empty"):
        output_size(0, 10, 1024)


@pytest.mark.parametrize(("size", "expected"), [((256, 384), (256, 384)), ((300, 260), (296, 256))])
def test_result_size(preview: ModelRef, size: tuple[int, int], expected: tuple[int, int]) -> None:
    result = run(preview, replace(PARAMS, steps=2), image=gradient(*size))
    assert (result.width, result.height) == result.image.size == expected
    assert result.image.mode == "RGB"


def test_result_scaled_to_max_side(preview: ModelRef) -> None:
    request = Img2ImgRequest(image=gradient(512, 256), params=replace(PARAMS, steps=2), max_side=256)
    assert run_img2img(preview, request).image.size == (256, 128)


# --- the run -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("steps", "strength", "expected"), [(4, 0.5, 2), (4, 1.0, 4), (3, 0.7, 2)])
def test_unet_calls_match_denoising_steps(
    preview: ModelRef, unet_calls: list[int], steps: int, strength: float, expected: int
) -> None:
    result = run(preview, replace(PARAMS, steps=steps, strength=strength))
    # Guidance 7.5 batches the conditional and unconditional passes: one UNet call per step.
    assert len(unet_calls) == result.denoising_steps == expected


def test_result_describes_the_run(preview: ModelRef) -> None:
    result = run(preview)
    assert result.scheduler == "DDIMScheduler"
    assert (result.device, result.dtype) == ("cpu", "float32")
    assert result.seconds > 0
    assert set(library_versions()) == {"torch", "diffusers", "transformers"}


def test_progress_reports_every_step(preview: ModelRef) -> None:
    progress: list[tuple[int, int]] = []
    run(
        preview,
        replace(PARAMS, steps=4, strength=0.75),
        on_step=lambda step, total: progress.append((step, total)),
    )
    assert progress == [(1, 3), (2, 3), (3, 3)]


def test_should_stop_cancels_after_current_step(preview: ModelRef, unet_calls: list[int]) -> None:
    progress: list[int] = []
    with pytest.raises(RunCancelled, match="after step 1 of 4"):
        run(
            preview,
            replace(PARAMS, steps=4, strength=1.0),
            on_step=lambda step, _total: progress.append(step),
            should_stop=lambda: bool(progress),
        )
    assert len(unet_calls) == 1
    assert not cache.RUN_LOCK.locked()


def test_same_seed_same_pixels_other_seed_other_pixels(preview: ModelRef) -> None:
    first = np.asarray(run(preview).image)
    again = np.asarray(run(preview).image)
    other = np.asarray(run(preview, replace(PARAMS, seed=2)).image)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_requests_in_parallel_threads_match_serial_runs(preview: ModelRef) -> None:
    """Each request has its own scheduler, so concurrent requests do not disturb each other."""
    seeds = [3, 4, 3]
    expected = {seed: np.asarray(run(preview, replace(PARAMS, seed=seed)).image) for seed in set(seeds)}
    results: dict[int, np.ndarray] = {}

    def worker(index: int) -> None:
        results[index] = np.asarray(run(preview, replace(PARAMS, seed=seeds[index])).image)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(seeds))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(np.array_equal(results[i], expected[seed]) for i, seed in enumerate(seeds))


# --- input checks --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"strength": -0.1}, "Strength must be between 0 and 1, got -0.1"),
        ({"strength": 1.5}, "Strength must be between 0 and 1, got 1.5"),
        ({"steps": 0}, "Steps must be between 1 and 150, got 0"),
        ({"steps": 20, "strength": 0.02}, "Strength 0.02 with 20 steps runs no denoising step"),
        ({"guidance": -1.0}, "Guidance must be between 0 and 30, got -1.0"),
        ({"seed": -1}, "Seed must be between 0 and 4294967295, got -1"),
        ({"prompt": "  "}, "Write a prompt"),
    ],
)
def test_bad_params_are_refused_before_loading(
    changes: dict[str, object], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(img2img, "get_base_pipeline", lambda _ref: pytest.fail("loaded a model for a bad request"))
    unused = ModelRef("nobody/model", "nobody/model", is_preview=False, is_local=False)
    with pytest.raises(PipelineInputError, match=re.escape(message)):
        run(unused, replace(PARAMS, **changes))


@pytest.mark.parametrize("size", [(0, 0), (4, 256)])
def test_empty_or_tiny_image_is_refused(preview: ModelRef, size: tuple[int, int]) -> None:
    with pytest.raises(PipelineInputError, match="needs at least 8 px per side"):
        run(preview, image=Image.new("RGB", size))


def test_a_worker_device_the_machine_does_not_have_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines import cache

    monkeypatch.setattr(cache.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(cache.torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"has 1 CUDA device\(s\) \(cuda:0 … cuda:0\)"):
        cache.set_device("cuda:7")
    monkeypatch.setattr(cache.torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        cache.set_device("cuda:0")
    assert cache._device_override is None  # a refusal sets nothing
