"""From form to job: building the request (refusals shown, not raised), its price, and submitting it."""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st
from PIL import Image

from pipelines.params import (
    ControlParams,
    Img2ImgParams,
    InpaintParams,
    OutpaintParams,
    Task,
)
from studio.billing.credits import spendable
from studio.billing.pricing import Quality
from studio.catalogue.references import ReferenceImage
from studio.catalogue.requests import JobRequest, custom_request, style_request
from studio.catalogue.styles import Catalogue, Style
from studio.config import Settings
from studio.db.tables import User, utcnow
from studio.jobs.submit import quote, submit_job
from studio.kits.requests import KitStyle, kit_request
from studio.media.storage import sha256_hex
from studio.media.validation import ValidatedImage
from studio.web import app, jobs, refusals
from studio.web.sources import Source


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
    outpaint: OutpaintParams | None = None,
    references: Sequence[ValidatedImage] = (),
    loras: Sequence[tuple[str, float]] = (),
    reference: ReferenceImage | None = None,
) -> JobRequest | None:
    """The request of a form (`outpaint` with `inpaint`: expanding to a format; `references`: an edit's reference
    images; `loras`: catalogue LoRAs by name, with their weights; `reference`: an image an IP-Adapter reads), or
    None with the refusal shown."""
    chosen = {"settings": config, "catalogue": catalogue, "params": params, "quality": quality, "inpaint": inpaint}
    chosen |= {"control": control, "outpaint": outpaint}
    if isinstance(style, KitStyle):  # the team's brand kit brings its LoRAs and reference image
        return refusals.attempt(lambda: kit_request(**chosen, kit=style.brand_kit, reference=reference))
    if style is None:
        task = Task.inpaint if inpaint is not None else Task.img2img
        return refusals.attempt(lambda: custom_request(**chosen, task=task, loras=loras, reference=reference))
    return refusals.attempt(
        lambda: style_request(
            **chosen,
            style_id=style.id,
            noise_level=noise_level,
            references=tuple(sha256_hex(reference.png_bytes) for reference in references),
            loras=loras,
            reference=reference,
        )
    )


def price_caption(config: Settings, user: User, request: JobRequest, upload: ValidatedImage) -> None:
    with app.db_session() as session:
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
    references: Sequence[ValidatedImage] = (),
    reference_image: ValidatedImage | None = None,
    job_key: str,
) -> None:
    """Queue the job (the page then shows it under `job_key`), or show why it was refused. `reference_image`: the
    image `request.reference` names, to store with it."""
    key_recipe = request.job_params() | {"model": request.model, "quality": request.quality.value}
    submitted = refusals.attempt(
        lambda: jobs.submit_from_page(
            submit_job,
            config=config,
            user=user,
            source=source,
            mask=mask,
            key_recipe=key_recipe,
            request=request,
            references=list(references),
            reference_image=reference_image,
        )
    )
    if submitted is not None:
        st.session_state[job_key] = submitted[0].id
