"""The run form's settings: prompt, strength, quality, steps, guidance, seed, noise level, and structure guidance
(ControlNet) with a preview of the guide. Widget keys carry the page's prefix, so pages keep their own settings;
every range comes from pipelines.params.LIMITS.
"""

from __future__ import annotations

import random

import streamlit as st
from PIL import Image

from pipelines.families import FAMILIES, Family
from pipelines.params import (
    DEFAULT_NOISE_LEVEL,
    LIMITS,
    MAX_LORAS,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    ControlParams,
    Guide,
    Img2ImgParams,
    RunSpec,
    Task,
)
from studio.billing.pricing import QUALITY_TIERS, Quality
from studio.catalogue.requests import configured_family, denoising_steps
from studio.catalogue.styles import Catalogue, Style, starting_steps
from studio.config import Settings
from studio.kits.requests import KitStyle
from studio.kits.settings import KitSettings
from studio.media.validation import ValidatedImage
from studio.web import widgets
from studio.web.sources import Source
from studio.web.styles import apply_quality_defaults

GUIDE_PREVIEW_SIDE = 512
# Widget steps and defaults for what the user chooses (the ranges are the studio's limits, pipelines.params).
STRENGTH_STEP, GUIDANCE_STEP, CONTROL_SCALE_STEP, LORA_WEIGHT_STEP = 0.01, 0.5, 0.05, 0.05
DEFAULT_LORA_WEIGHT = 1.0
DEFAULT_STRENGTH, DEFAULT_GUIDANCE = 0.6, 7.5
DEFAULT_CANNY = (ControlParams.low_threshold, ControlParams.high_threshold)


def limits(name: str) -> dict[str, float]:
    """A widget's range: what the studio accepts for the setting `name` (pipelines.params.LIMITS)."""
    low, high = LIMITS[name]
    return {"min_value": low, "max_value": high}


def step_count(config: Settings, style: Style | None, params: Img2ImgParams) -> int:
    """The denoising steps a run of `params` takes with `style` (None: the configured model): its family's count."""
    family = style.family if style is not None else configured_family(config)
    return denoising_steps(RunSpec(style.task if style is not None else Task.img2img, params), family)


def guidance_help(family: Family | None) -> str:
    """What the guidance slider means for the style's family."""
    if family is not None and family.name.startswith("flux"):
        return (
            f"{family.label}'s distilled guidance: how strongly the prompt steers (about 2.5–3.5; schnell ignores it)."
        )
    if family is not None and family.name.startswith("qwen"):
        return f"{family.label}'s true classifier-free guidance (about 4; ≤ 1 turns it off and halves the work)."
    return "How strictly to follow the prompt (≤ 1 turns it off)."


def run_settings(prefix: str, style: Style | None, *, with_strength: bool = True) -> tuple[Img2ImgParams, Quality, int]:
    """Prompt (an edit's instruction), strength, quality, steps, guidance, seed (and the 4× upscaler's noise level);
    a negative prompt where the style's family takes one.

    Without `with_strength` (a sweep, whose cells set their own; an edit, which has none) there is no strength
    slider.
    """
    upscaling = style is not None and style.task.upscale_factor is not None
    editing = style is not None and style.task == Task.edit
    family = style.family_info if style is not None and not upscaling else None
    state = st.session_state
    state.setdefault(f"{prefix}.strength", style.strength if style else DEFAULT_STRENGTH)
    state.setdefault(f"{prefix}.guidance", style.guidance if style else DEFAULT_GUIDANCE)
    state.setdefault(f"{prefix}.seed", random.randint(0, MAX_SEED))
    state.setdefault(f"{prefix}.noise_level", DEFAULT_NOISE_LEVEL)

    if upscaling:
        prompt = st.text_input("Prompt (optional)", placeholder="what the image shows", key=f"{prefix}.prompt")
    elif editing:
        prompt = st.text_area(
            "Instruction (the style adds its own words)",
            placeholder="the green bottle",
            max_chars=MAX_PROMPT_CHARS,
            help="What to change, and what to keep. The style's template puts your words in its instruction.",
            key=f"{prefix}.prompt",
        )
    else:
        prompt = st.text_area(
            "Prompt" if style is None else "Prompt (the style adds its own words)",
            placeholder="a red sneaker on a wooden table, soft light",
            key=f"{prefix}.prompt",
        )
    negative_prompt = ""
    if family is None or family.negative_prompt:
        negative_prompt = st.text_input(
            "Negative prompt", placeholder="blurry, low quality, watermark", key=f"{prefix}.negative"
        )
    else:
        st.caption(f"{family.label} takes no negative prompt: describe what you want instead.")
    strength = 1.0 if upscaling or editing else state[f"{prefix}.strength"]
    if not upscaling and not editing and with_strength:
        strength = st.slider(
            "Strength",
            **limits("strength"),
            step=STRENGTH_STEP,
            help=widgets.STRENGTH_HELP,
            key=f"{prefix}.strength",
        )
        st.caption(widgets.strength_hint(strength))
    offered = style.qualities if style else tuple(Quality)
    if state.get(f"{prefix}.quality") not in offered:
        state[f"{prefix}.quality"] = offered[0].value
    quality = Quality(
        st.segmented_control(
            "Quality",
            [q.value for q in offered],
            format_func=lambda q: f"{QUALITY_TIERS[Quality(q)].label} · {starting_steps(style, Quality(q))} steps",
            key=f"{prefix}.quality",
            on_change=apply_quality_defaults,
            args=(prefix, style),
        )
        or offered[0].value
    )
    tier = QUALITY_TIERS[quality]
    state.setdefault(f"{prefix}.steps", starting_steps(style, quality))
    if state[f"{prefix}.steps"] > tier.max_steps:
        state[f"{prefix}.steps"] = min(starting_steps(style, quality), tier.max_steps)
    noise_level = DEFAULT_NOISE_LEVEL
    with st.expander("Advanced"):
        steps = st.slider(
            "Steps",
            min_value=1,
            max_value=tier.max_steps,
            help="Every step runs in an edit."
            if editing
            else "Schedule length; from a source, about steps × strength run (the button says how many).",
            key=f"{prefix}.steps",
        )
        guidance = st.slider(
            "Guidance",
            **limits("guidance"),
            step=GUIDANCE_STEP,
            help=guidance_help(family),
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
        # The model is left empty: the catalogue names the ControlNet for the guide (studio.catalogue.requests).
        control = ControlParams(model="", guide=guide, conditioning_scale=scale, low_threshold=low, high_threshold=high)
        if source is not None and st.button("Show the guide", key=f"{prefix}.show_guide"):
            st.image(_guide_preview(source.upload, control, seed), caption=f"{guide.label} guide", width="content")
        return control


def lora_settings(
    prefix: str, catalogue: Catalogue, config: Settings, style: Style | None
) -> tuple[tuple[str, float], ...]:
    """Up to MAX_LORAS of the catalogue's LoRAs for the style's model family, each with a weight: (name, weight)."""
    family = style.family if style is not None else configured_family(config)
    offered = catalogue.loras_for(family)
    with st.expander("LoRAs"):
        if isinstance(style, KitStyle):  # the kit's own, pinned by hash: they run with it, as they are
            loras = KitSettings.from_dict(style.brand_kit.settings).loras
            pinned = ", ".join(f"{lora.name} × {lora.weight:g}" for lora in loras) or "none"
            st.caption(f"The brand kit runs its own LoRAs, pinned by file hash: {pinned}.")
            return ()
        if not offered:
            st.caption(f"The catalogue has no LoRAs for {FAMILIES[family].label} models.")
            return ()
        about = {entry.name: entry.about for entry in offered}
        # A LoRA chosen for another style's family is dropped, not kept invisibly.
        key = f"{prefix}.loras"
        st.session_state[key] = [name for name in st.session_state.get(key, []) if name in about]
        chosen = st.multiselect(
            f"Add up to {MAX_LORAS}",
            list(about),
            max_selections=MAX_LORAS,
            help="Each LoRA shifts the model towards what it was trained on; its weight says how far (0: not at all, "
            "negative: away from it). Recipes record each one's file hash.",
            key=key,
        )
        loras = []
        for name in chosen:
            weight_key = f"{prefix}.lora_weight.{name}"
            st.session_state.setdefault(weight_key, DEFAULT_LORA_WEIGHT)  # through the state: recipes set it too
            weight = st.slider(
                f"Weight · {name}",
                **limits("lora_weight"),
                step=LORA_WEIGHT_STEP,
                help=about[name] or None,
                key=weight_key,
            )
            loras.append((name, float(weight)))
        return tuple(loras)


def _guide_preview(upload: ValidatedImage, control: ControlParams, seed: int) -> Image.Image:
    from pipelines import import_model_stack

    import_model_stack()  # controlnet-aux imports torch: only when asked
    from pipelines.guides import make_guide

    preview = upload.image.copy()
    preview.thumbnail((GUIDE_PREVIEW_SIDE, GUIDE_PREVIEW_SIDE))
    with st.spinner("Making the guide…"):
        return make_guide(preview, control, seed=seed)
