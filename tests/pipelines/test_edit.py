"""Instruction edits with FLUX.1 Kontext on the tiny offline model: sizes, steps, masks, determinism, refusals."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines import edit
from pipelines.edit import EditRequest, run_edit
from pipelines.errors import PipelineInputError
from pipelines.families import get_family
from pipelines.families.flux_kontext import PIXEL_BUDGET
from pipelines.masks import feathered
from pipelines.params import MAX_PROMPT_CHARS, Img2ImgParams, InpaintParams
from pipelines.registry import ModelRef
from tests.pipelines.conftest import box_mask, preview_ref
from tests.support import gradient

KONTEXT = get_family("flux-kontext")
SOURCE_SIZE = (400, 300)
INSTRUCTION = Img2ImgParams(prompt="put the sneaker on white marble, keep the logo", steps=3, guidance=2.5, seed=5)
MASK_BOX = (96, 64, 288, 224)


@pytest.fixture(scope="module")
def preview_kontext(shared_models_dir: Path) -> ModelRef:
    return preview_ref(shared_models_dir, "preview-flux-kontext")


@pytest.fixture(scope="module")
def preview_flux(shared_models_dir: Path) -> ModelRef:
    return preview_ref(shared_models_dir, "preview-flux")


def source() -> Image.Image:
    return gradient(*SOURCE_SIZE)


@pytest.mark.parametrize(
    ("size", "max_side"),
    [((400, 300), 1024), ((4000, 3000), 4096), ((4000, 3000), 1024), ((3000, 500), 4096), ((1024, 1024), 2048)],
)
def test_kontext_keeps_the_aspect_within_its_pixel_budget(size: tuple[int, int], max_side: int) -> None:
    width, height = KONTEXT.output_size(*size, max_side)
    assert width % 16 == 0 and height % 16 == 0
    assert width * height <= PIXEL_BUDGET and max(width, height) <= min(max_side, KONTEXT.max_side)
    assert width <= size[0] and height <= size[1]  # never scaled up
    assert abs(width / height - size[0] / size[1]) < 16 / min(width, height) * 2  # the aspect, up to rounding


def test_an_edit_runs_every_step_at_the_source_aspect(preview_kontext: ModelRef, monkeypatch) -> None:
    calls: list[dict] = []
    real = edit.denoise

    def recording(pipe, params, call, **kwargs):
        calls.append(call)
        return real(pipe, params, call, **kwargs)

    monkeypatch.setattr(edit, "denoise", recording)
    progress: list[tuple[int, int]] = []
    result = run_edit(
        preview_kontext,
        EditRequest(source(), INSTRUCTION),
        on_step=lambda step, total: progress.append((step, total)),
    )
    assert (result.width, result.height) == (400, 288)
    assert result.denoising_steps == 3 and progress == [(1, 3), (2, 3), (3, 3)]
    assert result.recipe == {"family": "flux-kontext"}
    # Kontext would otherwise render at 1 MP and snap the source to a preferred resolution.
    assert calls[0]["max_area"] == 400 * 288 and calls[0]["_auto_resize"] is False


def test_same_instruction_and_seed_same_pixels(preview_kontext: ModelRef) -> None:
    first = run_edit(preview_kontext, EditRequest(source(), INSTRUCTION))
    again = run_edit(preview_kontext, EditRequest(source(), INSTRUCTION))
    other = run_edit(preview_kontext, EditRequest(source(), replace(INSTRUCTION, prompt="make it red")))
    assert np.array_equal(np.asarray(first.image), np.asarray(again.image))
    assert not np.array_equal(np.asarray(first.image), np.asarray(other.image))


def test_a_masked_edit_changes_only_the_masked_area(preview_kontext: ModelRef) -> None:
    mask = box_mask(SOURCE_SIZE, MASK_BOX)
    result = run_edit(preview_kontext, EditRequest(source(), INSTRUCTION, mask=mask))
    kept = np.asarray(feathered(mask, InpaintParams().mask_blur)) == 0
    got, original = np.asarray(result.image), np.asarray(source())
    assert result.image.size == SOURCE_SIZE
    assert np.array_equal(got[kept], original[kept])
    assert not np.array_equal(got[~kept], original[~kept])


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (EditRequest(gradient(*SOURCE_SIZE), replace(INSTRUCTION, prompt="  ")), "Write a prompt"),
        (EditRequest(gradient(*SOURCE_SIZE), replace(INSTRUCTION, prompt="x" * (MAX_PROMPT_CHARS + 1))), "limited to"),
        (EditRequest(gradient(*SOURCE_SIZE), replace(INSTRUCTION, negative_prompt="blur")), "takes no negative prompt"),
        (EditRequest(gradient(400, 200), INSTRUCTION), r"400×200 px; model 'preview-flux-kontext' .* at least 256"),
        (
            EditRequest(gradient(*SOURCE_SIZE), INSTRUCTION, mask=Image.new("L", SOURCE_SIZE, 0)),
            "mask",
        ),
        (
            EditRequest(
                gradient(*SOURCE_SIZE),
                INSTRUCTION,
                mask=box_mask(SOURCE_SIZE, MASK_BOX),
                inpaint=InpaintParams(soft=True),
            ),
            "soft masks and only-masked are for Inpaint",
        ),
    ],
)
def test_bad_edits_are_refused_before_loading(
    preview_kontext: ModelRef, request_: EditRequest, message: str, monkeypatch
) -> None:
    monkeypatch.setattr(edit, "get_base_pipeline", lambda ref: pytest.fail("loaded a model for a refused edit"))
    with pytest.raises(PipelineInputError, match=message):
        run_edit(preview_kontext, request_)


def test_a_model_that_does_not_edit_is_refused_by_name(preview_flux: ModelRef) -> None:
    with pytest.raises(PipelineInputError, match=r"'preview-flux' \(FLUX\.1\) is not an instruction editor"):
        run_edit(preview_flux, EditRequest(source(), INSTRUCTION))


# --- Qwen-Image-Edit -------------------------------------------------------------------------------

QWEN_INSTRUCTION = replace(INSTRUCTION, steps=2, guidance=4.0)
SMALL = 64  # max_side for the Qwen runs: its tiny VAE is slow at larger sizes on a CPU


@pytest.fixture(scope="module")
def preview_qwen(shared_models_dir: Path) -> ModelRef:
    return preview_ref(shared_models_dir, "preview-qwen-image-edit")


@pytest.fixture(scope="module")
def preview_qwen_plus(shared_models_dir: Path) -> ModelRef:
    return preview_ref(shared_models_dir, "preview-qwen-image-edit-plus")


@pytest.fixture
def qwen_calls(monkeypatch) -> list[dict]:
    """What run_edit hands the pipeline, delegating to the real denoise."""
    calls: list[dict] = []
    real = edit.denoise

    def recording(pipe, params, call, **kwargs):
        calls.append(call)
        return real(pipe, params, call, **kwargs)

    monkeypatch.setattr(edit, "denoise", recording)
    return calls


def test_qwen_edits_with_true_cfg_at_the_source_aspect(preview_qwen: ModelRef, qwen_calls: list[dict]) -> None:
    import diffusers.pipelines.qwenimage.pipeline_qwenimage_edit as qwen_module

    before = qwen_module.calculate_dimensions
    progress: list[tuple[int, int]] = []
    result = run_edit(
        preview_qwen,
        EditRequest(source(), QWEN_INSTRUCTION, max_side=SMALL),
        on_step=lambda step, total: progress.append((step, total)),
    )
    assert (result.width, result.height) == (64, 48)
    assert progress == [(1, 2), (2, 2)] and result.recipe == {"family": "qwen-image-edit"}
    # The studio's guidance is Qwen's true CFG, with a blank negative prompt when the user gave none.
    assert qwen_calls[0]["true_cfg_scale"] == 4.0 and qwen_calls[0]["guidance_scale"] is None
    assert qwen_calls[0]["negative_prompt"] == " "
    # The preview's small condition images are undone after the run.
    assert qwen_module.calculate_dimensions is before


def test_qwen_loads_an_image_only_processor(preview_qwen: ModelRef, shared_models_dir: Path) -> None:
    import json

    from pipelines.cache import get_base_pipeline
    from pipelines.qwen import ImageOnlyQwenProcessor

    index = json.loads((shared_models_dir / "preview-qwen-image-edit" / "model_index.json").read_text())
    assert index["processor"] == ["transformers", "Qwen2VLProcessor"]  # as a real checkpoint records it
    assert isinstance(get_base_pipeline(preview_qwen).processor, ImageOnlyQwenProcessor)


def test_qwen_same_inputs_same_pixels(preview_qwen: ModelRef) -> None:
    first = run_edit(preview_qwen, EditRequest(source(), QWEN_INSTRUCTION, max_side=SMALL))
    again = run_edit(preview_qwen, EditRequest(source(), QWEN_INSTRUCTION, max_side=SMALL))
    assert np.array_equal(np.asarray(first.image), np.asarray(again.image))


def test_qwen_plus_reads_reference_images(preview_qwen_plus: ModelRef, qwen_calls: list[dict]) -> None:
    background = gradient(256, 320)
    plain = run_edit(preview_qwen_plus, EditRequest(source(), QWEN_INSTRUCTION, max_side=SMALL))
    with_reference = run_edit(
        preview_qwen_plus, EditRequest(source(), QWEN_INSTRUCTION, max_side=SMALL, references=(background,))
    )
    assert [len(call["image"]) if isinstance(call["image"], list) else 1 for call in qwen_calls] == [1, 2]
    assert (with_reference.width, with_reference.height) == (64, 48)  # the source's aspect, not the reference's
    assert not np.array_equal(np.asarray(plain.image), np.asarray(with_reference.image))


@pytest.mark.parametrize(
    ("ref_name", "references", "message"),
    [
        ("preview_qwen", 1, r"'preview-qwen-image-edit' \(Qwen-Image-Edit\) takes no reference images; .* has 1"),
        ("preview_qwen_plus", 3, r"takes up to 2 reference images; this edit has 3"),
        ("preview_qwen", 0, r"edits the whole image only: remove the mask"),
    ],
)
def test_qwen_refuses_what_it_cannot_read(
    ref_name: str, references: int, message: str, request: pytest.FixtureRequest
) -> None:
    mask = None if references else box_mask(SOURCE_SIZE, MASK_BOX)
    edit_request = EditRequest(source(), QWEN_INSTRUCTION, mask=mask, references=(gradient(256, 256),) * references)
    with pytest.raises(PipelineInputError, match=message):
        run_edit(request.getfixturevalue(ref_name), edit_request)
