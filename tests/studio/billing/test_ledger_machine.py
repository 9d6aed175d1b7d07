"""A Hypothesis state machine over the job queue and the credits ledger, on a fake clock.

Every example is a fresh SQLite studio with four accounts that can submit (the admin, a free
user, a Pro monthly user and a team member allowed to draw on the team pool) plus the team pool.
Rules drive `studio.jobs` and `studio.billing.credits` directly, the way workers, pages and admins do;
a small model of the queue predicts each outcome, and after every step the invariants read the
database and check the ledger against the jobs.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest import mock

import bcrypt
import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from sqlalchemy import func
from sqlmodel import col, select

from pipelines.params import Img2ImgParams
from studio.accounts import users as users_module
from studio.accounts.bootstrap import bootstrap
from studio.billing.credits import Account, InsufficientCredits, add_credits, adjust, balance, expire_lots, ledger_sum
from studio.billing.plans import PLANS, allocation_key, month_start
from studio.billing.pricing import QUALITY_TIERS, Quality
from studio.catalogue.requests import custom_request
from studio.config import load_settings
from studio.db.engine import get_engine, session_for, write_session
from studio.db.tables import Asset, AssetKind, CreditEntry, CreditKind, Job, JobStatus, Plan, Team, User
from studio.errors import Refused
from studio.jobs.leases import (
    LEASE_SECONDS,
    MAX_ATTEMPTS,
    Lease,
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
from studio.media.storage import AssetStore
from studio.media.validation import validate_image_bytes
from tests.support import png_bytes

START = datetime(2026, 1, 20, 12, 0, tzinfo=UTC)
UPLOAD = validate_image_bytes(png_bytes(256, 256))  # 256×256: never high resolution
PARAMS = Img2ImgParams(prompt="x", strength=0.5, steps=4)
TOO_MANY_STEPS = Img2ImgParams(prompt="x", strength=0.5, steps=61)  # valid params, but above every tier
USERS = ("admin", "freya", "pablo", "tess")  # free admin, free user, Pro monthly, team member on the pool
ACCOUNTS = (*USERS, "team")
WORKERS = ("A", "B")
WORKER = st.sampled_from(["A", "A", "B"])  # mostly A, so A often reclaims a job it lost
LEASE = timedelta(seconds=LEASE_SECONDS)
REFUND_STATUSES = (JobStatus.failed, JobStatus.cancelled)
# Which credential a worker call uses: mostly the current holder's, sometimes an outdated one for a job
# that is still running (the worker lost its lease and the job was claimed again), sometimes any.
CREDENTIAL = st.sampled_from(["held", "held", "stale on a running job", "stale on a running job", "any"])
# Clock steps: around the 30 s lease (strictly `lease_until < now` expires), across month ends, exactly
# onto (or just past) the earliest running lease's end, and exactly onto the next lot's expiry.
CLOCK_STEPS = (1, 10, 29, 30, 31, 60, 3600, 86400, 7 * 86400, 20 * 86400, 35 * 86400)
CLOCK_JUMPS = ("lease end", "lease end + 1", "next expiry")


def _fast_hash(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


@dataclass
class JobModel:
    id: int
    owner: str
    cost: int
    priority: int
    fair_tag: int  # its round in its lane (studio.jobs.fair_queue), predicted by the model
    status: JobStatus = JobStatus.queued
    attempt: int = 0
    worker: str | None = None
    lease_until: datetime | None = None
    cancel_requested: bool = False
    history: list[JobStatus] = field(default_factory=lambda: [JobStatus.queued])

    def move(self, status: JobStatus) -> None:
        allowed = {
            JobStatus.queued: {JobStatus.processing, JobStatus.cancelled},
            JobStatus.processing: {JobStatus.queued, JobStatus.complete, JobStatus.failed, JobStatus.cancelled},
        }
        assert status in allowed.get(self.status, set()), f"model bug: {self.status} → {status}"
        self.status = status
        self.history.append(status)
        if status is JobStatus.queued:
            self.worker = None  # the reaper's step back: the job is nobody's until claimed again
        if status is not JobStatus.processing:
            self.lease_until = None


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="ledger-machine-"))
        env = {
            "STUDIO_DATA_DIR": str(self.tmp / "data"),
            "STUDIO_COOKIE_KEY": "k" * 48,
            "STUDIO_ADMIN_PASSWORD": "admin-password-for-tests",
            "STUDIO_WARMUP": "0",
            "STUDIO_IN_PROCESS_WORKER": "0",
            # The model below: the first admin on the Free plan with only the trial credits, as every new account.
            "STUDIO_ADMIN_PLAN": "free",
            "STUDIO_ADMIN_CREDITS": "0",
        }
        self.settings = load_settings(env, secrets_path=self.tmp / "no-secrets.toml")
        self.url = self.settings.database_url
        self.store = AssetStore(self.settings.assets_dir)
        self.now = START
        # bcrypt at its default cost would make every example take a second; 4 rounds is still bcrypt.
        with mock.patch.object(users_module, "hash_password", _fast_hash):
            bootstrap(self.settings)
            with session_for(self.url) as session:
                team = Team(name="pool-team")
                session.add(team)
                session.commit()
                make = users_module.create_user
                freya = make(session=session, username="freya", password="password-1", email="f@example.com")
                pablo = make(session=session, username="pablo", password="password-2", email="p@example.com")
                tess = make(
                    session=session, username="tess", password="password-3", email="t@example.com", team_id=team.id
                )
                pablo.plan = Plan.pro_monthly
                tess.can_use_team_pool = True
                session.add_all([pablo, tess])
                session.flush()
                admin = users_module.get_user(session=session, username="admin")
                # Little personal credit, so a refusal and a team-pool charge come within a few steps.
                for user, keep in ((freya, 3), (tess, 2)):
                    adjust(
                        session=session,
                        account=Account(user_id=user.id),
                        amount=keep - 10,
                        reason="test setup",
                        actor_id=admin.id,
                        now=START,
                    )
                pool = Account(team_id=team.id)
                add_credits(
                    session=session,
                    account=pool,
                    amount=4,
                    kind=CreditKind.grant,
                    now=START,
                    reason="pool, expiring",
                    expires_at=START + timedelta(days=15),
                )
                add_credits(
                    session=session, account=pool, amount=3, kind=CreditKind.allocation, now=START, reason="pool"
                )
                session.commit()
                self.user_ids = {"admin": admin.id, "freya": freya.id, "pablo": pablo.id, "tess": tess.id}
                self.team_id = team.id
        self.accounts = {name: Account(user_id=uid) for name, uid in self.user_ids.items()}
        self.accounts["team"] = Account(team_id=self.team_id)
        self.owner_of = {uid: name for name, uid in self.user_ids.items()}
        self.jobs: dict[int, JobModel] = {}
        self.keys: list[tuple[str, str, int]] = []  # (idempotency key, owner, job id)
        self.key_counter = 0
        self.creds: list[tuple[int, str, int]] = []  # every (job, worker, attempt) a claim ever handed out
        self.holding: dict[str, tuple[int, str, int]] = {}  # what each live worker believes it runs
        self.last_seen: dict[int, tuple[JobStatus, int]] = {}

    def teardown(self) -> None:
        event(f"jobs submitted: {min(len(self.jobs), 10) // 5 * 5}+, claims: {min(len(self.creds), 10) // 5 * 5}+")
        reaps = sum(job.history.count(JobStatus.queued) - 1 for job in self.jobs.values())
        event(f"requeued by the reaper: {min(reaps, 3)}{'+' if reaps >= 3 else ''}")
        get_engine(self.url).dispose()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ----------------------------------------------------------------- helpers

    def _snapshot(self, job_id: int | None = None) -> tuple[tuple[int, ...], dict | None]:
        with session_for(self.url) as session:
            counts = tuple(
                session.exec(select(func.count()).select_from(table)).one() for table in (Job, Asset, CreditEntry)
            )
            job = session.get(Job, job_id) if job_id is not None else None
            return counts, (job.model_dump() if job is not None else None)

    def _rows(self) -> list[CreditEntry]:
        with session_for(self.url) as session:
            return list(session.exec(select(CreditEntry)).all())

    def _balances(self, rows: list[CreditEntry] | None = None) -> dict[str, int]:
        """Every account's spendable credits, recomputed from the rows: what is left in unexpired lots."""
        rows = self._rows() if rows is None else rows
        lots = {row.id: row for row in rows if row.lot_id is None}
        left = Counter()
        for row in rows:
            left[row.id if row.lot_id is None else row.lot_id] += row.amount
        found = Counter({name: 0 for name in self.accounts})
        for lot_id, lot in lots.items():
            if lot.expires_at is None or lot.expires_at > self.now:
                found[self._account_name(lot)] += left[lot_id]
        return dict(found)

    def _account_name(self, row: CreditEntry) -> str:
        return "team" if row.team_id is not None else self.owner_of[row.user_id]

    def _refund_to_balances(self, job_ids) -> Counter:
        """What refunding these jobs now gives back to spendable balances (nothing into an expired lot)."""
        delta: Counter = Counter()
        with session_for(self.url) as session:
            for job_id in job_ids:
                rows = session.exec(
                    select(CreditEntry).where(CreditEntry.job_id == job_id, CreditEntry.kind == CreditKind.reserve)
                ).all()
                for row in rows:
                    lot = session.get(CreditEntry, row.lot_id)
                    if lot.expires_at is None or lot.expires_at > self.now:
                        delta[self._account_name(row)] += -row.amount
        return delta

    def _assert_balances(self, before: dict[str, int], delta: Counter) -> None:
        expected = {name: before[name] + delta.get(name, 0) for name in before}
        assert self._balances() == expected

    def _assert_refunded(self, before: dict[str, int], refund: Counter, job_ids) -> None:
        """Refunds reached the spendable balances; a refund into a lot that has expired meanwhile
        expired again at once (an expiry row in the same transaction), so that lot holds nothing."""
        self._assert_balances(before, refund)
        rows = self._rows()
        left = Counter()
        for row in rows:
            left[row.lot_id or row.id] += row.amount
        lots = {row.id: row for row in rows if row.lot_id is None}
        for row in rows:
            if row.job_id in job_ids and row.kind is CreditKind.refund:
                lot = lots[row.lot_id]
                if lot.expires_at is not None and lot.expires_at <= self.now:
                    event("refund into an expired lot")
                    assert left[lot.id] == 0, f"lot #{lot.id} expired at {lot.expires_at} but holds {left[lot.id]}"

    def _valid(self, cred: tuple[int, str, int]) -> bool:
        job_id, worker, attempt = cred
        job = self.jobs[job_id]
        return job.status is JobStatus.processing and job.worker == worker and job.attempt == attempt

    def _pick_cred(self, data, which: str) -> tuple[int, str, int]:
        if which == "held" and self.holding:
            return data.draw(st.sampled_from(sorted(self.holding.values())), label="held credential")
        stale = [
            cred for cred in self.creds if self.jobs[cred[0]].status is JobStatus.processing and not self._valid(cred)
        ]
        # The sharpest case first: the same worker's earlier attempt, which only the attempt number fences off.
        same_worker = [cred for cred in stale if cred[1] == self.jobs[cred[0]].worker]
        if which == "stale on a running job" and stale:
            event(f"credential: stale on a running job{', same worker' if same_worker else ''}")
            return data.draw(st.sampled_from(same_worker or stale), label="stale credential")
        return data.draw(st.sampled_from(self.creds), label="any credential")

    def _forget(self, cred: tuple[int, str, int]) -> None:
        for worker, held in list(self.holding.items()):
            if held == cred:
                del self.holding[worker]

    def _check_forward(self, jobs: dict[int, Job] | None = None) -> None:
        """Statuses only move forward; the one step back (processing → queued) is the reaper's and keeps
        the attempt, which only a claim raises. Checked against the database alone, not the model."""
        if jobs is None:
            with session_for(self.url) as session:
                jobs = {job.id: job for job in session.exec(select(Job)).all()}
        for job_id, job in jobs.items():
            if job_id in self.last_seen:
                was, was_attempt = self.last_seen[job_id]
                step = f"#{job_id}: {was} (attempt {was_attempt}) → {job.status} (attempt {job.attempt})"
                if was.is_final:
                    assert (job.status, job.attempt) == (was, was_attempt), step
                elif job.status is was:
                    assert job.attempt == was_attempt, step
                elif was is JobStatus.queued:
                    assert job.status in (JobStatus.processing, JobStatus.cancelled), step
                    assert job.attempt == was_attempt + (job.status is JobStatus.processing), step
                else:
                    assert job.attempt == was_attempt, step
            self.last_seen[job_id] = (job.status, job.attempt)

    # ------------------------------------------------------------------- rules

    @initialize(
        whos=st.lists(st.sampled_from(USERS), min_size=1, max_size=6),
        workers=st.lists(WORKER, max_size=3),
        max_attempts=st.integers(1, MAX_ATTEMPTS),
    )
    def some_jobs(self, whos, workers, max_attempts):
        """Start with a few jobs queued and some of them claimed."""
        self.max_attempts = max_attempts  # the reaper gives up after this many lost leases
        for who in whos:
            self._submit(None, who, Quality.standard, 1, "none", bad_params=False)
        for worker in workers:
            self.work(worker, reap_first=False)

    @rule(
        data=st.data(),
        who=st.sampled_from(USERS),
        quality=st.sampled_from(list(Quality)),
        base=st.integers(1, 3),
        key_mode=st.sampled_from(["none", "new", "replay"]),
        bad_params=st.integers(0, 9).map(lambda n: n == 0),
    )
    def submit(self, data, who, quality, base, key_mode, bad_params):
        self._submit(data, who, quality, base, key_mode, bad_params)

    def _submit(self, data, who: str, quality: Quality, base: int, key_mode: str, bad_params: bool) -> None:
        before_counts, _ = self._snapshot()
        before = self._balances()
        priced = dataclasses.replace(self.settings, model_cost=base)
        params = TOO_MANY_STEPS if bad_params else PARAMS

        def call(key: str | None) -> Job:
            with write_session(self.url) as session:
                user = session.get(User, self.user_ids[who])
                return submit_job(
                    session=session,
                    store=self.store,
                    settings=priced,
                    user=user,
                    upload=UPLOAD,
                    original_name="photo.png",
                    request=custom_request(settings=priced, params=params, quality=quality),
                    idempotency_key=key,
                    now=self.now,
                )

        def assert_no_trace() -> None:
            assert self._snapshot()[0] == before_counts
            assert self._balances() == before

        if key_mode == "replay" and self.keys:
            key, owner, job_id = data.draw(st.sampled_from(self.keys), label="replayed key")
            if owner != who:
                event("submit: another user's key refused")
                with pytest.raises(Refused, match="another user"):
                    call(key)
            else:
                event("submit: idempotent replay")
                job = call(key)
                assert job.id == job_id
                assert job.status is self.jobs[job_id].status
            assert_no_trace()  # a replay moves no credit and writes nothing
            return

        key = None
        if key_mode != "none":
            self.key_counter += 1
            key = f"key-{self.key_counter}"
        if bad_params:
            with pytest.raises(Refused, match="steps need a higher tier"):
                call(key)
            assert_no_trace()
            return

        cost = math.ceil(base * QUALITY_TIERS[quality].multiplier)
        with session_for(self.url) as session:
            user = session.get(User, self.user_ids[who])
            allocated = session.exec(
                select(CreditEntry.id).where(CreditEntry.idempotency_key == allocation_key(user, self.now))
            ).first()
            monthly = PLANS[user.plan].monthly_credits if allocated is None else 0
            pool = user.team_id is not None and user.can_use_team_pool
        personal = before[who] + monthly
        team = before["team"] if pool else 0
        if cost > personal + team:
            event("submit: not enough credits")
            with pytest.raises(Refused, match="Not enough credits"):
                call(key)
            assert_no_trace()  # not even this month's plan credits, which belong to the refused transaction
            return

        event(f"submit: accepted{' with the team pool' if cost > personal else ''}")
        job = call(key)
        assert job.id not in self.jobs
        assert (job.status, job.cost, job.attempt, job.quality) == (JobStatus.queued, cost, 0, quality.value)
        priority = 1 if who == "pablo" else 0
        assert job.priority == priority
        from_personal = min(personal, cost)
        delta = Counter({who: monthly - from_personal, "team": -(cost - from_personal)})
        self._assert_balances(before, delta)
        if monthly:  # this month's plan credits came with the submit, and last the rollover window
            event("submit: monthly plan credits allocated")
            spec = PLANS[Plan.pro_monthly]
            with session_for(self.url) as session:
                lot = session.exec(
                    select(CreditEntry).where(CreditEntry.idempotency_key == allocation_key(user, self.now))
                ).one()
            assert (lot.kind, lot.amount, lot.user_id) == (CreditKind.allocation, spec.monthly_credits, user.id)
            assert lot.expires_at == month_start(self.now, 1 + spec.rollover_months)
        assert (job.lane, job.fair_tag) == (-2 * priority, self._next_round(who, priority))
        self.jobs[job.id] = JobModel(id=job.id, owner=who, cost=cost, priority=priority, fair_tag=job.fair_tag)
        if key is not None:
            self.keys.append((key, who, job.id))

    @rule(worker=WORKER, reap_first=st.booleans())
    def work(self, worker, reap_first):
        """What `Worker.run_once` does: (reap expired leases, then) claim the next job."""
        if reap_first:
            self._reap()
            self.jobs_match_the_model_and_their_ledger()  # what the reaper left, before the claim
        queued = sorted(
            (job for job in self.jobs.values() if job.status is JobStatus.queued),
            key=lambda job: (-job.priority, job.fair_tag, job.id),  # Pro's lane first, then by round, then FIFO
        )
        expected = queued[0] if queued else None
        with session_for(self.url) as session:  # what the pages show: 1 is the job claimed next
            for position, model in enumerate(queued, start=1):
                assert queue_position(session=session, job=session.get(Job, model.id)) == position
            others = [job_id for job_id, model in self.jobs.items() if model.status is not JobStatus.queued]
            if others:
                assert queue_position(session=session, job=session.get(Job, others[-1])) is None
        before_counts, _ = self._snapshot()
        with write_session(self.url) as session:
            job = claim_next(session=session, worker=worker, now=self.now)
        assert self._snapshot()[0] == before_counts
        if expected is None:
            assert job is None
            return
        assert job is not None, "a job was queued but claim_next returned None"
        assert job.id == expected.id, f"claimed #{job.id}, but #{expected.id} is first (lane, round, then FIFO)"
        assert job.status is JobStatus.processing
        assert (job.worker, job.attempt) == (worker, expected.attempt + 1)
        assert job.lease_until == self.now + LEASE
        expected.move(JobStatus.processing)
        expected.attempt += 1
        expected.worker = worker
        expected.lease_until = self.now + LEASE
        cred = (job.id, worker, job.attempt)
        self.creds.append(cred)
        self.holding[worker] = cred  # whatever it held before, it has dropped (as if it crashed)

    @precondition(lambda self: self.creds)
    @rule(data=st.data(), which=CREDENTIAL, outcome=st.sampled_from(["complete", "failed", "cancelled"]))
    def finish(self, data, which, outcome):
        if outcome == "complete":
            self._complete(data, which)
        else:
            self._fail(data, which, cancelled=outcome == "cancelled")

    def _complete(self, data, which: str) -> None:
        cred = self._pick_cred(data, which)
        job_id, worker, attempt = cred
        model = self.jobs[job_id]
        valid = self._valid(cred)
        before_counts, before_row = self._snapshot(job_id)
        before = self._balances()
        result = Asset(
            user_id=self.user_ids[model.owner],
            kind=AssetKind.result,
            sha256="0" * 64,
            width=8,
            height=8,
            size_bytes=1,
            created_at=self.now,
        )
        with write_session(self.url) as session:
            done = complete_job(
                session=session, job_id=job_id, worker=worker, attempt=attempt, result=result, recipe={}, now=self.now
            )
        event(f"complete: {'current' if valid else 'stale'}")
        if not valid:
            assert done is False, f"a stale completion of #{job_id} by {cred} was accepted"
            assert self._snapshot(job_id) == (before_counts, before_row)
            return
        assert done is True
        model.move(JobStatus.complete)
        self._forget(cred)
        self._assert_balances(before, Counter())  # a commit moves no credit

    def _fail(self, data, which: str, cancelled: bool) -> None:
        cred = self._pick_cred(data, which)
        job_id, worker, attempt = cred
        model = self.jobs[job_id]
        valid = self._valid(cred)
        before_counts, before_row = self._snapshot(job_id)
        before = self._balances()
        refund = self._refund_to_balances([job_id])
        with write_session(self.url) as session:
            if cancelled:
                done = finish_cancelled(session=session, job_id=job_id, worker=worker, attempt=attempt, now=self.now)
            else:
                done = fail_job(
                    session=session, job_id=job_id, worker=worker, attempt=attempt, error="boom", now=self.now
                )
        event(f"fail: {'current' if valid else 'stale'}")
        if not valid:
            assert done is False, f"a stale fail of #{job_id} by {cred} was accepted"
            assert self._snapshot(job_id) == (before_counts, before_row)
            return
        assert done is True
        model.move(JobStatus.cancelled if cancelled else JobStatus.failed)
        self._forget(cred)
        self._assert_refunded(before, refund, {job_id})

    @precondition(lambda self: self.creds)
    @rule(data=st.data(), which=CREDENTIAL, step=st.integers(0, 5))
    def beat(self, data, which, step):
        cred = self._pick_cred(data, which)
        job_id, worker, attempt = cred
        model = self.jobs[job_id]
        valid = self._valid(cred)
        before_counts, before_row = self._snapshot(job_id)
        with write_session(self.url) as session:
            lease = renew_lease(
                session=session, job_id=job_id, worker=worker, attempt=attempt, step=step, total=5, now=self.now
            )
        if not valid:
            assert lease == Lease(held=False, cancel_requested=False)
            assert self._snapshot(job_id) == (before_counts, before_row)
            return
        assert lease == Lease(held=True, cancel_requested=model.cancel_requested)
        model.lease_until = self.now + LEASE
        _, row = self._snapshot(job_id)
        assert (row["progress_step"], row["progress_total"], row["lease_until"]) == (step, 5, model.lease_until)

    @precondition(lambda self: self.jobs)
    @rule(data=st.data(), by=st.sampled_from(["owner", "owner", "other", "ghost"]))
    def cancel(self, data, by):
        job_id = data.draw(st.sampled_from(sorted(self.jobs)), label="job")
        model = self.jobs[job_id]
        who = model.owner
        if by == "other":
            who = data.draw(st.sampled_from([name for name in USERS if name != model.owner]), label="not the owner")
        elif by == "ghost":
            job_id = max(self.jobs) + 1000
        before_counts, before_row = self._snapshot(job_id)
        before = self._balances()
        refund = self._refund_to_balances([job_id]) if model.status is JobStatus.queued else Counter()

        def call() -> Job:
            with write_session(self.url) as session:
                return cancel_job(session=session, job_id=job_id, user_id=self.user_ids[who], now=self.now)

        if by != "owner":
            with pytest.raises(LookupError):
                call()
            assert self._snapshot(job_id) == (before_counts, before_row)
            return
        job = call()
        event(f"cancel: {model.status.value} job")
        if model.status is JobStatus.queued:
            model.move(JobStatus.cancelled)
            self._assert_refunded(before, refund, {job_id})
        elif model.status is JobStatus.processing:
            model.cancel_requested = True
            assert self._snapshot()[0] == before_counts
            self._assert_balances(before, Counter())
        else:  # a finished job stays as it was
            assert self._snapshot(job_id) == (before_counts, before_row)
        assert job.status is model.status

    @rule(
        seconds=st.sampled_from((*CLOCK_STEPS, *CLOCK_JUMPS)),
        crash=st.sampled_from([None, *WORKERS]),
        then=st.sampled_from([None, "sweep", "reap"]),
    )
    def tick(self, seconds, crash, then):
        """Time passes; a worker may die silently (its lease runs out on its own); then maybe a sweep of
        expired lots, or a reaper run at exactly this moment."""
        before = self._balances()
        if seconds == "next expiry":
            ends = [row.expires_at for row in self._rows() if row.expires_at is not None and row.expires_at > self.now]
            self.now = min(ends, default=self.now + timedelta(days=1))
        elif isinstance(seconds, str):
            leases = [job.lease_until for job in self.jobs.values() if job.status is JobStatus.processing]
            edge = min([lease for lease in leases if lease > self.now], default=self.now + LEASE)
            self.now = edge + timedelta(seconds=1 if seconds.endswith("+ 1") else 0)
        else:
            self.now += timedelta(seconds=seconds)
        if self._balances() != before:
            event("tick: credits expired")
        if crash is not None:
            self.holding.pop(crash, None)
        if then == "reap":
            self._reap()
        elif then == "sweep":
            before = self._balances()
            with write_session(self.url) as session:
                for acct in self.accounts.values():
                    expire_lots(session=session, account=acct, now=self.now)
                session.commit()
            self._assert_balances(before, Counter())

    def _reap(self) -> None:
        expired = [
            job for job in self.jobs.values() if job.status is JobStatus.processing and job.lease_until < self.now
        ]
        ends = [job.id for job in expired if job.cancel_requested or job.attempt >= self.max_attempts]
        before = self._balances()
        refund = self._refund_to_balances(ends)
        with write_session(self.url) as session:
            reaped = reap_expired(session=session, now=self.now, max_attempts=self.max_attempts)
        assert sorted(job.id for job in reaped) == sorted(job.id for job in expired)
        rounds = {job.priority: self._current_round(job.priority) for job in expired}  # before any job goes back
        for job in expired:
            event(f"reap: cancel_requested={job.cancel_requested} attempt={job.attempt}/{self.max_attempts}")
            if job.cancel_requested:
                job.move(JobStatus.cancelled)
            elif job.attempt >= self.max_attempts:
                job.move(JobStatus.failed)
            else:
                job.fair_tag = max(job.fair_tag, rounds[job.priority])
                job.move(JobStatus.queued)
        self._assert_refunded(before, refund, set(ends))

    def _current_round(self, priority: int) -> int:
        """The lane's lowest queued round; with nothing queued, its highest round (every job here is interactive,
        so a lane is a priority)."""
        lane = [job for job in self.jobs.values() if job.priority == priority]
        queued = [job.fair_tag for job in lane if job.status is JobStatus.queued]
        return min(queued) if queued else max((job.fair_tag for job in lane), default=0)

    def _next_round(self, who: str, priority: int) -> int:
        """The lane's current round, or one after the user's last round in the lane if that is later."""
        own = [job.fair_tag for job in self.jobs.values() if job.priority == priority and job.owner == who]
        return max(self._current_round(priority), max(own) + 1) if own else self._current_round(priority)

    @rule(
        name=st.sampled_from(ACCOUNTS),
        how=st.sampled_from(["grant", "allocation", "adjust"]),
        amount=st.integers(1, 15),
        negative=st.booleans(),
        expires_days=st.none() | st.integers(1, 40),
        blank_reason=st.integers(0, 9).map(lambda n: n == 0),
    )
    def credit(self, name, how, amount, negative, expires_days, blank_reason):
        account = self.accounts[name]
        before_counts, _ = self._snapshot()
        before = self._balances()
        reason = "  " if blank_reason else "support ticket 42"
        expires_at = None if expires_days is None else self.now + timedelta(days=expires_days)
        signed = -amount if how == "adjust" and negative else amount
        refused = blank_reason or (signed < 0 and before[name] < amount)
        with write_session(self.url) as session:
            try:
                if how == "adjust":
                    adjust(
                        session=session,
                        account=account,
                        amount=signed,
                        reason=reason,
                        actor_id=self.user_ids["admin"],
                        now=self.now,
                    )
                else:
                    add_credits(
                        session=session,
                        account=account,
                        amount=amount,
                        kind=CreditKind(how),
                        now=self.now,
                        reason=reason,
                        expires_at=expires_at,
                        actor_id=self.user_ids["admin"],
                    )
            except (InsufficientCredits, ValueError) as exc:
                assert refused, f"refused unexpectedly: {exc}"
                session.rollback()
            else:
                assert not refused, "a blank reason or an overdraft was accepted"
                session.commit()
        if refused:
            assert self._snapshot()[0] == before_counts
            self._assert_balances(before, Counter())
        else:
            self._assert_balances(before, Counter({name: signed}))

    # -------------------------------------------------------------- invariants

    @invariant()
    def balances_match_the_ledger(self):
        rows = self._rows()
        by_id = {row.id: row for row in rows}
        remaining = Counter()
        for row in rows:
            if row.lot_id is None:
                assert row.kind in (CreditKind.grant, CreditKind.allocation, CreditKind.adjustment)
                assert row.amount > 0, f"lot #{row.id} opens with {row.amount}"
                remaining[row.id] += row.amount
            else:
                lot = by_id[row.lot_id]
                assert lot.lot_id is None, f"row #{row.id} names #{row.lot_id}, which is not a lot"
                assert (row.user_id, row.team_id) == (lot.user_id, lot.team_id), f"row #{row.id} crosses accounts"
                remaining[row.lot_id] += row.amount
            if row.kind is CreditKind.expiry:
                assert by_id[row.lot_id].expires_at is not None and by_id[row.lot_id].expires_at <= row.created_at
            assert (row.job_id is not None) == (row.kind in (CreditKind.reserve, CreditKind.commit, CreditKind.refund))
        negative = {lot: left for lot, left in remaining.items() if left < 0}
        assert not negative, f"lots overdrawn: {negative}"

        recomputed = self._balances(rows)
        with write_session(self.url) as session:
            for name, acct in self.accounts.items():
                spendable = balance(session=session, account=acct, now=self.now)
                assert spendable == recomputed[name], f"{name}: balance() ≠ the unexpired lots' remaining credits"
                assert spendable >= 0, f"{name}'s balance is negative: {spendable}"
                # Sweep inside the transaction and roll it back, so later steps also meet unswept lots.
                expire_lots(session=session, account=acct, now=self.now)
                assert ledger_sum(session=session, account=acct) == spendable, f"{name}: swept ledger sum ≠ balance"
            session.rollback()

    @invariant()
    def jobs_match_the_model_and_their_ledger(self):
        with session_for(self.url) as session:
            jobs = {job.id: job for job in session.exec(select(Job)).all()}
            rows = session.exec(select(CreditEntry).where(col(CreditEntry.job_id).is_not(None))).all()
        assert set(jobs) == set(self.jobs)
        by_job: dict[int, dict[CreditKind, list[CreditEntry]]] = {job_id: {} for job_id in jobs}
        for row in rows:
            by_job[row.job_id].setdefault(row.kind, []).append(row)
        self._check_forward(jobs)
        for job_id, job in jobs.items():
            model = self.jobs[job_id]
            assert job.user_id == self.user_ids[model.owner]
            assert (job.status, job.attempt, job.cost, job.priority, job.fair_tag) == (
                model.status,
                model.attempt,
                model.cost,
                model.priority,
                model.fair_tag,
            ), f"#{job_id} in the database ≠ model {model}"
            assert job.cancel_requested == model.cancel_requested
            if job.status is JobStatus.processing:
                assert (job.worker, job.lease_until) == (model.worker, model.lease_until)
            if job.status is JobStatus.queued:
                assert job.worker is None and job.lease_until is None and not job.cancel_requested
            if job.status.is_final:
                assert job.lease_until is None and job.finished_at is not None
            assert (job.result_asset_id is not None) == (job.status is JobStatus.complete)

            ledger = by_job[job_id]
            assert set(ledger) <= {CreditKind.reserve, CreditKind.commit, CreditKind.refund}
            reserve = ledger.get(CreditKind.reserve, [])
            assert reserve, f"#{job_id} has no reserve"
            assert sum(row.amount for row in reserve) == -job.cost
            assert all(row.amount < 0 for row in reserve)
            assert len({row.created_at for row in reserve}) == 1, f"#{job_id} was reserved more than once"
            accounts = {(row.user_id, row.team_id) for row in reserve}
            assert accounts <= {(job.user_id, None), (None, job.team_id)}
            reserved_lots = Counter({row.lot_id: -row.amount for row in reserve})
            commit, refund = ledger.get(CreditKind.commit, []), ledger.get(CreditKind.refund, [])
            assert not (commit and refund), f"#{job_id} was both committed and refunded"
            if job.status is JobStatus.complete:
                assert Counter(row.lot_id for row in commit) == Counter(reserved_lots.keys())
                assert all(row.amount == 0 for row in commit)
            else:
                assert not commit, f"#{job_id} is {job.status} but has a commit"
            if job.status in REFUND_STATUSES:
                assert Counter({row.lot_id: row.amount for row in refund}) == reserved_lots
                assert len(refund) == len(reserve)
                assert sum(row.amount for row in refund) == job.cost
            else:
                assert not refund, f"#{job_id} is {job.status} but has a refund"


LedgerMachine.TestCase.settings = settings(
    max_examples=75,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestLedgerMachine = pytest.mark.slow(LedgerMachine.TestCase)
