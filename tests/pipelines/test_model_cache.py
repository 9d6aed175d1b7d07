"""The model cache's memory budget, with tiny models and a tiny budget: sizes, LRU eviction, pins, offload."""

from __future__ import annotations

import itertools
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from pipelines import cache
from pipelines.errors import ModelUnavailableError
from pipelines.img2img import Img2ImgRequest, run_img2img
from pipelines.params import Img2ImgParams, MemoryBudget
from pipelines.registry import ModelRef, ensure_preview_model, resolve_model
from tests.support import gradient

NAMES = ("preview", "preview-sd21", "preview-sdxl")


@pytest.fixture
def fresh_cache() -> Iterator[None]:
    """An empty cache for the test, and the default budget back afterwards."""
    cache.clear_cache()
    yield
    cache.clear_cache()
    cache.set_memory_budget(None)


@pytest.fixture(scope="module")
def refs(shared_models_dir: Path) -> dict[str, ModelRef]:
    for name in NAMES:
        ensure_preview_model(shared_models_dir, name)
    return {name: resolve_model(name, models_dir=shared_models_dir) for name in NAMES}


@pytest.fixture(scope="module")
def sizes(refs: dict[str, ModelRef]) -> dict[str, int]:
    """Each model's parameter and buffer bytes, loaded alone under the default budget."""
    measured = {}
    for name, ref in refs.items():
        cache.clear_cache()
        cache.get_base_pipeline(ref)
        (model,) = cache.memory_report().models
        measured[name] = model.device_bytes
    cache.clear_cache()
    return measured


def loaded() -> list[str]:
    """The loaded models' names, least recently used first."""
    return [model.name for model in cache.memory_report().models]


def test_a_loaded_model_is_tracked_by_its_parameter_bytes(fresh_cache: None, refs: dict[str, ModelRef]) -> None:
    pipe = cache.get_base_pipeline(refs["preview-sdxl"])
    modules = [part for part in pipe.components.values() if isinstance(part, torch.nn.Module)]
    expected = sum(t.numel() * t.element_size() for m in modules for t in itertools.chain(m.parameters(), m.buffers()))
    report = cache.memory_report()
    (model,) = report.models
    assert (model.name, model.family, model.kind) == ("preview-sdxl", "sdxl", "StableDiffusionXLImg2ImgPipeline")
    assert model.bytes == model.device_bytes == expected
    assert (model.device, model.dtype, model.offload, model.in_use) == ("cpu", "float32", "none", False)
    assert report.device == "cpu" and report.used_bytes == expected
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert report.budget_bytes == int(ram * 0.9)
    assert str(model) == f"preview-sdxl (StableDiffusionXLImg2ImgPipeline, {expected / 2**20:.1f} MiB, cpu, float32)"
    assert cache.loaded_models() == [f"{refs['preview-sdxl'].location} (cpu, float32)"]
    assert report.to_dict()["models"][0]["bytes"] == expected


def test_loading_past_the_budget_evicts_the_least_recently_used(
    fresh_cache: None, refs: dict[str, ModelRef], sizes: dict[str, int]
) -> None:
    sd15, sd21, sdxl = (refs[name] for name in NAMES)
    cache.set_memory_budget(MemoryBudget(limit=sum(sizes.values()) - 1))  # any two fit, not all three
    first = cache.get_base_pipeline(sd15)
    cache.get_base_pipeline(sd21)
    assert cache.get_base_pipeline(sd15) is first  # used again: sd21 is now the least recently used
    cache.get_base_pipeline(sdxl)
    assert loaded() == ["preview", "preview-sdxl"]
    # Loading sd21 again evicts the least recently used now, sd15.
    cache.get_base_pipeline(sd21)
    assert loaded() == ["preview-sdxl", "preview-sd21"]
    assert cache.memory_report().used_bytes == sizes["preview-sdxl"] + sizes["preview-sd21"]


def in_another_thread(*refs: ModelRef) -> None:
    """Load the models from a thread of their own, which pins nothing (in_use blocks are per thread)."""
    thread = threading.Thread(target=lambda: [cache.get_base_pipeline(ref) for ref in refs])
    thread.start()
    thread.join(timeout=120)


def test_a_model_in_use_is_never_evicted(fresh_cache: None, refs: dict[str, ModelRef], sizes: dict[str, int]) -> None:
    sd15, sd21, sdxl = (refs[name] for name in NAMES)
    cache.set_memory_budget(MemoryBudget(limit=sizes["preview"] + max(sizes["preview-sd21"], sizes["preview-sdxl"])))
    with cache.in_use():
        pinned = cache.get_base_pipeline(sd15)
        in_another_thread(sd21, sdxl)
        # sd15 is the least recently used, but pinned: sd21 went instead.
        assert loaded() == ["preview", "preview-sdxl"]
        assert [model.in_use for model in cache.memory_report().models] == [True, False]
    assert not any(model.in_use for model in cache.memory_report().models)
    assert cache.get_base_pipeline(sd15) is pinned


def test_a_load_that_only_pinned_models_stand_in_the_way_of_is_refused(
    fresh_cache: None, refs: dict[str, ModelRef], sizes: dict[str, int]
) -> None:
    sd15, sdxl = refs["preview"], refs["preview-sdxl"]
    cache.set_memory_budget(MemoryBudget(limit=sizes["preview"] + sizes["preview-sdxl"] - 1))
    with cache.in_use():
        cache.get_base_pipeline(sd15)
        message = re.escape(f"in use by runs now: 'preview' ({sizes['preview'] / 2**20:.1f} MiB)")
        with pytest.raises(ModelUnavailableError, match=r"Model 'preview-sdxl' needs .* MiB on cpu.*" + message):
            cache.get_base_pipeline(sdxl)
        assert loaded() == ["preview"]
    # Once the run is over, the same load evicts it.
    cache.get_base_pipeline(sdxl)
    assert loaded() == ["preview-sdxl"]


def test_a_model_bigger_than_the_budget_is_refused(fresh_cache: None, refs: dict[str, ModelRef]) -> None:
    cache.set_memory_budget("1MB")
    assert cache.memory_budget_bytes() == 10**6
    with pytest.raises(ModelUnavailableError, match=r"more than the model memory budget of 1\.0 MiB leaves\. Raise"):
        cache.get_base_pipeline(refs["preview-sdxl"])
    assert loaded() == []


def test_a_running_model_stays_while_another_thread_loads(
    fresh_cache: None, refs: dict[str, ModelRef], sizes: dict[str, int]
) -> None:
    """Pinned from the moment the run fetches it to its end: another thread's loads evict around it."""
    sd15, sd21, sdxl = (refs[name] for name in NAMES)
    cache.set_memory_budget(MemoryBudget(limit=sizes["preview"] + max(sizes["preview-sd21"], sizes["preview-sdxl"])))
    mid_run, resume = threading.Event(), threading.Event()
    results = []

    def pause(step: int, _total: int) -> None:
        if step == 1:
            mid_run.set()
            assert resume.wait(timeout=120)

    params = Img2ImgParams(prompt="a red shoe", strength=1.0, steps=2, seed=1)
    run = threading.Thread(
        target=lambda: results.append(run_img2img(sd15, Img2ImgRequest(gradient(64, 64), params), on_step=pause))
    )
    run.start()
    try:
        assert mid_run.wait(timeout=120)
        running = cache.get_base_pipeline(sd15)
        cache.get_base_pipeline(sd21)
        cache.get_base_pipeline(sdxl)  # evicts sd21, not the running sd15 (the least recently used)
        assert loaded() == ["preview", "preview-sdxl"]
        assert cache.memory_report().models[0].in_use
    finally:
        resume.set()
        run.join(timeout=120)
    assert results and results[0].image.size == (64, 64)
    assert cache.get_base_pipeline(sd15) is running
    assert not cache.memory_report().models[0].in_use


def test_cpu_offload_is_a_no_op_on_the_cpu(fresh_cache: None, shared_models_dir: Path) -> None:
    ref = resolve_model("preview", models_dir=shared_models_dir, offload="model")
    result = run_img2img(ref, Img2ImgRequest(gradient(64, 64), Img2ImgParams(prompt="a shoe", steps=2, seed=1)))
    assert result.device == "cpu"
    (model,) = cache.memory_report().models
    assert (model.offload, model.offload_requested) == ("none", "model")
    assert model.device_bytes == model.bytes


def test_offloaded_models_count_what_stays_on_the_device(preview: ModelRef) -> None:
    """What the budget counts with offload (applied on accelerators only): the largest component for model offload,
    the largest layer for sequential offload."""
    pipe = cache.get_base_pipeline(preview)
    total, on_device = cache._parameter_bytes(pipe, "none")
    assert total == on_device
    components = {
        name: sum(p.numel() * p.element_size() for p in itertools.chain(part.parameters(), part.buffers()))
        for name, part in pipe.components.items()
        if isinstance(part, torch.nn.Module)
    }
    assert cache._parameter_bytes(pipe, "model") == (total, max(components.values()))
    _, layer = cache._parameter_bytes(pipe, "sequential")
    assert 0 < layer < max(components.values())
