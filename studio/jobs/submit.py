"""Submitting work: price, charge and queue a job, a sweep's cells or a batch's images, all in one transaction.

A refused submit (bad parameters or mask, a source too big to upscale, more jobs queued or running than one
person may have, not enough credits, a team over its budget) leaves no row, no file and no charge. Jobs join the
queue's lanes and rounds here (studio.jobs.fair_queue). The same idempotency key returns the jobs it created the first
time, charging nothing again. Call these with a session from `studio.db.engine.write_session`: on SQLite each
call is one `BEGIN IMMEDIATE` transaction; on PostgreSQL the payer's and team's rows are locked.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from PIL import Image
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from pipelines.errors import PipelineInputError
from pipelines.families import FAMILIES
from pipelines.masks import check_mask
from pipelines.params import MAX_SWEEP_MEMBERS, Task, check_upscale_size
from studio.billing.budgets import check_team_budget
from studio.billing.credits import InsufficientCredits, reserve, spendable
from studio.billing.plans import PLANS, allocate_monthly, queue_priority
from studio.billing.pricing import Price, price
from studio.catalogue.requests import JobRequest
from studio.catalogue.visibility import refuse_hidden
from studio.config import Settings
from studio.db.limits import clipped_text
from studio.db.tables import Asset, AssetKind, Job, User, utcnow
from studio.errors import Refused
from studio.jobs.fair_queue import check_job_limit, next_round, queue_lane
from studio.kits.access import refuse_foreign_kits
from studio.media.staging import StagedImage, expired
from studio.media.storage import AssetStore, sha256_hex
from studio.media.validation import ValidatedImage

MAX_BATCH_IMAGES = 200  # per submit; larger catalogues go in several batches (or through the CLI)


def quote(*, settings: Settings, request: JobRequest, width: int, height: int) -> Price:
    """The price of `request` on a width×height source: the result's size decides high resolution, and a model
    renders at most its family's cap (Family.max_side: SD 1.x 1024 px, SDXL 2048) and pixel budget (the editors:
    about 1 MP), whatever the studio allows. Expanding to a format is priced as inpainting the canvas it makes
    (Refused when the format cannot hold it)."""
    max_side = settings.max_output_side
    width, height = request.canvas_size(width, height)
    if request.task.upscale_factor is None:
        # The size the family renders (price() keeps it: its sides are within max_side and multiples of 8).
        width, height = FAMILIES[request.family].output_size(width, height, max_side)
        max_side = max(width, height)
    return price(
        base=request.base_credits,
        quality=request.quality,
        width=width,
        height=height,
        max_side=max_side,
        upscale_factor=request.task.upscale_factor,
    )


def submit_job(
    *,
    session: Session,
    store: AssetStore,
    settings: Settings,
    user: User,
    upload: ValidatedImage,
    original_name: str | None,
    request: JobRequest,
    mask: Image.Image | None = None,
    references: Sequence[ValidatedImage] = (),
    reference_image: ValidatedImage | None = None,
    idempotency_key: str | None = None,
    now: datetime | None = None,
) -> Job:
    """Price, charge and queue a job in one transaction.

    `mask` ("L", the upload's size, 255 = repaint; see pipelines.masks) goes with an inpaint request, or with an
    edit on an editor that restricts edits to a mask. `references` are an edit's reference images, the ones
    `request.references` names by hash; they are stored as the user's assets. `reference_image` is the image
    `request.reference` names for its IP-Adapter (validated as uploads are), stored as the user's asset; without
    it, that image must already be in the store (a brand kit's, a re-run's).
    The same idempotency key returns the job it created the first time, charging nothing again.
    A refused submit (bad parameters or mask, a source too big to upscale, not enough credits)
    leaves no row, no file and no charge.
    """
    [job] = _submit(
        session,
        store,
        settings,
        user,
        upload,
        original_name,
        [request],
        mask,
        idempotency_key,
        now,
        references,
        reference_image,
    )
    return job


def submit_sweep(
    *,
    session: Session,
    store: AssetStore,
    settings: Settings,
    user: User,
    upload: ValidatedImage,
    original_name: str | None,
    requests: list[JobRequest],
    mask: Image.Image | None = None,
    idempotency_key: str | None = None,
    now: datetime | None = None,
) -> list[Job]:
    """Queue the cells of a strength sweep (studio.sweeps) as one job each, all or none, in one transaction.

    Each cell is priced and charged on its own (a failed cell refunds only itself); they share a
    sweep_id, so a worker that claims one claims them all and runs them in one denoising pass (an edit's cells:
    one after another). A sweep takes no reference images.
    """
    if not 1 <= len(requests) <= MAX_SWEEP_MEMBERS:
        raise Refused(f"A sweep has 1 to {MAX_SWEEP_MEMBERS} cells, got {len(requests)}.")
    if any(request.spec.outpaint is not None for request in requests):
        # Its one-pass engine (pipelines.sweep) renders the source as it is, not a canvas.
        raise Refused("A sweep does not expand to a format: expand on the Expand page. Nothing was charged.")
    if any(request.reference is not None for request in requests):
        raise Refused("A sweep takes no reference image yet: remove it to sweep. Nothing was charged.")
    return _submit(
        session, store, settings, user, upload, original_name, requests, mask, idempotency_key, now, sweep=True
    )


def _submit(
    session: Session,
    store: AssetStore,
    settings: Settings,
    user: User,
    upload: ValidatedImage,
    original_name: str | None,
    requests: list[JobRequest],
    mask: Image.Image | None,
    idempotency_key: str | None,
    now: datetime | None,
    references: Sequence[ValidatedImage] = (),
    reference_image: ValidatedImage | None = None,
    *,
    sweep: bool = False,
) -> list[Job]:
    now = now or utcnow()
    if idempotency_key is not None and (existing := _jobs_for_key(session, idempotency_key, user)):
        return existing
    if len({(request.model, request.family) for request in requests}) > 1:
        raise Refused("A sweep's cells run in one pass on one model; these name several. Nothing was charged.")
    for request in requests:
        request.check()
        request.check_source(upload.width, upload.height)
        if (factor := request.task.upscale_factor) is not None:
            try:
                check_upscale_size(upload.width, upload.height, factor)
            except PipelineInputError as exc:
                raise Refused(str(exc)) from exc
    refuse_hidden(session=session, requests=requests)
    refuse_foreign_kits(session=session, user=user, requests=requests)
    mask_png = _checked_mask_png(requests[0], mask, upload)
    reference_files = _checked_references(requests[0], references)
    ip_reference = _checked_reference(store, requests[0], reference_image)
    prices = [quote(settings=settings, request=r, width=upload.width, height=upload.height).credits for r in requests]
    cost = sum(prices)

    _lock_payer(session, user)
    check_job_limit(session=session, user_id=user.id, adding=len(requests), limit=settings.max_jobs_per_user)
    check_team_budget(session=session, user=user, cost=cost, now=now)
    allocate_monthly(session=session, user=user, now=now)
    if len(requests) > 1 and (available := spendable(session=session, user=user, now=now).total) < cost:
        raise Refused(
            f"Not enough credits: these {len(requests)} cells cost {cost} together, you can spend {available}. "
            "Nothing was charged."
        )
    files = [_InMemory(upload.png_bytes)] + ([_InMemory(mask_png)] if mask_png is not None else [])
    source = _asset(user, AssetKind.source, files[0], upload.width, upload.height, now, original_name)
    mask_asset = _asset(user, AssetKind.mask, files[1], upload.width, upload.height, now) if mask_png else None
    session.add(source)
    if mask_asset is not None:
        session.add(mask_asset)
    for number, (file, image) in enumerate(zip(reference_files, references, strict=True), start=1):
        # Sources of the user's library: a recipe names them by hash, and a re-run finds them there.
        session.add(_asset(user, AssetKind.source, file, image.width, image.height, now, f"reference {number}"))
    files += reference_files
    if ip_reference is not None:
        file, image = ip_reference
        session.add(_asset(user, AssetKind.source, file, image.width, image.height, now, "reference image"))
        files.append(file)
    session.flush()
    sweep_id = uuid.uuid4().hex if sweep else None
    interactive = queue_lane(priority=queue_priority(user), batch=False)
    # A sweep's cells are claimed together: one round for all of them.
    fair_tag = next_round(session=session, user_id=user.id, lane=interactive)
    jobs = [
        _job_row(
            request,
            price,
            user,
            source,
            mask_asset,
            now,
            lane=interactive,
            fair_tag=fair_tag,
            sweep_id=sweep_id,
            # The key names the submit: on the first job, which leads back to the others through sweep_id.
            idempotency_key=idempotency_key if index == 0 else None,
        )
        for index, (request, price) in enumerate(zip(requests, prices, strict=True))
    ]
    return _reserve_and_commit(session, store, user, jobs, files, idempotency_key, now)


def submit_batch(
    *,
    session: Session,
    store: AssetStore,
    settings: Settings,
    user: User,
    images: list[StagedImage],
    requests: list[JobRequest],
    masks: list[StagedImage] | None = None,
    idempotency_key: str | None = None,
    now: datetime | None = None,
) -> list[Job]:
    """Queue one job per image (`requests[i]` for `images[i]`: one recipe, the seed may differ), all or none.

    Batches are a Pro feature. Each job is priced, charged and refunded on its own, so one image that
    fails gives back only its own credits; the jobs share a batch_id for progress and downloads. The images
    are staged on disk (studio.batches.uploads): they are copied into the store one at a time. An inpainting
    batch gives each image its own mask (`masks[i]`, staged "L" PNGs of the image's size, checked when read).
    """
    now = now or utcnow()
    if not PLANS[user.plan].batch:
        raise Refused(
            "Batches are part of the Pro plans (Pro monthly or annual): on Free, transform images one at a time. "
            "Nothing was charged."
        )
    if not 1 <= len(images) <= MAX_BATCH_IMAGES or len(requests) != len(images):
        raise Refused(f"A batch has 1 to {MAX_BATCH_IMAGES} images, one request each; got {len(images)}.")
    if masks is not None and len(masks) != len(images):
        raise Refused(f"A masked batch has one mask per image; got {len(masks)} masks for {len(images)} images.")
    if idempotency_key is not None and (existing := _jobs_for_key(session, idempotency_key, user)):
        return existing
    if missing := next((image for image in [*images, *(masks or [])] if not image.path.is_file()), None):
        raise expired(missing)
    prices = []
    for index, (image, request) in enumerate(zip(images, requests, strict=True)):
        request.check()
        if request.references:
            raise Refused("A batch applies one recipe to many images; edits with reference images run one at a time.")
        _checked_reference(store, request, None)  # a batch's reference image is one already stored (a brand kit's)
        _check_batch_mask(image, masks[index] if masks is not None else None, request)
        try:
            request.check_source(image.width, image.height)
        except Refused as exc:
            raise Refused(f"{image.name}: {exc}") from exc
        if (factor := request.task.upscale_factor) is not None:
            try:
                check_upscale_size(image.width, image.height, factor)
            except PipelineInputError as exc:
                raise Refused(f"{image.name}: {exc}") from exc
        prices.append(quote(settings=settings, request=request, width=image.width, height=image.height).credits)
    refuse_hidden(session=session, requests=requests)
    refuse_foreign_kits(session=session, user=user, requests=requests)
    cost = sum(prices)

    _lock_payer(session, user)
    check_job_limit(session=session, user_id=user.id, adding=len(images), limit=settings.max_jobs_per_user)
    check_team_budget(session=session, user=user, cost=cost, now=now)
    allocate_monthly(session=session, user=user, now=now)
    if (available := spendable(session=session, user=user, now=now).total) < cost:
        raise Refused(
            f"Not enough credits: these {len(images)} images cost {cost} together, you can spend {available}. "
            "Nothing was charged."
        )
    sources = [_asset(user, AssetKind.source, image, image.width, image.height, now, image.name) for image in images]
    mask_assets = [_asset(user, AssetKind.mask, mask, mask.width, mask.height, now) for mask in masks or []]
    session.add_all(sources + mask_assets)
    session.flush()
    batch_id = uuid.uuid4().hex
    batch_lane = queue_lane(priority=queue_priority(user), batch=True)
    # One image per round: the batch's images take turns with other people's work instead of going first.
    first_round = next_round(session=session, user_id=user.id, lane=batch_lane)
    jobs = [
        _job_row(
            request,
            price,
            user,
            source,
            mask_assets[index] if mask_assets else None,
            now,
            lane=batch_lane,
            fair_tag=first_round + index,
            batch_id=batch_id,
            idempotency_key=idempotency_key if index == 0 else None,
        )
        for index, (request, price, source) in enumerate(zip(requests, prices, sources, strict=True))
    ]
    return _reserve_and_commit(session, store, user, jobs, [*images, *(masks or [])], idempotency_key, now)


def _check_batch_mask(image: StagedImage, mask: StagedImage | None, request: JobRequest) -> None:
    """A batch's images take masks exactly when its recipe inpaints (not when it expands to a format), each its
    image's size."""
    if mask is None and request.takes_mask:
        raise Refused(
            "Inpainting a batch needs a mask per image: put name.mask.png beside each name.png in the ZIP. "
            "Nothing was charged."
        )
    if mask is not None and not request.takes_mask:
        raise Refused("This batch carries masks, so it inpaints: choose an image-to-image style or your own settings.")
    if mask is not None and (mask.width, mask.height) != (image.width, image.height):
        raise Refused(
            f"{image.name}: its mask is {mask.width}×{mask.height}, the image {image.width}×{image.height}. "
            "Nothing was charged."
        )


def _lock_payer(session: Session, user: User) -> None:
    """Hold the user's row until the submit commits, so two submits never both spend the same credits.

    SQLite's write transaction (BEGIN IMMEDIATE) already serialises submits; on PostgreSQL this
    `SELECT … FOR UPDATE` does (the team's row is locked next, by check_team_budget: always user, then team).
    """
    session.exec(select(User.id).where(User.id == user.id).with_for_update()).first()


def _job_row(
    request: JobRequest,
    price: int,
    user: User,
    source: Asset,
    mask: Asset | None,
    now: datetime,
    *,
    lane: int,
    fair_tag: int,
    sweep_id: str | None = None,
    batch_id: str | None = None,
    idempotency_key: str | None = None,
) -> Job:
    return Job(
        task=request.task.value,
        model=request.model,
        style=request.style,
        params=request.job_params(),
        quality=request.quality.value,
        cost=price,
        user_id=user.id,
        team_id=user.team_id,
        priority=queue_priority(user),
        lane=lane,
        fair_tag=fair_tag,
        source_asset_id=source.id,
        mask_asset_id=mask.id if mask is not None else None,
        sweep_id=sweep_id,
        batch_id=batch_id,
        idempotency_key=idempotency_key,
        created_at=now,
    )


def _reserve_and_commit(
    session: Session,
    store: AssetStore,
    user: User,
    jobs: list[Job],
    files: list[_File],
    idempotency_key: str | None,
    now: datetime,
) -> list[Job]:
    """Charge every job and store the files (read one at a time), then commit: all or nothing."""
    session.add_all(jobs)
    try:
        session.flush()
        for job in jobs:
            reserve(session=session, user=user, job_id=job.id, cost=job.cost, now=now)
        # Files last, so a refused submit never stores one.
        for file in files:
            store.put(file.read())
        session.commit()
    except InsufficientCredits:
        session.rollback()
        raise
    except IntegrityError:
        # Another submit with the same key won the race (PostgreSQL; SQLite serialises them).
        session.rollback()
        if idempotency_key is not None and (existing := _jobs_for_key(session, idempotency_key, user)):
            return existing
        raise
    return jobs


def _checked_references(request: JobRequest, references: Sequence[ValidatedImage]) -> list[_InMemory]:
    """An edit's reference images as files to store, after checking they are the ones the request names (by hash,
    in order) and that its model's family takes their size."""
    files = [_InMemory(image.png_bytes) for image in references]
    if [file.sha256 for file in files] != list(request.references):
        raise Refused("The reference images sent are not the ones this edit names. Nothing was charged.")
    for number, image in enumerate(references, start=1):
        try:
            FAMILIES[request.family].check_source(image.width, image.height, model=request.catalogue_model or "")
        except PipelineInputError as exc:
            raise Refused(f"Reference image {number}: {exc} Nothing was charged.") from exc
    return files


def _checked_reference(
    store: AssetStore, request: JobRequest, image: ValidatedImage | None
) -> tuple[_InMemory, ValidatedImage] | None:
    """The reference image an IP-Adapter reads, as a file to store (None: nothing to store), after checking it is the
    one the request names; without the image, the one it names must already be stored."""
    if request.reference is None:
        if image is not None:
            raise Refused("A reference image goes with a request that names it. Nothing was charged.")
        return None
    if image is None:
        if not store.exists(request.reference.image_sha256):
            raise Refused("The reference image is no longer stored here: upload it again. Nothing was charged.")
        return None
    file = _InMemory(image.png_bytes)
    if file.sha256 != request.reference.image_sha256:
        raise Refused("The reference image sent is not the one this request names. Nothing was charged.")
    return file, image


def _checked_mask_png(request: JobRequest, mask: Image.Image | None, upload: ValidatedImage) -> bytes | None:
    """The inpaint (or masked edit's) mask as PNG bytes, after checking it fits the request and the source."""
    if request.task == Task.edit:
        family = FAMILIES[request.family]
        if mask is not None and family.pipelines.masked_edit is None:
            raise Refused(f"{family.label} edits the whole image only: remove the mask. Nothing was charged.")
    elif (mask is not None) != request.takes_mask:
        raise Refused("Inpainting needs a mask, and only inpainting takes one (expanding to a format makes its own).")
    if mask is None:
        return None
    if mask.mode != "L" or mask.size != (upload.width, upload.height):
        raise Refused(
            f"The mask must be greyscale and the source's size ({upload.width}×{upload.height}); "
            f"got {mask.mode} {mask.width}×{mask.height}."
        )
    try:
        check_mask(mask)
    except PipelineInputError as exc:
        raise Refused(str(exc)) from exc
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    return buffer.getvalue()


_ORIGINAL_NAME = Asset.__table__.c.original_name


@dataclass(frozen=True)
class _InMemory:
    """A file to store that is already in memory (a single upload, a mask)."""

    data: bytes

    @property
    def sha256(self) -> str:
        return sha256_hex(self.data)

    @property
    def size_bytes(self) -> int:
        return len(self.data)

    def read(self) -> bytes:
        return self.data


_File = _InMemory | StagedImage  # what a submit stores: sha256, size_bytes, read()


def _asset(
    user: User,
    kind: AssetKind,
    file: _File,
    width: int,
    height: int,
    now: datetime,
    original_name: str | None = None,
) -> Asset:
    return Asset(
        user_id=user.id,
        kind=kind,
        sha256=file.sha256,
        width=width,
        height=height,
        size_bytes=file.size_bytes,
        # A file's name as the browser or the ZIP gave it: any length (a ZIP member's can be 64 KiB).
        original_name=None if original_name is None else clipped_text(original_name, column=_ORIGINAL_NAME),
        created_at=now,
    )


def _jobs_for_key(session: Session, key: str, user: User) -> list[Job]:
    """The jobs an earlier submit with this idempotency key created (a sweep's cells, or one job)."""
    job = session.exec(select(Job).where(Job.idempotency_key == key)).first()
    if job is None:
        return []
    if job.user_id != user.id:
        raise Refused("That idempotency key belongs to another user's job.")
    if job.sweep_id is not None:
        return list(session.exec(select(Job).where(Job.sweep_id == job.sweep_id).order_by(col(Job.id))).all())
    if job.batch_id is not None:
        return list(session.exec(select(Job).where(Job.batch_id == job.batch_id).order_by(col(Job.id))).all())
    return [job]
