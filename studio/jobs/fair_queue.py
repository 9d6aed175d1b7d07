"""The queue's order: lanes by plan and kind of work, then rounds that take turns between users.

Lanes: a job waits in lane −2 × its plan's priority, +1 if it is a batch item; lower lanes run first. So Pro
work runs before Free work (as before), and within a plan a person's Transform, Inpaint or Sweep (someone is
watching the page) runs before batch items.

Rounds: within a lane, jobs run by round (`fair_tag`), then first come first served. The lane's current round
is the lowest one still queued there (when nothing is queued: the highest it ever had, so it never moves
back). A new job joins the current round, or the round after its user's previous job in the lane if that is
later: each of a user's claims (a sweep's cells share one round: they are claimed together) is in a round of
its own, so rounds take turns between users — start-time fair queueing with equal costs. A job submitted with
k of its user's claims still queued ahead of it is at most k + 1 rounds behind the current one, so each other
user gets at most k + 2 claims before it, however long their backlog; a user's next job (k = 0), at most two.
Claims stay one ordered walk of `ix_job_queue` (status, lane, fair_tag, id), with SKIP LOCKED on PostgreSQL.

A job whose worker died goes back to the current round of its lane (`requeue_tag`): its low id runs it first
there, and the round does not move back, which would let newcomers overtake jobs already waiting. Cancelling
a queued job leaves a gap in its user's rounds: that user's later jobs wait a round longer, nobody else's.
"""

from __future__ import annotations

from sqlalchemy import func, or_, union_all
from sqlmodel import Session, col, select

from studio.db.tables import Job, JobStatus
from studio.errors import Refused

ACTIVE = (JobStatus.queued, JobStatus.processing)


def queue_lane(*, priority: int, batch: bool) -> int:
    """The lane a job waits in: lower runs first (Pro interactive −2, Pro batch −1, Free 0 and 1)."""
    return -2 * priority + (1 if batch else 0)


def claim_order() -> tuple:
    """The order in which workers claim queued jobs (walks ix_job_queue)."""
    return (col(Job.lane).asc(), col(Job.fair_tag).asc(), col(Job.id).asc())


def current_round(*, session: Session, lane: int) -> int:
    """The round `lane` is serving: its lowest queued round; with nothing queued, the highest it ever had."""
    head = session.exec(select(func.min(Job.fair_tag)).where(Job.status == JobStatus.queued, Job.lane == lane)).one()
    if head is not None:
        return head
    return session.exec(_highest_round(Job.lane == lane)).one() or 0


def next_round(*, session: Session, user_id: int, lane: int) -> int:
    """The round the user's next job in `lane` joins (a batch's images take the rounds after it, one each).

    Call it with the user's row locked (submits do), so two submits of one user never take the same round.
    """
    last = session.exec(_highest_round(Job.user_id == user_id, Job.lane == lane)).one()
    now_serving = current_round(session=session, lane=lane)
    return now_serving if last is None else max(now_serving, last + 1)


def _highest_round(*conditions):
    """The highest round of the jobs matching `conditions`, whatever their status: the highest of each status's,
    so each is one probe of an index that starts (status, …) or (user_id, status, …), not a walk of the history."""
    per_status = [
        select(func.max(Job.fair_tag).label("round")).where(Job.status == status, *conditions) for status in JobStatus
    ]
    return select(func.max(union_all(*per_status).subquery().c.round))


def requeue_tag(job: Job, current: int) -> int:
    """The round for a job going back to the queue: `current`, its lane's round before any job went back,
    unless the job's own round is later."""
    return max(current, job.fair_tag)


def check_job_limit(*, session: Session, user_id: int, adding: int, limit: int) -> None:
    """Refuse a submit that would give the user more than `limit` jobs queued or running (a sweep or batch whole).

    Call it with the user's row locked, so concurrent submits cannot pass the limit together.
    """
    active = session.exec(
        select(func.count()).select_from(Job).where(Job.user_id == user_id, col(Job.status).in_(ACTIVE))
    ).one()
    if active + adding > limit:
        what = "this job" if adding == 1 else f"these {adding} jobs"
        raise Refused(
            f"You have {active} jobs queued or running, and each person may have at most {limit} at a time; "
            f"{what} would make {active + adding}. Wait for some to finish (or cancel some), then submit again. "
            "Nothing was charged."
        )


def claims_ahead(*, session: Session, job: Job) -> int:
    """How many claims come before `job`'s, in the current queue (a sweep's cells are claimed as one)."""
    first_id = job.id
    if job.sweep_id is not None:  # the sweep is claimed through its first queued cell
        first_id = session.exec(
            select(func.min(Job.id)).where(Job.sweep_id == job.sweep_id, Job.status == JobStatus.queued)
        ).one()
    ahead = select(func.count(Job.id) - func.count(Job.sweep_id) + func.count(func.distinct(Job.sweep_id))).where(
        Job.status == JobStatus.queued,
        or_(
            Job.lane < job.lane,
            (Job.lane == job.lane) & (Job.fair_tag < job.fair_tag),
            (Job.lane == job.lane) & (Job.fair_tag == job.fair_tag) & (col(Job.id) < first_id),
        ),
    )
    if job.sweep_id is not None:
        ahead = ahead.where(or_(col(Job.sweep_id).is_(None), Job.sweep_id != job.sweep_id))
    return int(session.exec(ahead).one())
