"""STUDIO_BATCH_MAX unset: a GPU batches as many jobs as its free memory holds at the model's measured footprint per
image (pipelines.footprint, pipelines.params.choose_batch_max); a CPU one at a time. GPU figures are faked here."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pipelines import footprint
from pipelines.params import MAX_BATCH_JOBS, choose_batch_max
from studio.jobs.batching import batch_limit

GIB = 2**30
SD_512 = ("preview", "sd15", "none", 20, (512, 512))  # a batch key (studio.jobs.batching.batch_key)


@pytest.mark.parametrize(
    ("free", "per_image", "expected"),
    [
        (40 * GIB, 3 * GIB, 10),  # 32 GiB usable (80 %) / 3 GiB
        (24 * GIB, 5 * GIB, 3),  # 19.2 / 5
        (4 * GIB, 5 * GIB, 1),  # not even one fits: still one (the run reports its own out-of-memory)
        (80 * GIB, GIB // 4, MAX_BATCH_JOBS),  # 320 would fit: capped
        (80 * GIB, None, 1),  # not measured yet: the first run measures
        (80 * GIB, 0, 1),
    ],
)
def test_the_batch_size_is_what_fits_the_free_memory(free, per_image, expected):
    assert choose_batch_max(free_bytes=free, per_image_bytes=per_image) == expected


@pytest.fixture
def measured():
    footprint.forget()
    yield
    footprint.forget()


def test_on_a_gpu_the_measured_footprint_scales_with_the_pixels(measured, monkeypatch):
    monkeypatch.setattr(footprint, "pick_device", lambda: "cuda:0")
    monkeypatch.setattr(footprint, "free_memory", lambda device: 20 * GIB)
    assert footprint.chosen_batch_max("preview", 512 * 512) == (
        1,
        "measuring: the first preview job at this size runs alone",
    )
    footprint.record("preview", 2 * GIB / (512 * 512))  # 2 GiB per 512² image
    footprint.record("preview", GIB / (512 * 512))  # a smaller figure (a batch sharing fixed costs) is not kept
    assert footprint.per_image_bytes("preview", 1024 * 1024) == 8 * GIB
    chosen, why = footprint.chosen_batch_max("preview", 512 * 512)
    assert chosen == 8 and why == "memory: 20.00 GiB free × 80% / 2.00 GiB per preview image"
    assert footprint.chosen_batch_max("preview", 1024 * 1024)[0] == 2  # 16 GiB / 8 GiB


def test_a_worker_uses_the_setting_when_set_and_the_device_when_unset(measured, monkeypatch, studio_settings):
    import studio.jobs.batching

    monkeypatch.setattr(studio.jobs.batching, "model_stack_ready", lambda: True)
    settings = replace(studio_settings, batch_max=None)
    assert batch_limit(replace(settings, batch_max=3), SD_512) == (3, "STUDIO_BATCH_MAX")
    assert batch_limit(settings, SD_512) == (1, "cpu: one at a time (batching saves nothing without a GPU)")
    monkeypatch.setattr(footprint, "pick_device", lambda: "cuda")
    monkeypatch.setattr(footprint, "free_memory", lambda device: 40 * GIB)
    footprint.record("preview", 3 * GIB / (512 * 512))
    assert batch_limit(settings, SD_512)[0] == 10


def test_on_a_cpu_a_run_measures_nothing(measured, preview):
    with footprint.measuring("preview", pixels=64 * 64, images=1):
        pass
    assert footprint.per_image_bytes("preview", 64 * 64) is None
