"""Recipes come from uploaded files, so any JSON object can arrive. Hypothesis generates recipe dicts — the
studio's own for every style and the configured model, then broken: wrong types, unknown or mismatched models
and styles, huge numbers, missing keys — and each must either be refused with a message that changes nothing
(no job, no stored file, no credit moved) or queue a job priced by the model that runs."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlmodel import func, select

from pipelines.params import MAX_GUIDANCE, MAX_SEED, Guide, Task
from studio.accounts.users import get_user
from studio.billing.credits import Account, add_credits, ledger_sum
from studio.billing.pricing import Quality, configured_model_credits
from studio.catalogue.requests import recipe_request
from studio.catalogue.styles import load_catalogue
from studio.db.engine import session_for, write_session
from studio.db.tables import Asset, CreditEntry, CreditKind, Job, utcnow
from studio.errors import Refused
from studio.jobs.submit import quote, submit_job
from studio.media.storage import AssetStore
from studio.media.validation import validate_image_bytes
from tests.support import png_bytes

SOURCE = validate_image_bytes(png_bytes(256, 256))
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


@pytest.fixture
def env(studio, studio_settings):
    catalogue = load_catalogue(studio_settings.catalogue_path)
    with write_session(studio_settings.database_url) as session:
        admin = get_user(session=session, username="admin")
        add_credits(
            session=session,
            account=Account(user_id=admin.id),
            amount=10**9,
            kind=CreditKind.grant,
            now=utcnow(),
            reason="enough for every accepted recipe",
        )
        session.commit()
    return {"settings": studio_settings, "catalogue": catalogue, "user": admin}


def own_recipes(catalogue, configured_model: str) -> list[dict]:
    """The recipes the studio itself writes: one per style (on its model), one for the configured model."""
    recipes = [
        {
            "task": Task.img2img.value,
            "prompt": "a red shoe",
            "strength": 0.5,
            "steps": 4,
            "guidance": 7.5,
            "seed": 1,
            "quality": Quality.standard.value,
            "model": configured_model,
            "catalogue_model": None,
            "style": None,
        }
    ]
    for style in catalogue.styles.values():
        recipes.append(
            recipes[0]
            | {
                "task": style.task.value,
                "style": style.id,
                "catalogue_model": style.model,
                "model": style.model,  # replaced by its location in the test (it depends on the settings)
            }
        )
    return recipes


def recipes(catalogue, configured_model: str):
    names = list(catalogue.models)
    models = [configured_model, "preview", "preview-upscaler-x2", "preview-upscaler-x4", "preview-controlnet"]
    keys = ["task", "prompt", "negative_prompt", "strength", "steps", "guidance", "seed", "quality", "style",
            "model", "catalogue_model", "control", "inpaint", "noise_level", "user_prompt"]  # fmt: skip
    plausible = {
        "task": st.sampled_from([*Task, "dance"]),
        "strength": st.one_of(st.floats(min_value=-1, max_value=2), st.sampled_from([0.0, 1.0])),
        "steps": st.one_of(st.integers(min_value=-5, max_value=200), st.just(10**12)),
        "guidance": st.floats(min_value=-1, max_value=MAX_GUIDANCE + 5),
        "seed": st.one_of(st.integers(min_value=-1, max_value=MAX_SEED + 1), st.just(10**40)),
        "quality": st.sampled_from([*Quality, "best"]),
        "style": st.sampled_from([*catalogue.styles, "no-such-style"]),
        "model": st.sampled_from([*models, "/etc", "someone/evil", ""]),
        "catalogue_model": st.sampled_from([*names, None, "no-such-model"]),
        "control": st.fixed_dictionaries(
            {
                "model": st.sampled_from(["preview-controlnet", "preview", "someone/evil"]),
                "guide": st.sampled_from([*Guide, "depth"]),
            },
            optional={"conditioning_scale": st.floats(min_value=-1, max_value=3), "low_threshold": JUNK},
        ),
        "inpaint": st.fixed_dictionaries({}, optional={"mask_blur": st.integers(-1, 100), "only_masked": JUNK}),
        "noise_level": st.integers(min_value=-1, max_value=400),
        "prompt": st.text(max_size=30),
    }
    edit = st.tuples(st.sampled_from(keys), st.one_of(JUNK, st.sampled_from(["__drop__"]), st.nothing()))
    plausible_edit = st.sampled_from(sorted(plausible)).flatmap(lambda key: st.tuples(st.just(key), plausible[key]))
    return st.tuples(
        st.sampled_from(own_recipes(catalogue, configured_model)),
        st.lists(st.one_of(edit, plausible_edit), max_size=4),
    )


def world(env) -> tuple:
    """Everything a refused submit must leave as it was: jobs, assets, ledger rows and sum, stored files."""
    settings, user = env["settings"], env["user"]
    with session_for(settings.database_url) as session:
        counts = tuple(session.exec(select(func.count()).select_from(t)).one() for t in (Job, Asset, CreditEntry))
        balance = ledger_sum(session=session, account=Account(user_id=user.id))
    root = AssetStore(settings.assets_dir).root
    files = sorted(p.name for p in root.rglob("*") if p.is_file()) if root.exists() else []
    return counts, balance, files


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_recipe_is_refused_changing_nothing_or_runs_at_the_price_of_its_model(env, data):
    settings_, catalogue, user = env["settings"], env["catalogue"], env["user"]
    base, edits = data.draw(recipes(catalogue, settings_.model))
    recipe = dict(base)
    if recipe.get("catalogue_model") in catalogue.models and recipe["model"] == recipe["catalogue_model"]:
        recipe["model"] = catalogue.location(recipe["catalogue_model"], settings_)
    for key, value in edits:
        if value == "__drop__":
            recipe.pop(key, None)
        else:
            recipe[key] = value

    before = world(env)
    try:
        request = recipe_request(settings=settings_, catalogue=catalogue, recipe=recipe)
        with write_session(settings_.database_url) as session:
            job = submit_job(
                session=session,
                store=AssetStore(settings_.assets_dir),
                settings=settings_,
                user=user,
                upload=SOURCE,
                original_name="shoe.png",
                request=request,
            )
    except Refused as refused:
        event("refused")
        assert str(refused)  # a message that says why
        assert world(env) == before
        return

    event(f"accepted: {job.task}")
    # Accepted: what runs is the catalogue model it is priced by (or the configured model), and the price is
    # that model's credits for the quality and the output size.
    named = job.params["catalogue_model"]
    if named is None:
        assert job.model == settings_.model
        credits = configured_model_credits(settings_)
    else:
        assert catalogue.location(named, settings_) == job.model
        assert catalogue.kind_for(Task(job.task)) is catalogue.models[named].kind
        credits = catalogue.models[named].credits
    assert request.base_credits == credits
    assert job.cost == quote(settings=settings_, request=request, width=SOURCE.width, height=SOURCE.height).credits
    if job.style is not None:
        assert catalogue.styles[job.style].model == named  # a style label only where that style runs this model
    counts, balance, _ = world(env)
    assert counts[0] == before[0][0] + 1 and balance == before[1] - job.cost
