"""Queue, credits, plans and pricing on a fake clock (no diffusion: outcomes are reported directly)."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import func, select

from pipelines.params import Img2ImgParams
from studio.accounts.users import create_user, get_user
from studio.billing.credits import Account, InsufficientCredits, adjust, balance, ledger_sum, lots, spendable
from studio.billing.plans import allocate_monthly, month_start
from studio.billing.pricing import Quality, price
from studio.catalogue.requests import custom_request
from studio.db.engine import session_for, write_session
from studio.db.tables import Asset, AssetKind, CreditEntry, CreditKind, Job, JobStatus, Plan, Team
from studio.errors import Refused
from studio.jobs.leases import (
    cancel_job,
    claim_next,
    complete_job,
    fail_job,
    finish_cancelled,
    queue_position,
    reap_expired,
    renew_lease,
)
from studio.jobs.submit import submit_job
from studio.media.storage import AssetStore, sha256_hex
from studio.media.validation import validate_image_bytes
from tests.support import png_bytes

pytestmark = pytest.mark.both_databases

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
PARAMS = Img2ImgParams(prompt="x", strength=0.5, steps=4)
UPLOAD = validate_image_bytes(png_bytes(256, 256))


class Studio:
    def __init__(self, settings):
        self.settings = settings
        self.url = settings.database_url
        self.store = AssetStore(settings.assets_dir)

    def user(self, name, **changes):
        with session_for(self.url) as session:
            user = get_user(session=session, username=name) or create_user(
                session=session, username=name, password="password-123", email=f"{name}@example.com"
            )
            for field, value in changes.items():
                setattr(user, field, value)
            session.add(user)
            session.commit()
            session.refresh(user)
            return user

    def submit(self, user, now=T0, quality=Quality.standard, settings=None, **kwargs):
        with write_session(self.url) as session:
            return submit_job(
                session=session,
                store=self.store,
                settings=settings or self.settings,
                user=user,
                upload=UPLOAD,
                original_name="a.png",
                request=custom_request(settings=settings or self.settings, params=PARAMS, quality=quality),
                now=now,
                **kwargs,
            )

    def claim(self, worker="w1", now=T0):
        with write_session(self.url) as session:
            return claim_next(session=session, worker=worker, now=now)

    def do(self, action, **kwargs):
        """One transaction: queue functions commit themselves; ledger functions leave it to us."""
        with write_session(self.url) as session:
            result = action(session=session, **kwargs)
            session.commit()
            return result

    def job(self, job_id):
        with session_for(self.url) as session:
            return session.get(Job, job_id)

    def balance(self, user=None, team_id=None, now=T0):
        account = Account(user_id=user.id) if user else Account(team_id=team_id)
        with session_for(self.url) as session:
            return balance(session=session, account=account, now=now)

    def ledger(self, job_id):
        with session_for(self.url) as session:
            rows = session.exec(select(CreditEntry).where(CreditEntry.job_id == job_id)).all()
        return sorted((row.kind.value, row.amount) for row in rows)

    def count(self, model):
        with session_for(self.url) as session:
            return session.exec(select(func.count()).select_from(model)).one()


def result_asset(user_id):
    return Asset(user_id=user_id, kind=AssetKind.result, sha256="0" * 64, width=8, height=8, size_bytes=1)


@pytest.fixture
def s(studio, studio_settings):
    return Studio(studio_settings)


def test_submit_charges_the_price_and_queues(s):
    user = s.user("free")
    job = s.submit(user)
    assert job.status is JobStatus.queued and job.cost == 1 and job.priority == 0
    assert s.ledger(job.id) == [("reserve", -1)]
    assert s.balance(user) == 9
    assert s.store.exists(sha256_hex(UPLOAD.png_bytes))


def test_insufficient_credits_refuse_with_cost_and_balance_and_leave_no_trace(s):
    user = s.user("poor")
    s.do(adjust, account=Account(user_id=user.id), amount=-9, reason="test", actor_id=user.id, now=T0)
    before = (s.count(Job), s.count(Asset), s.count(CreditEntry))
    with pytest.raises(Refused, match=r"this job costs 2, your balance is 1\. Nothing was charged"):
        s.submit(user, quality=Quality.ultra)
    assert (s.count(Job), s.count(Asset), s.count(CreditEntry)) == before
    assert not s.settings.assets_dir.exists() or not any(p.is_file() for p in s.settings.assets_dir.rglob("*"))


def test_steps_beyond_the_quality_tier_are_refused(s):
    user = s.user("greedy")
    with (
        pytest.raises(Refused, match="Standard quality covers up to 25 steps"),
        write_session(s.url) as session,
    ):
        submit_job(
            session=session,
            store=s.store,
            settings=s.settings,
            user=user,
            upload=UPLOAD,
            original_name=None,
            request=custom_request(settings=s.settings, params=Img2ImgParams(prompt="x", strength=0.5, steps=50)),
            now=T0,
        )
    assert s.count(Job) == 0


def test_an_idempotency_key_returns_the_same_job_without_a_second_charge(s):
    user, other = s.user("idem"), s.user("other")
    first = s.submit(user, idempotency_key="k1")
    again = s.submit(user, idempotency_key="k1")
    assert again.id == first.id
    assert s.balance(user) == 9 and s.count(Job) == 1
    with pytest.raises(Refused, match="another user"):
        s.submit(other, idempotency_key="k1")


def test_pro_jobs_are_claimed_before_free_ones_fifo_within_a_class(s):
    free, pro = s.user("free"), s.user("pro", plan=Plan.pro_monthly)
    f1, f2 = s.submit(free), s.submit(free)
    p1, p2 = s.submit(pro), s.submit(pro)
    with session_for(s.url) as session:
        assert [queue_position(session=session, job=s.job(j.id)) for j in (p1, p2, f1, f2)] == [1, 2, 3, 4]
    assert [s.claim().id for _ in range(4)] == [p1.id, p2.id, f1.id, f2.id]
    assert s.claim() is None


def test_complete_commits_fail_refunds_and_each_happens_once(s):
    user = s.user("worker-user")
    ok, bad = s.submit(user), s.submit(user)
    ok, bad = s.claim(), s.claim()
    assert s.do(complete_job, job_id=ok.id, worker="w1", attempt=1, result=result_asset(user.id), recipe={}, now=T0)
    assert s.do(fail_job, job_id=bad.id, worker="w1", attempt=1, error="boom", now=T0)
    assert s.ledger(ok.id) == [("commit", 0), ("reserve", -1)]
    assert s.ledger(bad.id) == [("refund", 1), ("reserve", -1)]
    assert s.balance(user) == 9
    # A second report of either outcome is refused and moves nothing.
    assert not s.do(fail_job, job_id=ok.id, worker="w1", attempt=1, error="late", now=T0)
    assert not s.do(fail_job, job_id=bad.id, worker="w1", attempt=1, error="again", now=T0)
    assert s.job(ok.id).status is JobStatus.complete and s.balance(user) == 9


def test_a_stale_worker_cannot_complete_a_job_that_was_reclaimed(s):
    user = s.user("stale")
    job = s.submit(user)
    assert s.claim("w1").attempt == 1
    later = T0 + timedelta(seconds=31)
    assert len(s.do(reap_expired, now=later)) == 1
    assert s.job(job.id).status is JobStatus.queued
    assert s.claim("w2", now=later).attempt == 2
    assert not s.do(renew_lease, job_id=job.id, worker="w1", attempt=1, step=1, total=2, now=later).held
    assert not s.do(
        complete_job, job_id=job.id, worker="w1", attempt=1, result=result_asset(user.id), recipe={}, now=later
    )
    assert s.ledger(job.id) == [("reserve", -1)] and s.count(Asset) == 1
    assert s.do(complete_job, job_id=job.id, worker="w2", attempt=2, result=result_asset(user.id), recipe={}, now=later)
    assert s.ledger(job.id) == [("commit", 0), ("reserve", -1)]


def test_after_the_last_attempt_the_reaper_fails_and_refunds(s):
    user = s.user("unlucky")
    job = s.submit(user)
    now = T0
    for attempt in (1, 2, 3):
        assert s.claim(f"w{attempt}", now=now).attempt == attempt
        now += timedelta(seconds=31)
        s.do(reap_expired, now=now)
    job = s.job(job.id)
    assert job.status is JobStatus.failed and "3 times" in job.error
    assert s.ledger(job.id) == [("refund", 1), ("reserve", -1)]


def test_heartbeats_renew_the_lease(s):
    s.submit(s.user("alive"))
    job = s.claim()
    assert s.do(
        renew_lease, job_id=job.id, worker="w1", attempt=1, step=1, total=2, now=T0 + timedelta(seconds=25)
    ).held
    assert s.do(reap_expired, now=T0 + timedelta(seconds=40)) == []
    assert s.job(job.id).progress_step == 1


def test_cancel_queued_refunds_at_once_and_running_stops_at_the_next_step(s):
    user, stranger = s.user("owner"), s.user("stranger")
    queued, running = s.submit(user), s.submit(user)
    s.claim()  # takes `queued` (older)
    queued, running = running, queued  # the claimed one is running
    with pytest.raises(LookupError):
        s.do(cancel_job, job_id=queued.id, user_id=stranger.id, now=T0)
    assert s.do(cancel_job, job_id=queued.id, user_id=user.id, now=T0).status is JobStatus.cancelled
    assert s.ledger(queued.id) == [("refund", 1), ("reserve", -1)]
    assert s.do(cancel_job, job_id=running.id, user_id=user.id, now=T0).status is JobStatus.processing
    assert s.do(renew_lease, job_id=running.id, worker="w1", attempt=1, step=1, total=2, now=T0).cancel_requested
    assert s.do(finish_cancelled, job_id=running.id, worker="w1", attempt=1, now=T0)
    assert s.job(running.id).status is JobStatus.cancelled
    assert s.ledger(running.id) == [("refund", 1), ("reserve", -1)]
    assert s.balance(user) == 10


def test_a_cancelled_job_whose_worker_died_is_cancelled_by_the_reaper(s):
    user = s.user("ghost")
    job = s.submit(user)
    s.claim()
    s.do(cancel_job, job_id=job.id, user_id=user.id, now=T0)
    s.do(reap_expired, now=T0 + timedelta(seconds=31))
    assert s.job(job.id).status is JobStatus.cancelled and s.balance(user) == 10


def test_expiring_plan_credits_are_spent_first_and_expire_after_the_rollover(s):
    user = s.user("pro", plan=Plan.pro_monthly)
    with write_session(s.url) as session:
        allocation = allocate_monthly(session=session, user=user, now=T0)
        assert allocate_monthly(session=session, user=user, now=T0 + timedelta(days=3)) is None  # once a month
        session.commit()
    assert allocation.amount == 400 and allocation.expires_at == month_start(T0, 2) == datetime(2026, 5, 1, tzinfo=UTC)
    job = s.submit(user)
    [reserve] = [row for row in s.ledger(job.id)]
    assert reserve == ("reserve", -1)
    with session_for(s.url) as session:
        [row] = session.exec(select(CreditEntry).where(CreditEntry.job_id == job.id)).all()
    assert row.lot_id == allocation.id  # the expiring allocation, not the never-expiring trial
    assert s.balance(user) == 409
    assert s.balance(user, now=datetime(2026, 5, 1, tzinfo=UTC)) == 10  # 399 expired with April's end
    with write_session(s.url) as session:
        from studio.billing.credits import expire_lots

        assert (
            expire_lots(session=session, account=Account(user_id=user.id), now=datetime(2026, 5, 1, tzinfo=UTC)) == 399
        )
        session.commit()
        assert ledger_sum(session=session, account=Account(user_id=user.id)) == 10


def test_a_starter_pack_never_expires_is_spent_after_plan_credits_and_counts_once(s):
    from sqlalchemy.exc import IntegrityError

    from studio.billing.plans import buy_starter_pack

    user = s.user("starter", plan=Plan.pro_monthly)
    with write_session(s.url) as session:
        pack = buy_starter_pack(session=session, user=user, now=T0, reference="pay_1")
        allocation = allocate_monthly(session=session, user=user, now=T0)
        session.commit()
    assert pack.amount == 100 and pack.expires_at is None
    with write_session(s.url) as session, pytest.raises(IntegrityError):
        buy_starter_pack(session=session, user=user, now=T0, reference="pay_1")
    job = s.submit(user)
    with session_for(s.url) as session:
        [row] = session.exec(select(CreditEntry).where(CreditEntry.job_id == job.id)).all()
    assert row.lot_id == allocation.id  # the expiring plan credits go first
    far_future = datetime(2030, 1, 1, tzinfo=UTC)
    assert s.balance(user, now=far_future) == 110  # trial + pack never expire


def test_the_team_pool_pays_when_allowed_and_personal_credits_run_out(s):
    with session_for(s.url) as session:
        team = Team(name="Marketing")
        session.add(team)
        session.commit()
        session.refresh(team)
    with write_session(s.url) as session:
        from studio.billing.credits import add_credits

        add_credits(
            session=session,
            account=Account(team_id=team.id),
            amount=5,
            kind=CreditKind.allocation,
            now=T0,
            reason="Team budget",
        )
        session.commit()
    member = s.user("member", team_id=team.id, can_use_team_pool=True)
    outsider = s.user("outsider", team_id=team.id)
    expensive = replace(s.settings, model_cost=4)  # ultra: 8 credits
    s.submit(member, quality=Quality.ultra, settings=expensive)  # personal 10 → 2
    assert s.balance(member) == 2 and s.balance(team_id=team.id) == 5
    job = s.submit(member, quality=Quality.ultra, settings=replace(s.settings, model_cost=3))  # 6 = 2 + 4 from the pool
    assert s.balance(member) == 0 and s.balance(team_id=team.id) == 1
    assert s.ledger(job.id) == [("reserve", -4), ("reserve", -2)]
    with pytest.raises(Refused, match="your balance is 0 and your team pool has 1"):
        s.submit(member, quality=Quality.ultra, settings=expensive)
    s.submit(outsider, quality=Quality.ultra, settings=expensive)  # 10 → 2
    with pytest.raises(Refused, match=r"your balance is 2\. Nothing"):  # the pool is not theirs to use
        s.submit(outsider, quality=Quality.ultra, settings=expensive)
    # A refund goes back to the lots it came from: the team pool gets its 4 back.
    claimed = s.claim()
    while claimed.id != job.id:
        claimed = s.claim()
    s.do(fail_job, job_id=job.id, worker="w1", attempt=1, error="boom", now=T0)
    assert s.balance(member) == 2 and s.balance(team_id=team.id) == 5
    with session_for(s.url) as session:
        assert spendable(session=session, user=member, now=T0).total == 7


def test_admin_adjustments_need_a_reason_and_never_overdraw(s):
    user = s.user("adjusted")
    account = Account(user_id=user.id)
    with write_session(s.url) as session:
        with pytest.raises(ValueError, match="reason"):
            adjust(session=session, account=account, amount=5, reason=" ", actor_id=1, now=T0)
        with pytest.raises(InsufficientCredits, match="balance is 10"):
            adjust(session=session, account=account, amount=-11, reason="typo", actor_id=1, now=T0)
        adjust(session=session, account=account, amount=-4, reason="correction", actor_id=1, now=T0)
        session.commit()
        assert [lot.remaining for lot in lots(session=session, account=account)] == [6]


@pytest.mark.parametrize(
    ("base", "quality", "size", "max_side", "credits"),
    [
        (1, Quality.standard, (512, 512), 1024, 1),
        (2, Quality.standard, (512, 512), 1024, 2),
        (1, Quality.high, (512, 512), 1024, 2),  # 1.5 rounded up
        (3, Quality.high, (512, 512), 1024, 5),  # 4.5 rounded up
        (2, Quality.ultra, (512, 512), 1024, 4),
        (2, Quality.standard, (2048, 1024), 1024, 2),  # capped to 1024: not high resolution
        (2, Quality.standard, (2048, 1024), 2048, 3),  # 2048 output: +50 %
        (3, Quality.ultra, (1536, 1536), 2048, 9),
        (5, Quality.high, (1032, 800), 2048, 12),  # 5 × 1.5 × 1.5 = 11.25 → 12
    ],
)
def test_prices(base, quality, size, max_side, credits):
    assert price(base=base, quality=quality, width=size[0], height=size[1], max_side=max_side).credits == credits
