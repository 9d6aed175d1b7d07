"""The seeding command: realistic, deterministic history whose ledger is exactly what studio.billing.credits writes."""

from collections import defaultdict
from datetime import UTC, datetime

import pytest
from sqlalchemy import func
from sqlmodel import Session, select

from studio.analytics.usage import Breakdown, Bucket, UsageFilter, credits_spent
from studio.billing.credits import Account, balance, expire_lots, ledger_sum, reserve, settle, spendable
from studio.billing.plans import allocate_monthly, buy_starter_pack, grant_trial
from studio.billing.pricing import Quality
from studio.catalogue.styles import load_catalogue
from studio.cli.main import main
from studio.db.engine import init_db
from studio.db.tables import CreditEntry, CreditKind, Job, JobStatus, Plan, Team, User
from studio.devtools.seed import Ledger, SeedError, SeedOptions, SeedUser, seed

END = datetime(2026, 6, 15, 8, 30, tzinfo=UTC)
OPTIONS = SeedOptions(users=6, teams=2, jobs=400, days=120, seed=3, end=END)


def seeded(tmp_path, settings, name="seeded", options=OPTIONS):
    engine = init_db(f"sqlite:///{tmp_path / name}.db")
    report = seed(engine=engine, settings=settings, options=options)
    return engine, report


def rows(engine, model, skip=()):
    with Session(engine) as session:
        found = session.exec(select(model).order_by(model.id)).all()
        return [tuple(v for k, v in row.model_dump().items() if k not in skip) for row in found]


def test_the_history_looks_like_real_use(tmp_path, studio_settings):
    engine, report = seeded(tmp_path, studio_settings)
    assert (report.teams, report.users, report.jobs) == (2, 6, 400)
    catalogue = load_catalogue(studio_settings.catalogue_path)
    with Session(engine) as session:
        jobs = session.exec(select(Job)).all()
        users = {user.id: user for user in session.exec(select(User))}
        teams = session.exec(select(Team)).all()
    assert {job.status for job in jobs} == {JobStatus.complete, JobStatus.failed, JobStatus.cancelled}
    assert sum(job.status is JobStatus.complete for job in jobs) > 0.8 * len(jobs)
    assert {job.style for job in jobs} - {None} <= set(catalogue.styles)
    assert len({job.style for job in jobs}) > 5 and len({job.model for job in jobs}) > 3
    assert {job.quality for job in jobs} == {q.value for q in Quality}
    assert all(1 <= job.cost <= 15 for job in jobs)
    assert [job.created_at for job in jobs] == sorted(job.created_at for job in jobs)  # ids follow time
    for job in jobs:
        assert job.created_at >= END.replace(month=2, day=15) and job.finished_at < END
        assert job.team_id == users[job.user_id].team_id
        assert job.priority == (0 if users[job.user_id].plan == "free" else 1)
        if job.started_at is None:
            assert job.status is JobStatus.cancelled and job.finished_at >= job.created_at
        else:
            assert job.created_at <= job.started_at <= job.finished_at
    pro_waits = [(j.started_at - j.created_at).total_seconds() for j in jobs if j.started_at and j.priority]
    free_waits = [(j.started_at - j.created_at).total_seconds() for j in jobs if j.started_at and not j.priority]
    assert sorted(pro_waits)[len(pro_waits) // 2] < sorted(free_waits)[len(free_waits) // 2]
    assert all(team.monthly_budget is None or team.monthly_budget >= 100 for team in teams)


def test_the_ledger_is_what_studio_credits_writes_for_the_same_events(tmp_path, studio_settings):
    """Replay every submit and outcome through the real ledger functions: row for row the same ledger."""
    engine, _ = seeded(tmp_path, studio_settings)
    replay = init_db(f"sqlite:///{tmp_path / 'replay'}.db")
    with Session(engine) as source, Session(replay) as session:
        teams = [Team(**t.model_dump()) for t in source.exec(select(Team).order_by(Team.id))]
        users = {u.id: User(**u.model_dump()) for u in source.exec(select(User).order_by(User.id))}
        jobs = {j.id: Job(**j.model_dump()) for j in source.exec(select(Job).order_by(Job.id))}
        session.add_all(teams)
        session.add_all(users.values())
        session.flush()
        for user in users.values():
            grant_trial(session=session, user=user, now=user.created_at)
        session.add_all(jobs.values())
        session.flush()
        packs: dict[int, int] = defaultdict(int)
        events = sorted(
            [(j.created_at, 1, j.id) for j in jobs.values()] + [(j.finished_at, 0, j.id) for j in jobs.values()]
        )
        for at, is_submit, job_id in events:
            job, user = jobs[job_id], users[jobs[job_id].user_id]
            if is_submit:  # what submit_job does, and a Starter pack bought when the user runs short
                allocate_monthly(session=session, user=user, now=at)
                expire_lots(session=session, account=Account(user_id=user.id), now=at)
                if spendable(session=session, user=user, now=at).total < job.cost:
                    packs[user.id] += 1
                    buy_starter_pack(session=session, user=user, now=at, reference=f"seed-{packs[user.id]}")
                reserve(session=session, user=user, job_id=job.id, cost=job.cost, now=at)
            else:
                outcome = CreditKind.commit if job.status is JobStatus.complete else CreditKind.refund
                settle(session=session, job_id=job.id, outcome=outcome, now=at)
        session.commit()
    seeded_ledger = rows(engine, CreditEntry)
    assert len(seeded_ledger) > 2 * OPTIONS.jobs
    assert rows(replay, CreditEntry) == seeded_ledger


def test_a_refund_into_a_lot_that_expired_meanwhile_expires_again():
    """The one ledger rule realistic timings rarely reach: a job that outlives its lot's expiry."""
    ledger = Ledger(first_id=1)
    user = SeedUser(id=7, plan=Plan.pro_monthly, team_id=None)
    ledger.open_lot(user, CreditKind.allocation, 5, 0.0, reason="Pro", key="k", expires_at=100.0)
    draws = ledger.reserve(user, job_id=1, cost=5, at=50.0)
    ledger.settle(user, job_id=1, draws=draws, refund=True, at=150.0)
    assert [(kind, amount, lot, at) for _, _, kind, amount, lot, _, _, _, _, at in ledger.rows] == [
        (CreditKind.allocation, 5, None, 0.0),
        (CreditKind.reserve, -5, 1, 50.0),
        (CreditKind.refund, 5, 1, 150.0),
        (CreditKind.expiry, -5, 1, 150.0),
    ]
    assert user.lots == []


def test_balances_add_up_and_no_lot_goes_negative(tmp_path, studio_settings):
    engine, _ = seeded(tmp_path, studio_settings)
    with Session(engine) as session:
        kinds = dict(session.exec(select(CreditEntry.kind, func.count()).group_by(CreditEntry.kind)).all())
        assert {
            CreditKind.grant,
            CreditKind.allocation,
            CreditKind.reserve,
            CreditKind.commit,
            CreditKind.refund,
        } <= set(kinds)
        assert kinds[CreditKind.expiry] > 0  # Pro credits expired over 120 days
        moved = dict(
            session.exec(select(CreditEntry.lot_id, func.sum(CreditEntry.amount)).group_by(CreditEntry.lot_id)).all()
        )
        for lot in session.exec(select(CreditEntry).where(CreditEntry.lot_id.is_(None))):
            assert 0 <= lot.amount + moved.get(lot.id, 0) <= lot.amount
        for user in session.exec(select(User)):
            account = Account(user_id=user.id)
            expire_lots(session=session, account=account, now=END)
            assert (
                ledger_sum(session=session, account=account) == balance(session=session, account=account, now=END) >= 0
            )
        session.rollback()


def test_analytics_spend_equals_the_ledger_per_team(tmp_path, studio_settings):
    engine, _ = seeded(tmp_path, studio_settings)
    everything = UsageFilter(start=datetime(2026, 1, 1, tzinfo=UTC), end=END)
    with Session(engine) as session:
        spent: dict[str, int] = defaultdict(int)
        for row in credits_spent(session=session, usage=everything, bucket=Bucket.week, by=Breakdown.team):
            spent[row.group] += row.credits
        net = session.exec(
            select(Team.name, func.sum(CreditEntry.amount))
            .join(Job, Job.id == CreditEntry.job_id)
            .join(Team, Team.id == Job.team_id)
            .where(CreditEntry.kind.in_([CreditKind.reserve, CreditKind.refund]))
            .group_by(Team.name)
        ).all()
    assert {name: -total for name, total in net} == {name: v for name, v in spent.items() if name != "No team"}


def test_the_same_seed_gives_the_same_history(tmp_path, studio_settings):
    first, _ = seeded(tmp_path, studio_settings, "first")
    second, _ = seeded(tmp_path, studio_settings, "second")
    other, _ = seeded(tmp_path, studio_settings, "other", SeedOptions(**{**OPTIONS.__dict__, "seed": 4}))
    assert rows(first, Job) == rows(second, Job) != rows(other, Job)
    assert rows(first, CreditEntry) == rows(second, CreditEntry)
    # The one random thing: the shared password nobody knows.
    assert rows(first, User, skip={"password_hash"}) == rows(second, User, skip={"password_hash"})


@pytest.mark.both_databases
def test_the_studio_writes_after_a_seed(db_backend, database_url, tmp_path, studio_settings):
    """The seed assigns ids itself; the studio's next team, user, job and ledger row still get fresh ones
    (on PostgreSQL that needs the id sequences moved past the seeded rows)."""
    engine = init_db(database_url or f"sqlite:///{tmp_path / 'after'}.db")
    report = seed(engine=engine, settings=studio_settings, options=OPTIONS)
    with Session(engine) as session:
        team = Team(name="Added after the seed")
        session.add(team)
        session.flush()
        user = User(username="after.seed", email="after@example.com", display_name="After", password_hash="x")
        user.team_id = team.id
        session.add(user)
        session.flush()
        job = Job(task="img2img", model="m", params={}, user_id=user.id, status=JobStatus.complete, cost=1)
        session.add(job)
        session.flush()
        grant_trial(session=session, user=user, now=END)
        session.commit()
        assert (team.id, user.id) == (OPTIONS.teams + 1, OPTIONS.users + 1)
        assert job.id == report.jobs + 1
        entry = session.exec(select(CreditEntry).where(CreditEntry.user_id == user.id)).one()
        assert entry.id == report.ledger_rows + 1


def test_seeding_twice_into_one_database_is_refused(tmp_path, studio_settings):
    engine, _ = seeded(tmp_path, studio_settings)
    before = rows(engine, Job)
    with pytest.raises(SeedError, match="fresh database"):
        seed(engine=engine, settings=studio_settings, options=OPTIONS)
    assert rows(engine, Job) == before


def test_the_command_line(tmp_path, studio_settings, capsys):
    url = f"sqlite:///{tmp_path / 'cli'}.db"
    args = ["seed", "--users", "3", "--teams", "1", "--jobs", "50", "--database-url", url]
    assert main([*args, "--days", "10", "--seed", "1"]) == 0
    assert "Seeded 1 teams, 3 users, 50 jobs and" in capsys.readouterr().out
    with pytest.raises(SystemExit) as refused:
        main(args)
    assert refused.value.code == 1
