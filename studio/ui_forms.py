"""The run form the Transform and Inpaint pages share: source upload, style picker, prompts and settings,
ControlNet guidance, price, submit, and recipes read from studio PNGs.

With studio.ui, the only studio modules that import streamlit. Widget keys carry the page's prefix so
the two pages keep their own settings. Torch is imported only when a user asks for a guide preview.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

import streamlit as st
from PIL import Image

from pipelines.errors import PipelineInputError
from pipelines.masks import ERASE_COLOUR, PAINT_COLOUR, check_mask, mask_from_canvas, mask_from_upload
from pipelines.params import (
    DEFAULT_NOISE_LEVEL,
    LIMITS,
    MAX_SEED,
    ControlParams,
    Guide,
    Img2ImgParams,
    InpaintParams,
    Task,
)
from studio import ui
from studio.catalogue import Catalogue, CatalogueError, Style, load_catalogue
from studio.config import Settings
from studio.credits import spendable
from studio.form_settings import FormSettings
from studio.job_requests import JobRequest, SubmitRefused, custom_request, recipe_request, style_request
from studio.jobs import find_user_asset, recent_user_sources
from studio.models import AssetKind, Job, Role, User, utcnow
from studio.presets import (
    PresetError,
    PresetSettings,
    SeedPolicy,
    delete_preset,
    rename_preset,
    save_preset,
    visible_presets,
)
from studio.pricing import QUALITY_TIERS, Quality
from studio.queue import quote, submit_job
from studio.recipes import read_recipe
from studio.validation import UploadRejected, ValidatedImage, decode_mask_upload, validate_image_bytes

OWN_SETTINGS = ""  # the style picker's "no style" choice
GUIDE_PREVIEW_SIDE = 512
CANVAS_SIDE = 512  # the mask canvas's long side on screen; the mask is scaled to the source
MASK_OVERLAY = (255, 0, 255)  # the colour that shows the mask over the image
# Forms of these pages repaint part of a source, so they offer only image-to-image styles (no upscalers).
IMAGE_TO_IMAGE_PAGES = frozenset({"inpaint", "sweep"})
# Widget steps and defaults for what the user chooses (the ranges are the studio's limits, pipelines.params).
STRENGTH_STEP, GUIDANCE_STEP, CONTROL_SCALE_STEP = 0.01, 0.5, 0.05
DEFAULT_STRENGTH, DEFAULT_GUIDANCE = 0.6, 7.5
DEFAULT_CANNY = (ControlParams.low_threshold, ControlParams.high_threshold)
MIN_BRUSH, MAX_BRUSH, DEFAULT_BRUSH = 2, 100, 30


@dataclass(frozen=True)
class Source:
    upload: ValidatedImage
    name: str
    recipe: dict | None  # set when the file is a result made by this studio


def catalogue_or_stop(config: Settings) -> Catalogue:
    try:
        return load_catalogue(config.catalogue_path)
    except CatalogueError as exc:
        st.error(f"The style catalogue is broken, so styles cannot be offered until an admin fixes it: {exc}")
        st.stop()


def source_uploader(prefix: str) -> Source | None:
    uploaded = st.file_uploader(
        "Source image — JPG, PNG or WebP · 256–4096 px per side · up to 10 MB",
        type=["jpg", "jpeg", "png", "webp"],
        key=f"{prefix}.source_upload",
    )
    if uploaded is None:
        return None
    data = uploaded.getvalue()
    try:
        upload = ui.validated_upload(data)
    except UploadRejected as exc:
        st.error(str(exc))
        return None
    for note in upload.notes:
        st.caption(f":material/info: {note}")
    return Source(upload=upload, name=uploaded.name, recipe=read_recipe(data))


def source_picker(prefix: str, user: User) -> Source | None:
    """A new upload, or a source the user uploaded before (from their history)."""
    origin = st.segmented_control("Source", ["Upload", "From history"], default="Upload", key=f"{prefix}.origin")
    if origin != "From history":
        return source_uploader(prefix)
    with ui.db_session() as session:
        assets = {asset.id: asset for asset in recent_user_sources(session=session, user_id=user.id)}
    if not assets:
        st.info("No earlier sources yet: upload one.")
        return None
    asset = assets[
        st.selectbox(
            "Earlier source",
            list(assets),
            format_func=lambda i: (
                f"{assets[i].original_name or 'source'} · {assets[i].width}×{assets[i].height} · "
                f"{assets[i].created_at:%Y-%m-%d %H:%M}"
            ),
            key=f"{prefix}.history_source",
        )
    ]
    if not ui.asset_store().exists(asset.sha256):
        st.warning("That file is no longer stored (retention); pick another or upload it again.")
        return None
    upload = ui.validated_upload(ui.asset_store().read(asset.sha256))
    return Source(upload=upload, name=asset.original_name or f"source-{asset.id}.png", recipe=None)


def limits(name: str) -> dict[str, float]:
    """A widget's range: what the studio accepts for the setting `name` (pipelines.params.LIMITS)."""
    low, high = LIMITS[name]
    return {"min_value": low, "max_value": high}


def offered_styles(catalogue: Catalogue, prefix: str) -> list[Style]:
    """The styles the form of page `prefix` offers, in catalogue order."""
    styles = list(catalogue.styles.values())
    if prefix in IMAGE_TO_IMAGE_PAGES:
        return [style for style in styles if style.task.upscale_factor is None]
    return styles


def style_picker(prefix: str, catalogue: Catalogue, config: Settings) -> Style | None:
    """A style from the catalogue, or None for the user's own settings on the configured model."""
    if refused := st.session_state.pop(_load_refused_key(prefix), None):
        st.error(refused)  # settings someone tried to load into this form (a recipe, a preset, a remix)
    ready = {s.id: catalogue.availability(s.model, config) for s in offered_styles(catalogue, prefix)}

    def label(style_id: str) -> str:
        if style_id == OWN_SETTINGS:
            return "Your own prompt and settings"
        style = catalogue.styles[style_id]
        return f"{style.name} · {style.credits} cr" + ("" if ready[style_id].ready else " · not available here")

    key = f"{prefix}.style"
    if st.session_state.get(key) not in (OWN_SETTINGS, *ready):
        st.session_state.pop(key, None)  # a style removed from the catalogue since it was picked
    style_id = st.selectbox(
        "Style",
        [OWN_SETTINGS, *ready],
        format_func=label,
        key=key,
        on_change=_apply_style_defaults,
        args=(prefix, catalogue),
    )
    if style_id == OWN_SETTINGS:
        st.caption(f"Runs the configured model `{config.model}` with exactly your prompt.")
        return None
    style = catalogue.styles[style_id]
    model = catalogue.models[style.model]
    st.caption(f"{style.description} · model: {model.about or model.location}")
    if not ready[style_id].ready:
        st.warning(f"**{model.name}** (`{model.location}`) is not available here. {ready[style_id].note}")
    return style


def _apply_style_defaults(prefix: str, catalogue: Catalogue) -> None:
    """A newly picked style brings its own strength, guidance and quality."""
    style = catalogue.styles.get(st.session_state[f"{prefix}.style"])
    if style is None:
        return
    st.session_state[f"{prefix}.strength"] = style.strength
    st.session_state[f"{prefix}.guidance"] = style.guidance
    if st.session_state.get(f"{prefix}.quality") not in style.qualities:
        st.session_state[f"{prefix}.quality"] = style.qualities[0].value
        _apply_quality_defaults(prefix)


def _apply_quality_defaults(prefix: str) -> None:
    quality = Quality(st.session_state.get(f"{prefix}.quality") or Quality.standard)
    st.session_state[f"{prefix}.steps"] = QUALITY_TIERS[quality].steps


def run_settings(prefix: str, style: Style | None, *, with_strength: bool = True) -> tuple[Img2ImgParams, Quality, int]:
    """Prompt, strength, quality, steps, guidance, seed (and the 4× upscaler's noise level).

    Without `with_strength` (a sweep, whose cells set their own) there is no strength slider.
    """
    upscaling = style is not None and style.task.upscale_factor is not None
    state = st.session_state
    state.setdefault(f"{prefix}.strength", style.strength if style else DEFAULT_STRENGTH)
    state.setdefault(f"{prefix}.guidance", style.guidance if style else DEFAULT_GUIDANCE)
    state.setdefault(f"{prefix}.seed", random.randint(0, MAX_SEED))
    state.setdefault(f"{prefix}.noise_level", DEFAULT_NOISE_LEVEL)

    if upscaling:
        prompt = st.text_input("Prompt (optional)", placeholder="what the image shows", key=f"{prefix}.prompt")
    else:
        prompt = st.text_area(
            "Prompt" if style is None else "Prompt (the style adds its own words)",
            placeholder="a red sneaker on a wooden table, soft light",
            key=f"{prefix}.prompt",
        )
    negative_prompt = st.text_input(
        "Negative prompt", placeholder="blurry, low quality, watermark", key=f"{prefix}.negative"
    )
    strength = 1.0 if upscaling else state[f"{prefix}.strength"]
    if not upscaling and with_strength:
        strength = st.slider(
            "Strength",
            **limits("strength"),
            step=STRENGTH_STEP,
            help=ui.STRENGTH_HELP,
            key=f"{prefix}.strength",
        )
        st.caption(ui.strength_hint(strength))
    offered = style.qualities if style else tuple(Quality)
    if state.get(f"{prefix}.quality") not in offered:
        state[f"{prefix}.quality"] = offered[0].value
    quality = Quality(
        st.segmented_control(
            "Quality",
            [q.value for q in offered],
            format_func=lambda q: f"{QUALITY_TIERS[Quality(q)].label} · {QUALITY_TIERS[Quality(q)].steps} steps",
            key=f"{prefix}.quality",
            on_change=_apply_quality_defaults,
            args=(prefix,),
        )
        or offered[0].value
    )
    tier = QUALITY_TIERS[quality]
    state.setdefault(f"{prefix}.steps", tier.steps)
    if state[f"{prefix}.steps"] > tier.max_steps:
        state[f"{prefix}.steps"] = tier.steps
    noise_level = DEFAULT_NOISE_LEVEL
    with st.expander("Advanced"):
        steps = st.slider(
            "Steps",
            min_value=1,
            max_value=tier.max_steps,
            help="Schedule length; from a source, int(steps × strength) run.",
            key=f"{prefix}.steps",
        )
        guidance = st.slider(
            "Guidance",
            **limits("guidance"),
            step=GUIDANCE_STEP,
            help="How strictly to follow the prompt (≤ 1 turns it off).",
            key=f"{prefix}.guidance",
        )
        seed = st.number_input(
            "Seed",
            **limits("seed"),
            help="Same source, settings and seed give the same pixels.",
            key=f"{prefix}.seed",
        )
        if style is not None and style.task.upscale_factor == 4:
            noise_level = st.slider(
                "Noise level",
                **limits("noise_level"),
                help="Noise added to the source first: higher invents more detail.",
                key=f"{prefix}.noise_level",
            )
    params = Img2ImgParams(
        prompt=prompt,
        negative_prompt=negative_prompt,
        strength=strength,
        steps=steps,
        guidance=guidance,
        seed=int(seed),
    )
    return params, quality, noise_level


def control_settings(prefix: str, source: Source | None, *, seed: int) -> ControlParams | None:
    """Structure guidance through a ControlNet, with a preview of the guide made from the source."""
    with st.expander("Structure guidance (ControlNet)"):
        if not st.toggle("Follow the source's structure", key=f"{prefix}.use_control"):
            st.caption("Keeps edges, line work or the colour layout of the source while the style changes.")
            return None
        guide = Guide(
            st.radio("Guide", [g.value for g in Guide], format_func=lambda g: Guide(g).label, key=f"{prefix}.guide")
        )
        # Defaults through the state, not value=: loading a recipe or preset sets these keys too.
        st.session_state.setdefault(f"{prefix}.control_scale", ControlParams.conditioning_scale)
        st.session_state.setdefault(f"{prefix}.canny", DEFAULT_CANNY)
        scale = st.slider(
            "Guidance strength",
            **limits("conditioning_scale"),
            step=CONTROL_SCALE_STEP,
            key=f"{prefix}.control_scale",
        )
        low, high = DEFAULT_CANNY
        if guide == Guide.canny:
            low, high = st.slider(
                "Edge thresholds",
                min_value=LIMITS["low_threshold"][0],
                max_value=LIMITS["high_threshold"][1],
                key=f"{prefix}.canny",
            )
        # The model is left empty: the catalogue names the ControlNet for the guide (studio.job_requests).
        control = ControlParams(model="", guide=guide, conditioning_scale=scale, low_threshold=low, high_threshold=high)
        if source is not None and st.button("Show the guide", key=f"{prefix}.show_guide"):
            st.image(_guide_preview(source.upload, control, seed), caption=f"{guide.label} guide", width="content")
        return control


def mask_editor(prefix: str, source: Source) -> Image.Image | None:
    """The inpainting mask ("L", the source's size, 255 = repaint): painted on a canvas over the image, or
    uploaded. None (with a hint or the reason) until there is a usable one."""
    image = source.upload.image
    mask = None
    paint_tab, upload_tab = st.tabs(["Paint the mask", "Upload a mask"])
    with paint_tab:
        mask = _painted_mask(prefix, source)
    with upload_tab:
        mask_file = st.file_uploader(
            "Mask — white (or opaque white) = repaint, black or transparent = keep; fitted to the image",
            type=["png", "jpg", "jpeg", "webp"],
            key=f"{prefix}.mask_upload",
        )
        if mask_file is not None:
            try:
                mask = mask_from_upload(decode_mask_upload(mask_file.getvalue()), image.size)
                check_mask(mask)
            except (UploadRejected, PipelineInputError) as exc:
                st.error(str(exc))
                mask = None
    if mask is None:
        st.info("Paint over the area to repaint, or upload a mask.")
        return None
    overlay = Image.composite(Image.new("RGB", image.size, MASK_OVERLAY), image, mask.point(lambda v: v // 2))
    st.image(overlay, caption="What will be repainted")
    return mask


def _painted_mask(prefix: str, source: Source) -> Image.Image | None:
    from streamlit_drawable_canvas import st_canvas  # registers its component on first use

    brush_col, mode_col, clear_col = st.columns([2, 2, 1], vertical_alignment="bottom")
    brush = brush_col.slider(
        "Brush size", min_value=MIN_BRUSH, max_value=MAX_BRUSH, value=DEFAULT_BRUSH, key=f"{prefix}.brush"
    )
    mode = mode_col.segmented_control("Brush", ["Paint", "Erase"], default="Paint", key=f"{prefix}.brush_mode")
    round_key = f"{prefix}.canvas_round"
    if clear_col.button("Clear", key=f"{prefix}.clear"):
        st.session_state[round_key] = st.session_state.get(round_key, 0) + 1  # a new canvas is an empty one
    image = source.upload.image
    scale = CANVAS_SIDE / max(image.size)
    width, height = round(image.width * scale), round(image.height * scale)
    source_id = hashlib.sha256(source.upload.png_bytes).hexdigest()[:16]
    painted = st_canvas(
        stroke_width=brush,
        stroke_color=ERASE_COLOUR if mode == "Erase" else PAINT_COLOUR,
        background_image=image.resize((width, height)),
        width=width,
        height=height,
        drawing_mode="freedraw",
        return_image_data=True,
        # A new source or a Clear starts a new, empty canvas.
        key=f"{prefix}.canvas.{st.session_state.get(round_key, 0)}.{source_id}",
    )
    st.caption("White marks what to repaint; the eraser's dark strokes take it back. Undo is in the canvas toolbar.")
    if painted.image_data is None:
        return None
    mask = mask_from_canvas(painted.image_data, image.size)
    return mask if mask.getbbox() is not None else None


def mask_options(prefix: str) -> InpaintParams:
    # Defaults through the state, not value=: loading a recipe sets these keys too.
    defaults = InpaintParams()
    for name in ("mask_blur", "only_masked", "padding", "keep_unmasked"):
        st.session_state.setdefault(f"{prefix}.{name}", getattr(defaults, name))
    with st.expander("Mask options"):
        return InpaintParams(
            mask_blur=st.slider(
                "Mask blur (px)",
                **limits("mask_blur"),
                key=f"{prefix}.mask_blur",
                help="Feathers the edge.",
            ),
            only_masked=st.toggle(
                "Only masked area",
                key=f"{prefix}.only_masked",
                help="Renders just the mask's box (plus padding) at full resolution and pastes it back: "
                "more detail for small areas.",
            ),
            padding=st.slider("Masked area padding (px)", **limits("padding"), key=f"{prefix}.padding"),
            keep_unmasked=st.toggle(
                "Keep unmasked pixels exactly",
                key=f"{prefix}.keep_unmasked",
                help="Outside the (feathered) mask the result is the source, byte for byte.",
            ),
        )


def _guide_preview(upload: ValidatedImage, control: ControlParams, seed: int) -> Image.Image:
    from pipelines import import_model_stack

    import_model_stack()  # controlnet-aux imports torch: only when asked
    from pipelines.guides import make_guide

    preview = upload.image.copy()
    preview.thumbnail((GUIDE_PREVIEW_SIDE, GUIDE_PREVIEW_SIDE))
    with st.spinner("Making the guide…"):
        return make_guide(preview, control, seed=seed)


def build_request(build) -> JobRequest | None:
    """Call a studio.job_requests builder; show its refusal instead of raising."""
    try:
        return build()
    except SubmitRefused as exc:
        st.error(str(exc))
        return None


def make_request(
    config: Settings,
    catalogue: Catalogue,
    style: Style | None,
    params: Img2ImgParams,
    quality: Quality,
    *,
    noise_level: int = 20,
    control: ControlParams | None = None,
    inpaint: InpaintParams | None = None,
) -> JobRequest | None:
    if style is None:
        return build_request(
            lambda: custom_request(
                settings=config,
                params=params,
                quality=quality,
                task=Task.inpaint if inpaint is not None else Task.img2img,
                inpaint=inpaint,
                control=control,
                catalogue=catalogue,
            )
        )
    return build_request(
        lambda: style_request(
            settings=config,
            catalogue=catalogue,
            style_id=style.id,
            params=params,
            quality=quality,
            inpaint=inpaint,
            control=control,
            noise_level=noise_level,
        )
    )


def price_caption(config: Settings, user: User, request: JobRequest, upload: ValidatedImage) -> None:
    with ui.db_session() as session:
        credits = spendable(session=session, user=user, now=utcnow())
    cost = quote(settings=config, request=request, width=upload.width, height=upload.height)
    st.caption(
        f"Costs **{cost.credits}** credit{'s' if cost.credits != 1 else ''} ({cost.explain()}) · "
        f"you have {credits.personal}" + (f" + {credits.team} in the team pool" if credits.team is not None else "")
    )


def submit(
    config: Settings,
    user: User,
    source: Source,
    request: JobRequest,
    *,
    mask: Image.Image | None = None,
    job_key: str,
) -> None:
    """Queue the job (the page then shows it under `job_key`), or show why it was refused."""
    try:
        [job] = ui.submit_or_resubmit(lambda: [_submit_once(config, user, source, request, mask)])
        st.session_state[job_key] = job.id
    except SubmitRefused as exc:
        st.error(str(exc))


def _submit_once(config: Settings, user: User, source: Source, request: JobRequest, mask: Image.Image | None) -> Job:
    with ui.db_write_session() as session:
        return submit_job(
            session=session,
            store=ui.asset_store(),
            settings=config,
            user=user,
            upload=source.upload,
            original_name=source.name,
            request=request,
            mask=mask,
            idempotency_key=ui.submit_key(
                user_id=user.id,
                source_png=source.upload.png_bytes,
                recipe=request.job_params()
                | {"model": request.model, "quality": request.quality.value, "mask": _mask_digest(mask)},
            ),
        )


def _mask_digest(mask: Image.Image | None) -> str | None:
    return hashlib.sha256(mask.tobytes()).hexdigest() if mask is not None else None


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
    except SubmitRefused as exc:
        st.caption(f":material/receipt_long: This image carries a studio recipe that cannot be read: {exc}")
        return
    with st.container(border=True):
        st.markdown(":material/receipt_long: **This image was made in the studio**; its recipe is inside.")
        st.caption(
            f"{recipe.get('task', 'img2img')} · model `{recipe.get('model')}` · "
            f"{recipe.get('steps')} steps · seed {recipe.get('seed')} · “{str(recipe.get('prompt', ''))[:80]}”"
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
            request = build_request(lambda: recipe_request(settings=config, catalogue=catalogue, recipe=recipe))
            if request is not None:
                upload, mask = original
                submit(config, user, Source(upload, source.name, None), request, mask=mask, job_key=job_key)


def _original_inputs(user: User, recipe: dict) -> tuple[ValidatedImage, Image.Image | None] | None:
    """The recipe's source (and mask) from the user's own library, if they are still there."""
    store = ui.asset_store()
    with ui.db_session() as session:
        source = find_user_asset(
            session=session, user_id=user.id, sha256=str(recipe.get("source_sha256")), kind=AssetKind.source
        )
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
    return upload, (Image.open(store.path(mask.sha256)).convert("L") if mask is not None else None)


def _load_refused_key(prefix: str) -> str:
    return f"{prefix}.load_refused"


def load_into_form(prefix: str, settings: FormSettings, catalogue: Catalogue) -> bool:
    """Fill the form of page `prefix` with `settings`: all of them, or (with the reason shown above the
    form) none when the page cannot show them. Safe as a widget callback and before switching pages."""
    state = st.session_state
    try:
        settings.check(catalogue, offered_styles(catalogue, prefix))
    except SubmitRefused as exc:
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
    return True


def load_recipe_into_form(prefix: str, recipe: dict, catalogue: Catalogue) -> bool:
    """A recipe or a job's settings (History *Remix*, a sweep cell's *Use this one*) into a page's form."""
    try:
        settings = FormSettings.from_recipe(recipe, catalogue)
    except SubmitRefused as exc:
        st.session_state[_load_refused_key(prefix)] = str(exc)
        return False
    return load_into_form(prefix, settings, catalogue)


def preset_bar(prefix: str, user: User, catalogue: Catalogue, current: JobRequest | None) -> None:
    """Apply a saved preset to the form, save the current settings as one, rename or delete one."""
    with st.expander("Presets", icon=":material/bookmarks:"):
        with ui.db_session() as session:
            presets = {p.id: p for p in visible_presets(session=session, user=user)}
        if presets:
            preset_id = st.selectbox(
                "Preset",
                list(presets),
                format_func=lambda i: presets[i].name + ("" if presets[i].owner_id == user.id else " · shared"),
                key=f"{prefix}.preset",
            )
            chosen = presets[preset_id]
            st.button(
                "Apply",
                key=f"{prefix}.preset_apply",
                on_click=load_into_form,
                args=(prefix, FormSettings.from_preset(PresetSettings.from_dict(chosen.settings)), catalogue),
            )
            with st.popover("Rename or delete", disabled=chosen.owner_id != user.id and user.role is not Role.admin):
                new_name = st.text_input("New name", chosen.name, key=f"{prefix}.preset_rename")
                if st.button("Rename", key=f"{prefix}.preset_rename_button"):
                    _preset_change(lambda s: rename_preset(session=s, user=user, preset_id=chosen.id, name=new_name))
                if st.button("Delete", key=f"{prefix}.preset_delete"):
                    _preset_change(lambda s: delete_preset(session=s, user=user, preset_id=chosen.id))
        name = st.text_input("Save the current settings as", key=f"{prefix}.preset_name")
        shared = st.checkbox("Share with my team", key=f"{prefix}.preset_shared", disabled=user.team_id is None)
        policy = SeedPolicy(
            st.radio(
                "Seed for each image",
                [p.value for p in SeedPolicy],
                format_func=lambda p: {"fixed": "Fixed (most consistent)", "random": "New seed per image"}[p],
                horizontal=True,
                key=f"{prefix}.preset_policy",
            )
        )
        if st.button("Save preset", key=f"{prefix}.preset_save", disabled=current is None or not name.strip()):
            preset = PresetSettings.from_request(current, seed_policy=policy)
            _preset_change(lambda s: save_preset(session=s, owner=user, name=name, preset=preset, shared=shared))
        if current is None:
            st.caption("Upload a source and fill in the form to save its settings.")


def _preset_change(change) -> None:
    try:
        with ui.db_write_session() as session:
            change(session)
        st.rerun()
    except PresetError as exc:
        st.error(str(exc))
