"""Results made by this studio: loading their settings into a form, or re-running them exactly; remixes and
sweep cells load the same way.
"""

from __future__ import annotations

import streamlit as st
from PIL import Image

from studio.catalogue.form_settings import FormSettings
from studio.catalogue.requests import recipe_request
from studio.catalogue.styles import Catalogue
from studio.config import Settings
from studio.db.tables import AssetKind, User
from studio.errors import Refused
from studio.jobs.queries import find_user_asset
from studio.media.validation import ValidatedImage, validate_image_bytes
from studio.web import app, refusals
from studio.web.outpaint import load_format
from studio.web.sources import Source
from studio.web.styles import OWN_SETTINGS, _load_refused_key, offered_kits, offered_styles
from studio.web.submit import submit
from studio.web.text import plain

# The pages whose form offers LoRAs (studio.web.form.lora_settings) and those offering a reference image
# (studio.web.references): settings with either load only there.
LORA_PAGES = ("transform", "inpaint", "sweep", "edit", "batch")
REFERENCE_PAGES = ("transform", "inpaint")


def recipe_offer(
    prefix: str,
    source: Source,
    catalogue: Catalogue,
    config: Settings,
    user: User,
    *,
    job_key: str,
    rerun: bool = True,
) -> None:
    """For a result made by this studio: load its settings into the form, or (with `rerun`) run it again exactly."""
    recipe = source.recipe
    try:
        settings = FormSettings.from_recipe(recipe, catalogue)
    except Refused as exc:
        st.caption(f":material/receipt_long: This image carries a studio recipe that cannot be read: {plain(exc)}")
        return
    with st.container(border=True):
        st.markdown(":material/receipt_long: **This image was made in the studio**; its recipe is inside.")
        # Whatever the PNG says, as plain text: anyone can write a recipe into a PNG.
        st.caption(
            plain(
                f"{recipe.get('task', 'img2img')} · model {recipe.get('model')} · {recipe.get('steps')} steps · "
                f"seed {recipe.get('seed')} · “{str(recipe.get('prompt', ''))[:80]}”"
            )
        )
        load_col, rerun_col = st.columns(2)
        load_col.button(
            "Load its settings",
            key=f"{prefix}.load_recipe",
            on_click=load_into_form,
            args=(prefix, settings, catalogue),
            help="Fills the form with the recipe's style, prompt and settings, to change and run.",
        )
        if not rerun:
            return
        original = _original_inputs(user, recipe)
        if original is None:
            rerun_col.caption("Its source image is no longer in your library, so it cannot be re-run exactly.")
            return
        if rerun_col.button("Re-run identically", key=f"{prefix}.rerun", help="Same source, model, settings and seed."):
            request = refusals.attempt(lambda: recipe_request(settings=config, catalogue=catalogue, recipe=recipe))
            if request is not None:
                upload, mask, references = original
                submit(
                    config,
                    user,
                    Source(upload, source.name, None),
                    request,
                    mask=mask,
                    references=references,
                    job_key=job_key,
                )


def _original_inputs(
    user: User, recipe: dict
) -> tuple[ValidatedImage, Image.Image | None, list[ValidatedImage]] | None:
    """The recipe's source (and mask, and an edit's reference images) from the user's own library, if they are
    still there."""
    store = app.asset_store()
    with app.db_session() as session:
        source = find_user_asset(
            session=session, user_id=user.id, sha256=str(recipe.get("source_sha256")), kind=AssetKind.source
        )
        named = recipe.get("references")  # anyone can write a recipe: only a list is read
        references = [
            find_user_asset(session=session, user_id=user.id, sha256=str(sha256), kind=AssetKind.source)
            for sha256 in (named if isinstance(named, list) else [])
        ]
        if not all(reference is not None and store.exists(reference.sha256) for reference in references):
            return None
        mask = None
        if recipe.get("mask_sha256"):
            mask = find_user_asset(
                session=session, user_id=user.id, sha256=str(recipe["mask_sha256"]), kind=AssetKind.mask
            )
            if mask is None:
                return None
    if source is None or not store.exists(source.sha256) or (mask is not None and not store.exists(mask.sha256)):
        return None
    upload = validate_image_bytes(store.read(source.sha256))
    mask_image = Image.open(store.path(mask.sha256)).convert("L") if mask is not None else None
    return upload, mask_image, [validate_image_bytes(store.read(reference.sha256)) for reference in references]


def load_into_form(prefix: str, settings: FormSettings, catalogue: Catalogue) -> bool:
    """Fill the form of page `prefix` with `settings`: all of them, or (with the reason shown above the
    form) none when the page cannot show them. Safe as a widget callback and before switching pages."""
    state = st.session_state
    try:
        settings.check(catalogue, [*offered_kits(prefix, catalogue), *offered_styles(catalogue, prefix)])
        if settings.loras and prefix not in LORA_PAGES:
            raise Refused("These settings use LoRAs, which the Transform, Inpaint, Sweep, Edit and Batch pages offer.")
        reference = _reference_image(prefix, settings)
    except Refused as exc:
        state[_load_refused_key(prefix)] = str(exc)
        return False
    state[f"{prefix}.style"] = settings.style if settings.style is not None else OWN_SETTINGS
    state[f"{prefix}.prompt"] = settings.prompt
    state[f"{prefix}.negative"] = settings.negative_prompt
    state[f"{prefix}.strength"] = settings.strength
    state[f"{prefix}.guidance"] = settings.guidance
    state[f"{prefix}.seed"] = settings.seed
    state[f"{prefix}.quality"] = settings.quality.value
    state[f"{prefix}.steps"] = settings.steps
    state[f"{prefix}.noise_level"] = settings.noise_level
    state[f"{prefix}.use_control"] = settings.control is not None
    if settings.control is not None:
        state[f"{prefix}.guide"] = settings.control.guide.value
        state[f"{prefix}.control_scale"] = settings.control.conditioning_scale
        state[f"{prefix}.canny"] = (settings.control.low_threshold, settings.control.high_threshold)
    if settings.inpaint is not None:
        state[f"{prefix}.mask_blur"] = settings.inpaint.mask_blur
        state[f"{prefix}.only_masked"] = settings.inpaint.only_masked
        state[f"{prefix}.padding"] = settings.inpaint.padding
        state[f"{prefix}.keep_unmasked"] = settings.inpaint.keep_unmasked
        state[f"{prefix}.soft"] = settings.inpaint.soft
    if settings.outpaint is not None:
        load_format(prefix, settings.outpaint)
    state[f"{prefix}.loras"] = [name for name, _ in settings.loras]
    for name, weight in settings.loras:
        state[f"{prefix}.lora_weight.{name}"] = weight
    if settings.reference is not None:
        state[f"{prefix}.reference_image"] = reference
        state[f"{prefix}.reference_scale"] = settings.reference.scale
    else:
        state.pop(f"{prefix}.reference_image", None)
    return True


def _reference_image(prefix: str, settings: FormSettings) -> ValidatedImage | None:
    """The settings' reference image from the store (None without one); Refused on a page without the expander, or
    when the image is no longer stored."""
    if settings.reference is None:
        return None
    if prefix not in REFERENCE_PAGES:
        raise Refused("These settings use a reference image, which only the Transform and Inpaint pages offer.")
    store = app.asset_store()
    if not store.exists(settings.reference.image_sha256):
        raise Refused("These settings' reference image is no longer stored (retention): they cannot be loaded.")
    return validate_image_bytes(store.read(settings.reference.image_sha256))


def load_recipe_into_form(prefix: str, recipe: dict, catalogue: Catalogue) -> bool:
    """A recipe or a job's settings (History *Remix*, a sweep cell's *Use this one*) into a page's form."""
    try:
        settings = FormSettings.from_recipe(recipe, catalogue)
    except Refused as exc:
        st.session_state[_load_refused_key(prefix)] = str(exc)
        return False
    return load_into_form(prefix, settings, catalogue)
