"""The Edit page: every editor style of the shipped catalogue from upload to result (with its reference images and
its mask where the editor takes them), the recipe re-run from the result, and what it refuses (charging nothing).
Jobs run on the tiny preview models of the editors' families, rendered at SIDE px."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageDraw
from sqlmodel import func, select
from streamlit.testing.v1 import AppTest

from pipelines.params import LIMITS, Task
from studio.accounts.bootstrap import bootstrap
from studio.accounts.users import get_user
from studio.billing.credits import Account, add_credits, balance
from studio.catalogue.recipes import read_recipe
from studio.catalogue.styles import load_catalogue
from studio.config import PROJECT_ROOT, get_settings
from studio.db.engine import session_for, write_session
from studio.db.tables import Asset, CreditEntry, CreditKind, Job, JobStatus, utcnow
from studio.media.storage import AssetStore
from studio.web.styles import offered_styles
from tests.support import APP, TIMEOUT, finish_jobs, png_bytes, sign_in_as, texts

CATALOGUE = load_catalogue(PROJECT_ROOT / "data" / "styles.toml")
EDIT_STYLES = offered_styles(CATALOGUE, "edit")
SIDE = 256  # rendered size (the smallest the studio allows): fast, and the same code as at 1024
SOURCE = 256  # the editors' smallest source side


def mask_png() -> bytes:
    mask = Image.new("L", (SOURCE, SOURCE), 0)
    ImageDraw.Draw(mask).rectangle((64, 64, 192, 192), fill=255)
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def small_studio(studio_settings, monkeypatch):
    monkeypatch.setenv("STUDIO_MAX_OUTPUT_SIDE", str(SIDE))
    get_settings.cache_clear()
    settings = get_settings()
    bootstrap(settings)
    return settings


def edit_page() -> AppTest:
    at = sign_in_as(AppTest.from_file(APP, default_timeout=TIMEOUT), "admin").run()
    at.switch_page("pages/edit.py").run()
    assert not at.exception, at.exception
    return at


def ledger(settings) -> tuple[int, int, int, int]:
    """Jobs, assets, ledger rows and the admin's balance."""
    with session_for(settings.database_url) as session:
        admin = get_user(session=session, username="admin")
        rows = [session.exec(select(func.count()).select_from(table)).one() for table in (Job, Asset, CreditEntry)]
        return (*rows, balance(session=session, account=Account(user_id=admin.id), now=utcnow()))


def fill(at: AppTest, style, instruction: str = "the green bottle") -> None:
    at.file_uploader(key="edit.source_upload").set_value(("bottle.png", png_bytes(SOURCE, SOURCE), "image/png")).run()
    at.selectbox(key="edit.style").set_value(style.id).run()
    at.text_area(key="edit.prompt").input(instruction)
    at.slider(key="edit.steps").set_value(2)
    at.number_input(key="edit.seed").set_value(5)
    at.run()
    assert not at.exception, at.exception


def test_the_edit_page_offers_exactly_the_catalogues_editor_styles_and_no_other_page_does():
    assert EDIT_STYLES and all(style.task is Task.edit for style in EDIT_STYLES)
    assert [s.id for s in EDIT_STYLES] == [s.id for s in CATALOGUE.styles.values() if s.task is Task.edit]
    for page in ("transform", "inpaint", "sweep", "batch"):
        assert all(style.task is not Task.edit for style in offered_styles(CATALOGUE, page))


@pytest.mark.slow
@pytest.mark.parametrize("style", EDIT_STYLES, ids=lambda style: style.id)
def test_every_editor_style_edits_from_the_page_and_its_result_reruns_identically(small_studio, style):
    at = edit_page()
    assert len(at.selectbox(key="edit.style").options) == len(EDIT_STYLES)  # no "own settings": editors only
    fill(at, style)
    family = style.family_info
    # The form follows the editor: no strength; a negative prompt only where the family takes one; its licence.
    assert not [slider for slider in at.slider if slider.key == "edit.strength"]
    assert any(t.key == "edit.negative" for t in at.text_input) is family.negative_prompt
    licence = CATALOGUE.models[style.model].licence
    assert any(licence in caption.value for caption in at.caption), licence
    references = 0
    if family.max_images > 1:
        references = family.max_images - 1
        at.file_uploader(key="edit.references").set_value(
            [(f"ref{n}.png", png_bytes(SOURCE, SOURCE, (40 * n, 90, 160)), "image/png") for n in range(references)]
        ).run()
    masked = family.pipelines.masked_edit is not None
    if masked:
        at.toggle(key="edit.use_mask").set_value(True).run()
        assert not [toggle for toggle in at.toggle if toggle.key == "edit.soft"]  # an edit's mask is black and white
        at.file_uploader(key="edit.mask_upload").set_value(("mask.png", mask_png(), "image/png")).run()
    assert not at.exception, at.exception
    assert at.button(key="edit_button").label == "Edit · 2 denoising steps"
    at.button(key="edit_button").click().run()
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)

    [job] = finish_jobs(small_studio)
    assert job.status is JobStatus.complete, job.error
    assert (job.task, job.style, job.mask_asset_id is not None) == ("edit", style.id, masked)
    assert len(job.params.get("references", [])) == references
    at.run()
    assert not at.exception, at.exception
    with session_for(small_studio.database_url) as session:
        result = session.get(Asset, job.result_asset_id)
    result_png = AssetStore(small_studio.assets_dir).read(result.sha256)
    recipe = read_recipe(result_png)
    assert recipe["user_prompt"] == "the green bottle" and recipe["denoising_steps"] == 2

    # History lists it; its result, uploaded again, re-runs identically.
    at.switch_page("pages/history.py").run()
    assert any("guidance" in caption.value and "2 steps" in caption.value for caption in at.caption)
    at = edit_page()
    at.file_uploader(key="edit.source_upload").set_value(("result.png", result_png, "image/png")).run()
    at.button(key="edit.rerun").click().run()
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)
    first, again = finish_jobs(small_studio)
    assert again.status is JobStatus.complete, again.error
    assert again.params == first.params
    with session_for(small_studio.database_url) as session:
        rerun = session.get(Asset, again.result_asset_id)
    with (
        Image.open(io.BytesIO(result_png)) as one,
        Image.open(io.BytesIO(AssetStore(small_studio.assets_dir).read(rerun.sha256))) as two,
    ):
        assert one.tobytes() == two.tobytes()


@pytest.mark.slow
def test_an_empty_instruction_is_refused_with_a_message_and_nothing_is_charged(small_studio):
    at = edit_page()
    fill(at, EDIT_STYLES[0], instruction="   ")
    before = ledger(small_studio)
    at.button(key="edit_button").click().run()
    assert not at.exception, at.exception
    assert any("Write an instruction" in error for error in texts(at.error)), texts(at.error)
    assert ledger(small_studio) == before


@pytest.mark.slow
def test_an_edit_sweep_over_seeds_runs_from_the_page_into_its_grid(small_studio):
    style = next(style for style in EDIT_STYLES if style.family_info.max_images == 1)
    at = edit_page()
    fill(at, style)
    at.selectbox(key="edit.axis").set_value("seed").run()
    at.text_input(key="edit.axis_values").input("1, 2").run()
    assert not at.exception, at.exception
    assert at.button(key="edit_sweep_button").label == "Run sweep · 2 cells"
    at.button(key="edit_sweep_button").click().run()
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)
    jobs = finish_jobs(small_studio)
    assert [(job.status, job.params["seed"], job.task) for job in jobs] == [
        (JobStatus.complete, 1, "edit"),
        (JobStatus.complete, 2, "edit"),
    ]
    assert len({job.sweep_id for job in jobs}) == 1
    at.run()
    assert not at.exception, at.exception
    assert any("cell by cell" in caption.value for caption in at.caption)


@pytest.mark.slow
@pytest.mark.parametrize("style", EDIT_STYLES, ids=lambda style: style.id)
def test_every_editor_style_takes_its_familys_lora_and_sweeps_its_weight_from_the_page(small_studio, style):
    """The Edit page's LoRA picker offers the catalogue's LoRAs of the editor's family; an edit at the weight's upper
    limit records it, and a sweep over the weight's limits runs cell by cell, each cell recording its own weight."""
    offered = [entry.name for entry in CATALOGUE.loras_for(style.family)]
    assert offered, f"the catalogue has no LoRA for {style.family}: add one so this path is testable"
    low, high = LIMITS["lora_weight"]
    with write_session(small_studio.database_url) as session:  # an edit and three cells at the editor's price
        admin = get_user(session=session, username="admin")
        add_credits(
            session=session,
            account=Account(user_id=admin.id),
            amount=40,
            kind=CreditKind.grant,
            now=utcnow(),
            reason="t",
        )
        session.commit()
    at = edit_page()
    fill(at, style)
    assert at.multiselect(key="edit.loras").options == offered
    at.multiselect(key="edit.loras").set_value(offered[:1]).run()
    at.slider(key=f"edit.lora_weight.{offered[0]}").set_value(high).run()
    at.button(key="edit_button").click().run()
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)
    [job] = finish_jobs(small_studio)
    assert job.status is JobStatus.complete, job.error
    assert [(item["name"], item["weight"]) for item in job.recipe["loras"]] == [(offered[0], high)]

    at.selectbox(key="edit.axis").set_value("lora_weight").run()
    at.text_input(key="edit.axis_values").input(f"{low}, 0, {high}").run()
    assert not at.exception, at.exception
    assert at.button(key="edit_sweep_button").label == "Run sweep · 3 cells"
    at.button(key="edit_sweep_button").click().run()
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)
    cells = finish_jobs(small_studio)[1:]
    assert [(c.status, c.recipe["loras"][0]["weight"], c.recipe["sweep"]["mode"]) for c in cells] == [
        (JobStatus.complete, weight, "separate") for weight in (low, 0, high)
    ]
    at.run()
    assert not at.exception, at.exception
    assert any(f"LoRA {offered[0]} weight" in text for text in texts(at.markdown))
