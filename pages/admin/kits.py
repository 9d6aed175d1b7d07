"""Admin · Brand kits: a team's kits (a model, LoRAs with weights pinned by hash, an optional reference image, a
prompt template, a negative prompt and defaults); create, change or delete one, each in the audit log."""

import streamlit as st

from pipelines.params import MAX_LORAS, MAX_PROMPT_CHARS
from studio.accounts import admin
from studio.billing.pricing import QUALITY_TIERS, Quality
from studio.catalogue.styles import ModelKind
from studio.db.tables import Role
from studio.kits.access import kits_of_team
from studio.kits.admin import delete_kit, save_kit
from studio.kits.settings import REFERENCE_SCALE, KitSettings
from studio.media.validation import validate_image_bytes
from studio.web import app, auth, form, refusals, styles
from studio.web.text import plain

NEW = 0  # the kit picker's "new kit" choice
DONE_KEY, SELECT_KEY = "kits.done", "kits.select"  # what the last action said, and the kit to show after it


def done(message: str, *, select: int) -> None:
    """Show `message` over the page as it is after the change, with the kit `select` chosen."""
    st.session_state[DONE_KEY], st.session_state[SELECT_KEY] = message, select
    st.rerun()


actor = auth.require_user(Role.admin)
config = app.settings()
catalogue = styles.catalogue_or_stop(config)

st.title("Brand kits")
if message := st.session_state.pop(DONE_KEY, None):
    st.success(plain(message))
if (selected := st.session_state.pop(SELECT_KEY, None)) is not None:
    st.session_state["kits.kit"] = selected
st.caption(
    "A kit gives a team one look: its members see it first in the style picker (Transform, Inpaint, Batch), and "
    "other teams never see it. Its LoRAs are pinned by file hash when you save: a changed file is refused."
)
with app.db_session() as session:
    teams = {team.id: team for team in admin.list_teams(session=session)}
if not teams:
    st.info("Create a team first (Admin · Teams).")
    st.stop()
team_id = st.selectbox("Team", list(teams), format_func=lambda i: teams[i].name, key="kits.team")
with app.db_session() as session:
    kits = {kit.id: kit for kit in kits_of_team(session=session, team_id=team_id)}
if kits:
    st.dataframe(
        [
            {
                "Kit": kit.name,
                "Model": kit.settings["model"],
                "LoRAs": ", ".join(f"{lora['name']} × {lora['weight']:g}" for lora in kit.settings["loras"]) or "—",
                "Reference image": "yes" if kit.settings.get("reference") else "—",
                "Prompt template": kit.settings["prompt_template"],
            }
            for kit in kits.values()
        ],
        hide_index=True,
    )
kit_id = st.selectbox(
    "Kit", [NEW, *kits], format_func=lambda i: "New kit" if i == NEW else kits[i].name, key="kits.kit"
)
current = KitSettings.from_dict(kits[kit_id].settings) if kit_id != NEW else None
key = f"kits.{team_id}.{kit_id}"  # each kit's fields start from its own values

name = st.text_input("Name", value=kits[kit_id].name if current else "", key=f"{key}.name")
models = [m.name for m in catalogue.models.values() if m.kind is ModelKind.sd and m.family_info.pipelines.img2img]
model = st.selectbox(
    "Model",
    models,
    index=models.index(current.model) if current and current.model in models else 0,
    format_func=lambda m: f"{m} · {catalogue.models[m].family_info.label}",
    key=f"{key}.model",
)
template = st.text_input(
    "Prompt template",
    value=current.prompt_template if current else "{prompt}",
    max_chars=MAX_PROMPT_CHARS,
    help="The member's words go where {prompt} is.",
    key=f"{key}.template",
)
negative = st.text_input(
    "Negative prompt", value=current.negative_prompt if current else "", max_chars=MAX_PROMPT_CHARS, key=f"{key}.neg"
)
strength = st.slider(
    "Strength",
    **form.limits("strength"),
    step=form.STRENGTH_STEP,
    value=current.strength if current else form.DEFAULT_STRENGTH,
    key=f"{key}.strength",
)
guidance = st.slider(
    "Guidance",
    **form.limits("guidance"),
    step=form.GUIDANCE_STEP,
    value=current.guidance if current else form.DEFAULT_GUIDANCE,
    key=f"{key}.guidance",
)
quality = Quality(
    st.selectbox(
        "Quality",
        [q.value for q in Quality],
        index=list(Quality).index(current.quality) if current else 0,
        format_func=lambda q: QUALITY_TIERS[Quality(q)].label,
        key=f"{key}.quality",
    )
)
steps = st.slider(
    "Steps",
    min_value=1,
    max_value=QUALITY_TIERS[quality].max_steps,
    value=min(current.steps if current else QUALITY_TIERS[quality].steps, QUALITY_TIERS[quality].max_steps),
    key=f"{key}.steps",
)
offered = [entry.name for entry in catalogue.loras_for(catalogue.models[model].family)]
chosen = st.multiselect(
    f"LoRAs (up to {MAX_LORAS})",
    offered,
    default=[lora.name for lora in current.loras if lora.name in offered] if current else [],
    max_selections=MAX_LORAS,
    key=f"{key}.loras",
)
pinned = {lora.name: lora.weight for lora in current.loras} if current else {}
loras = [
    (
        lora,
        st.slider(
            f"Weight · {lora}",
            **form.limits("lora_weight"),
            step=form.LORA_WEIGHT_STEP,
            value=pinned.get(lora, form.DEFAULT_LORA_WEIGHT),
            key=f"{key}.weight.{lora}",
        ),
    )
    for lora in chosen
]
upload = st.file_uploader("Reference image (optional)", type=["jpg", "jpeg", "png", "webp"], key=f"{key}.reference")
keep = True
if current is not None and current.reference is not None:
    keep = st.checkbox("Keep the kit's reference image", value=True, key=f"{key}.keep_reference")
scale = st.slider(
    "Reference scale",
    min_value=REFERENCE_SCALE[0],
    max_value=REFERENCE_SCALE[1],
    step=0.05,
    value=current.reference.scale if current and current.reference else 0.5,
    help="How strongly results follow the reference image (IP-Adapter). Kits with one run once the studio has it.",
    key=f"{key}.scale",
)

if st.button("Save kit", type="primary", key="kits.save"):
    image = refusals.attempt(lambda: validate_image_bytes(upload.getvalue())) if upload is not None else None
    if upload is None or image is not None:
        saved = refusals.admin_action(
            save_kit,
            actor=actor,
            config=config,
            catalogue=catalogue,
            store=app.asset_store(),
            team_id=team_id,
            kit_id=None if kit_id == NEW else kit_id,
            name=name,
            model=model,
            prompt_template=template,
            negative_prompt=negative,
            strength=strength,
            guidance=guidance,
            quality=quality,
            steps=steps,
            loras=loras,
            reference_image=image,
            reference_scale=scale,
            keep_reference=keep,
        )
        if saved is not None:
            done(f"Saved the kit {saved.name} for {teams[team_id].name}.", select=saved.id)
deleting = kit_id != NEW and st.button("Delete kit", key="kits.delete")
if deleting and (deleted := refusals.admin_action(delete_kit, actor=actor, kit_id=kit_id)) is not None:
    done(f"Deleted the kit {deleted}.", select=NEW)
