"""Team budgets through the real submit path (studio.jobs.submit.submit_job) on a fake clock."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import func, select

from pipelines.params import Img2ImgParams
from studio.billing.budgets import BudgetStatus, all_budget_statuses, team_spend, user_budget_status
from studio.billing.credits import Account, add_credits
from studio.billing.pricing import Quality
from studio.catalogue.requests import custom_request
from studio.db.engine import session_for, write_session
from studio.db.tables import Asset, CreditEntry, CreditKind, Job, JobStatus, Team, User
from studio.errors import Refused
from studio.jobs.leases import cancel_job, claim_next, fail_job
from studio.jobs.submit import submit_job
from studio.media.storage import AssetStore
from studio.media.validation import validate_image_bytes
from tests.support import png_bytes

pytestmark = pytest.mark.both_databases

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
UPLOAD = validate_image_bytes(png_bytes(256, 256))


class Budgets:
    def __init__(self, settings):
        self.settings = settings
        self.url = settings.database_url

    def team(self, name, budget=None, alert=80):
        with session_for(self.url) as session:
            team = Team(name=name, monthly_budget=budget, budget_alert_percent=alert)
            session.add(team)
            session.commit()
            return team

    def member(self, name, team=None, credits=100, **fields):
        with write_session(self.url) as session:
            user = User(
                username=name,
                email=f"{name}@x",
                display_name=name,
                password_hash="-",
                team_id=team.id if team else None,
                **fields,
            )
            session.add(user)
            session.flush()
            add_credits(
                session=session,
                account=Account(user_id=user.id),
                amount=credits,
                kind=CreditKind.grant,
                now=T0 - timedelta(days=30),
                reason="test",
            )
            session.commit()
            return user

    def submit(self, user, cost=1, now=T0):
        """A job of `cost` credits (the configured model's base cost, standard quality)."""
        settings = replace(self.settings, model_cost=cost)
        with write_session(self.url) as session:
            return submit_job(
                session=session,
                store=AssetStore(self.settings.assets_dir),
                settings=settings,
                user=user,
                upload=UPLOAD,
                original_name="a.png",
                request=custom_request(
                    settings=settings, params=Img2ImgParams(prompt="x", strength=0.5, steps=4), quality=Quality.standard
                ),
                now=now,
            )

    def fail_next(self, now=T0):
        with write_session(self.url) as session:
            job = claim_next(session=session, worker="w", now=now)
        with write_session(self.url) as session:
            fail_job(session=session, job_id=job.id, worker="w", attempt=job.attempt, error="boom", now=now)
        return job

    def spend(self, team, now=T0):
        with session_for(self.url) as session:
            return team_spend(session=session, team_id=team.id, now=now)

    def status(self, user, now=T0):
        with session_for(self.url) as session:
            return user_budget_status(session=session, user=user, now=now)

    def counts(self):
        with session_for(self.url) as session:
            return tuple(session.exec(select(func.count()).select_from(m)).one() for m in (Job, Asset, CreditEntry))


@pytest.fixture
def b(studio, studio_settings):
    return Budgets(studio_settings)


def test_a_job_that_would_take_the_team_over_budget_is_refused_naming_budget_and_spend(b):
    design = b.team("Design", budget=5)
    mia, leo = b.member("mia", design), b.member("leo", design)
    b.submit(mia, cost=2)
    b.submit(leo, cost=2)  # every member's jobs count: 4 of 5
    before = b.counts()
    with pytest.raises(Refused) as refused:
        b.submit(mia, cost=2)
    message = str(refused.value)
    assert "Team Design has spent 4 of its 5-credit budget for March 2026" in message
    assert "This job costs 2" in message and "nothing was charged" in message
    assert b.counts() == before  # no job, no asset, no ledger row
    b.submit(mia, cost=1)  # exactly up to the budget is fine
    with pytest.raises(Refused, match="spent 5 of its 5-credit budget"):
        b.submit(leo, cost=1)


def test_refunded_jobs_give_the_budget_back_and_queued_ones_hold_it(b):
    design = b.team("Design", budget=3)
    mia = b.member("mia", design)
    for _ in range(3):
        b.submit(mia)
    assert b.spend(design) == 3  # queued jobs hold their reserve
    with pytest.raises(Refused):
        b.submit(mia)
    b.fail_next()
    assert b.spend(design) == 2
    queued = b.submit(mia)
    with write_session(b.url) as session:
        cancel_job(session=session, job_id=queued.id, user_id=mia.id, now=T0)
    assert b.spend(design) == 2
    b.submit(mia)


def test_the_budget_is_per_calendar_month_of_submission(b):
    design = b.team("Design", budget=2)
    mia = b.member("mia", design)
    last_month = datetime(2026, 2, 28, 23, 0, tzinfo=UTC)
    b.submit(mia, cost=2, now=last_month)
    with pytest.raises(Refused, match="February 2026"):
        b.submit(mia, now=last_month + timedelta(minutes=30))
    assert b.spend(design, now=T0) == 0  # February's job, still queued, does not count in March
    b.submit(mia, cost=2, now=T0)
    assert b.spend(design, now=last_month) == 2 and b.spend(design, now=T0) == 2


def test_jobs_stay_with_the_team_they_were_submitted_in(b):
    design, video = b.team("Design", budget=10), b.team("Video", budget=10)
    mia = b.member("mia", design)
    b.submit(mia, cost=3)
    with session_for(b.url) as session:
        moved = session.get(User, mia.id)
        moved.team_id = video.id
        session.add(moved)
        session.commit()
    b.submit(moved, cost=2)
    assert (b.spend(design), b.spend(video)) == (3, 2)


def test_credits_from_the_team_pool_count_like_personal_ones(b):
    design = b.team("Design", budget=4)
    with write_session(b.url) as session:
        add_credits(
            session=session, account=Account(team_id=design.id), amount=50, kind=CreditKind.grant, now=T0, reason="pool"
        )
        session.commit()
    mia = b.member("mia", design, credits=1, can_use_team_pool=True)
    b.submit(mia, cost=3)  # 1 personal + 2 from the pool
    assert b.spend(design) == 3
    with pytest.raises(Refused, match="spent 3 of its 4-credit budget"):
        b.submit(mia, cost=2)


def test_without_a_team_or_a_budget_nothing_is_refused(b):
    loner = b.member("loner")
    open_team = b.team("Open")
    free = b.member("free", open_team)
    for user in (loner, free):
        b.submit(user, cost=5)
        assert b.status(user) is None
    assert b.spend(open_team) == 5


def test_a_zero_budget_freezes_the_team(b):
    frozen = b.team("Frozen", budget=0)
    mia = b.member("mia", frozen)
    with pytest.raises(Refused, match="spent 0 of its 0-credit budget"):
        b.submit(mia)
    assert b.status(mia).exhausted and b.status(mia).alert


def test_the_alert_starts_at_the_threshold(b):
    design = b.team("Design", budget=10, alert=80)
    mia = b.member("mia", design)
    b.submit(mia, cost=7)
    status = b.status(mia)
    assert (status.spent, status.percent_used, status.alert, status.exhausted) == (7, 70.0, False, False)
    b.submit(mia, cost=1)
    status = b.status(mia)
    assert (status.spent, status.alert, status.exhausted, status.remaining) == (8, True, False, 2)
    b.submit(mia, cost=2)
    assert b.status(mia).exhausted and b.status(mia).remaining == 0
    assert BudgetStatus(1, "x", T0.date(), None, 80, 99).alert is False  # no budget, no alert


def test_spend_is_the_ledger_reserve_plus_refund_rows_of_the_teams_jobs(b):
    design = b.team("Design", budget=100)
    mia, leo = b.member("mia", design), b.member("leo", design)
    for user, cost in ((mia, 2), (leo, 3), (mia, 4), (leo, 1)):
        b.submit(user, cost=cost)
    b.fail_next()  # mia's first job (2) is refunded
    with session_for(b.url) as session:
        net = session.exec(
            select(func.sum(CreditEntry.amount))
            .join(Job, Job.id == CreditEntry.job_id)
            .where(Job.team_id == design.id, CreditEntry.kind.in_([CreditKind.reserve, CreditKind.refund]))
        ).one()
        assert session.exec(select(func.count()).where(Job.status == JobStatus.failed)).one() == 1
    assert b.spend(design) == -net == 8


def test_all_budget_statuses_list_every_team_by_name(b):
    video = b.team("Video", budget=10, alert=50)
    b.team("Design")
    b.submit(b.member("cat", video), cost=5)
    with session_for(b.url) as session:
        statuses = all_budget_statuses(session=session, now=T0)
    assert [(s.team_name, s.budget, s.spent, s.alert) for s in statuses] == [
        ("Design", None, 0, False),
        ("Video", 10, 5, True),
    ]
    assert statuses[1].describe() == "Team Video has spent 5 of its 10-credit budget for March 2026 (50 %)."
