"""Admin services: role enforcement, self-protection, and one audit entry per action in the same transaction."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, func, select

from studio.accounts import admin
from studio.accounts.admin import AuditFilter
from studio.accounts.users import get_user, verify_password
from studio.billing.credits import Account, balance
from studio.db.engine import get_engine
from studio.db.tables import AuditAction, AuditEntry, CreditEntry, CreditKind, Plan, Role, Team, User
from studio.errors import Forbidden, NotFound, Refused

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


@pytest.fixture
def session(studio, studio_settings):
    engine = get_engine(studio_settings.database_url).execution_options(sqlite_begin="IMMEDIATE")
    with Session(engine, expire_on_commit=False) as session:
        yield session


def make_user(session, name, role=Role.member, **fields) -> User:
    user = User(username=name, email=f"{name}@x", display_name=name.title(), role=role, password_hash="-", **fields)
    session.add(user)
    session.commit()
    return user


@pytest.fixture
def people(session):
    team = Team(name="Design")
    session.add(team)
    session.commit()
    return {
        "admin": get_user(session=session, username="admin"),
        "ada": make_user(session, "ada", Role.admin),
        "mia": make_user(session, "mia", team_id=team.id),
        "team": team,
    }


def audit(session, **where) -> list[AuditEntry]:
    query = select(AuditEntry).order_by(AuditEntry.id)
    for field, value in where.items():
        query = query.where(getattr(AuditEntry, field) == value)
    return list(session.exec(query))


def snapshot(session) -> tuple:
    """Everything an admin action could change."""
    users = session.exec(select(User).order_by(User.id)).all()
    teams = session.exec(select(Team).order_by(Team.id)).all()
    return (
        [(u.username, u.role, u.plan, u.team_id, u.can_use_team_pool, u.is_active, u.password_hash) for u in users],
        [(t.name, t.monthly_budget, t.budget_alert_percent) for t in teams],
        session.exec(select(func.count()).select_from(CreditEntry)).one(),
        session.exec(select(func.count()).select_from(AuditEntry)).one(),
    )


def every_action(people) -> dict:
    mia, team = people["mia"], people["team"]
    return {
        "create_user": lambda s, actor: admin.create_user(
            session=s, actor=actor, username="noah", password="password-123", email="noah@x"
        ),
        "deactivate": lambda s, actor: admin.set_active(session=s, actor=actor, user_id=mia.id, active=False),
        "set_role": lambda s, actor: admin.set_role(session=s, actor=actor, user_id=mia.id, role=Role.admin),
        "set_plan": lambda s, actor: admin.set_plan(session=s, actor=actor, user_id=mia.id, plan=Plan.pro_annual),
        "set_team": lambda s, actor: admin.set_team(session=s, actor=actor, user_id=mia.id, team_id=None),
        "set_team_members": lambda s, actor: admin.set_team_members(
            session=s, actor=actor, team_id=team.id, user_ids=[]
        ),
        "reset_password": lambda s, actor: admin.reset_password(
            session=s, actor=actor, user_id=mia.id, new_password="brand-new-password"
        ),
        "create_team": lambda s, actor: admin.create_team(session=s, actor=actor, name="Video"),
        "rename_team": lambda s, actor: admin.rename_team(session=s, actor=actor, team_id=team.id, name="Art"),
        "set_team_budget": lambda s, actor: admin.set_team_budget(
            session=s, actor=actor, team_id=team.id, monthly_budget=500, budget_alert_percent=90
        ),
        "grant_credits": lambda s, actor: admin.grant_credits(
            session=s, actor=actor, user_id=mia.id, amount=50, reason="launch", now=T0
        ),
        "adjust_credits": lambda s, actor: admin.adjust_credits(
            session=s, actor=actor, team_id=team.id, amount=20, reason="top-up", now=T0
        ),
        "audit_log": lambda s, actor: admin.audit_log(session=s, actor=actor),
    }


@pytest.mark.parametrize(
    "action",
    [
        "create_user",
        "deactivate",
        "set_role",
        "set_plan",
        "set_team",
        "set_team_members",
        "reset_password",
        "create_team",
        "rename_team",
        "set_team_budget",
        "grant_credits",
        "adjust_credits",
        "audit_log",
    ],
)
def test_a_member_is_refused_every_admin_service_and_nothing_changes(session, people, action):
    before = snapshot(session)
    with pytest.raises(Forbidden, match="Only an active administrator"):
        every_action(people)[action](session, people["mia"])
    assert snapshot(session) == before


def test_a_demoted_or_deactivated_admin_is_refused_even_with_a_stale_object(session, people):
    stale_ada = people["ada"]  # still says role=admin
    admin.set_role(session=session, actor=people["admin"], user_id=stale_ada.id, role=Role.member)
    with pytest.raises(Forbidden):
        admin.create_team(session=session, actor=stale_ada, name="Sneaky")
    admin.set_role(session=session, actor=people["admin"], user_id=stale_ada.id, role=Role.admin)
    admin.set_active(session=session, actor=people["admin"], user_id=stale_ada.id, active=False)
    with pytest.raises(Forbidden):
        admin.create_team(session=session, actor=stale_ada, name="Sneaky")
    assert session.exec(select(Team).where(Team.name == "Sneaky")).first() is None


def test_each_action_writes_one_audit_entry_naming_actor_target_and_change(session, people):
    actor, mia, team = people["admin"], people["mia"], people["team"]
    actions = every_action(people)
    expected = [
        ("create_user", AuditAction.user_create, "user noah"),
        ("set_role", AuditAction.user_role, "user mia"),
        ("set_plan", AuditAction.user_plan, "user mia"),
        ("set_team_budget", AuditAction.team_budget, "team Design"),
        ("grant_credits", AuditAction.credit_grant, "user mia"),
        ("adjust_credits", AuditAction.credit_adjust, "team Design"),
        ("reset_password", AuditAction.user_password_reset, "user mia"),
        ("rename_team", AuditAction.team_rename, "team Art"),
        ("create_team", AuditAction.team_create, "team Video"),
        ("set_team", AuditAction.user_team, "user mia"),
        ("deactivate", AuditAction.user_deactivate, "user mia"),
    ]
    for name, action, target in expected:
        count = len(audit(session))
        actions[name](session, actor)
        [entry] = audit(session)[count:]
        assert (entry.actor_id, entry.action, entry.target) == (actor.id, action, target), name
    by_action = {entry.action: entry.details for entry in audit(session)}
    assert by_action[AuditAction.user_role] == {
        "user_id": mia.id,
        "before": "member",
        "after": "admin",
        "sessions_revoked": 0,
    }
    assert by_action[AuditAction.user_plan] == {"user_id": mia.id, "before": "free", "after": "pro_annual"}
    assert by_action[AuditAction.team_budget] == {
        "team_id": team.id,
        "before": {"monthly_budget": None, "budget_alert_percent": 80},
        "after": {"monthly_budget": 500, "budget_alert_percent": 90},
    }
    assert by_action[AuditAction.credit_grant]["amount"] == 50
    assert by_action[AuditAction.credit_grant]["reason"] == "launch"
    assert by_action[AuditAction.user_team]["after"] == {"team_id": None, "can_use_team_pool": False}
    # No password, no hash.
    assert by_action[AuditAction.user_password_reset] == {"user_id": mia.id, "sessions_revoked": 0}


def test_invalid_or_self_directed_actions_are_refused_without_an_audit_entry(session, people):
    actor, mia, team = people["admin"], people["mia"], people["team"]
    refusals = [
        (Forbidden, lambda: admin.set_role(session=session, actor=actor, user_id=actor.id, role=Role.member)),
        (Forbidden, lambda: admin.set_active(session=session, actor=actor, user_id=actor.id, active=False)),
        (Forbidden, lambda: admin.set_plan(session=session, actor=actor, user_id=actor.id, plan=Plan.pro_annual)),
        (
            Forbidden,
            lambda: admin.grant_credits(session=session, actor=actor, user_id=actor.id, amount=5, reason="me"),
        ),
        (
            Forbidden,
            lambda: admin.adjust_credits(session=session, actor=actor, user_id=actor.id, amount=5, reason="me"),
        ),
        (
            Forbidden,
            lambda: admin.set_team(
                session=session, actor=actor, user_id=actor.id, team_id=team.id, can_use_team_pool=True
            ),
        ),
        (Refused, lambda: admin.grant_credits(session=session, actor=actor, user_id=mia.id, amount=5, reason=" ")),
        (Refused, lambda: admin.grant_credits(session=session, actor=actor, user_id=mia.id, amount=0, reason="x")),
        (Refused, lambda: admin.adjust_credits(session=session, actor=actor, user_id=mia.id, amount=-1, reason="")),
        (
            Refused,
            lambda: admin.adjust_credits(session=session, actor=actor, user_id=mia.id, amount=-5, reason="too much"),
        ),  # mia has no credits
        (Refused, lambda: admin.grant_credits(session=session, actor=actor, amount=5, reason="nobody")),
        (Refused, lambda: admin.create_team(session=session, actor=actor, name=" Design ")),
        (Refused, lambda: admin.create_team(session=session, actor=actor, name="X", monthly_budget=-1)),
        (
            Refused,
            lambda: admin.set_team_budget(
                session=session, actor=actor, team_id=team.id, monthly_budget=10, budget_alert_percent=0
            ),
        ),
        (
            Refused,
            lambda: admin.create_user(session=session, actor=actor, username="mia", password="password-1", email="m@x"),
        ),
        (Refused, lambda: admin.reset_password(session=session, actor=actor, user_id=mia.id, new_password="short")),
        (Refused, lambda: admin.set_active(session=session, actor=actor, user_id=mia.id, active=True)),
        (NotFound, lambda: admin.set_role(session=session, actor=actor, user_id=9999, role=Role.admin)),
    ]
    before = snapshot(session)
    for error, call in refusals:
        with pytest.raises(error):
            call()
        assert snapshot(session) == before


def test_the_only_admin_can_neither_deactivate_nor_demote_themselves(session, people):
    actor = people["admin"]
    admin.set_active(session=session, actor=actor, user_id=people["ada"].id, active=False)
    with pytest.raises(Forbidden, match="own account"):
        admin.set_active(session=session, actor=actor, user_id=actor.id, active=False)
    with pytest.raises(Forbidden, match="own account"):
        admin.set_role(session=session, actor=actor, user_id=actor.id, role=Role.member)
    admins = session.exec(select(User).where(User.role == Role.admin, User.is_active)).all()
    assert [user.username for user in admins] == ["admin"]


def test_an_action_whose_audit_entry_cannot_be_written_does_not_happen(session, people):
    def fail(*_):
        raise RuntimeError("disk full")

    event.listen(AuditEntry, "before_insert", fail)
    try:
        with pytest.raises(RuntimeError):
            admin.set_role(session=session, actor=people["admin"], user_id=people["mia"].id, role=Role.admin)
        with pytest.raises(RuntimeError):
            admin.grant_credits(session=session, actor=people["admin"], user_id=people["mia"].id, amount=9, reason="x")
    finally:
        event.remove(AuditEntry, "before_insert", fail)
    session.expire_all()
    assert session.get(User, people["mia"].id).role is Role.member
    assert session.exec(select(func.count()).select_from(CreditEntry).where(CreditEntry.amount == 9)).one() == 0


def test_reset_password_stores_a_new_bcrypt_hash(session, people):
    mia = people["mia"]
    temporary = admin.temporary_password()
    assert len(temporary) >= 16
    admin.reset_password(session=session, actor=people["admin"], user_id=mia.id, new_password=temporary)
    stored = session.get(User, mia.id).password_hash
    assert stored.startswith("$2") and temporary not in stored
    assert verify_password(temporary, stored) and not verify_password("-", stored)


def test_a_created_user_gets_the_trial_plan_and_team(session, people):
    created = admin.create_user(
        session=session,
        actor=people["admin"],
        username="  Noah ",
        password="password-123",
        email="noah@x",
        plan=Plan.pro_monthly,
        team_id=people["team"].id,
    )
    assert (created.username, created.plan, created.team_id) == ("noah", Plan.pro_monthly, people["team"].id)
    assert balance(session=session, account=Account(user_id=created.id), now=datetime.now(UTC)) == 10
    assert verify_password("password-123", created.password_hash)


def test_grants_and_adjustments_reach_users_and_team_pools_with_actor_and_reason(session, people):
    actor, mia, team = people["admin"], people["mia"], people["team"]
    admin.grant_credits(
        session=session,
        actor=actor,
        user_id=mia.id,
        amount=30,
        reason=" welcome ",
        now=T0,
        expires_at=T0 + timedelta(days=30),
    )
    admin.adjust_credits(session=session, actor=actor, user_id=mia.id, amount=-12, reason="double grant", now=T0)
    admin.adjust_credits(session=session, actor=actor, team_id=team.id, amount=40, reason="budget", now=T0)
    assert balance(session=session, account=Account(user_id=mia.id), now=T0) == 18
    assert balance(session=session, account=Account(team_id=team.id), now=T0) == 40
    assert balance(session=session, account=Account(user_id=mia.id), now=T0 + timedelta(days=31)) == 0
    rows = session.exec(select(CreditEntry).where(CreditEntry.actor_id == actor.id).order_by(CreditEntry.id)).all()
    assert [(r.kind, r.amount, r.reason) for r in rows] == [
        (CreditKind.grant, 30, "welcome"),
        (CreditKind.adjustment, -12, "double grant"),
        (CreditKind.adjustment, 40, "budget"),
    ]


def test_an_admin_who_draws_on_a_team_pool_cannot_fund_it(session, people):
    ada, team = people["ada"], people["team"]
    admin.set_team(session=session, actor=people["admin"], user_id=ada.id, team_id=team.id, can_use_team_pool=True)
    with pytest.raises(Forbidden, match="pool yourself"):
        admin.grant_credits(session=session, actor=ada, team_id=team.id, amount=100, reason="for us")
    admin.grant_credits(session=session, actor=people["admin"], team_id=team.id, amount=100, reason="for them")


def test_set_team_members_moves_exactly_the_difference_and_drops_pool_access(session, people):
    actor, mia, team = people["admin"], people["mia"], people["team"]
    video = admin.create_team(session=session, actor=actor, name="Video")
    leo = make_user(session, "leo", team_id=video.id, can_use_team_pool=True)
    moved = admin.set_team_members(session=session, actor=actor, team_id=team.id, user_ids=[leo.id])
    assert sorted(user.username for user in moved) == ["leo", "mia"]
    session.expire_all()
    assert session.get(User, mia.id).team_id is None
    assert (session.get(User, leo.id).team_id, session.get(User, leo.id).can_use_team_pool) == (team.id, False)
    entries = audit(session, action=AuditAction.user_team)
    assert [(e.target, e.details["after"]["team_id"]) for e in entries] == [("user mia", None), ("user leo", team.id)]
    assert admin.set_team_members(session=session, actor=actor, team_id=team.id, user_ids=[leo.id]) == []


def test_the_audit_log_filters_and_is_append_only(session, people):
    actor = people["admin"]
    admin.create_team(session=session, actor=actor, name="Video")
    admin.set_plan(session=session, actor=actor, user_id=people["mia"].id, plan=Plan.pro_monthly)
    admin.set_plan(session=session, actor=people["ada"], user_id=people["mia"].id, plan=Plan.free)
    log = admin.audit_log(session=session, actor=actor)
    assert [e.action for e in log] == [AuditAction.user_plan, AuditAction.user_plan, AuditAction.team_create]
    assert len(admin.audit_log(session=session, actor=actor, filters=AuditFilter(actor_id=people["ada"].id))) == 1
    assert len(admin.audit_log(session=session, actor=actor, filters=AuditFilter(action=AuditAction.team_create))) == 1
    assert len(admin.audit_log(session=session, actor=actor, filters=AuditFilter(target_contains="mia"))) == 2
    later = AuditFilter(since=datetime.now(UTC) + timedelta(minutes=1))
    assert admin.audit_log(session=session, actor=actor, filters=later) == []

    entry = log[0]
    entry.target = "user someone-else"
    with pytest.raises(PermissionError, match="append-only"):
        session.commit()
    session.rollback()
    session.delete(log[1])
    with pytest.raises(PermissionError, match="append-only"):
        session.commit()
    session.rollback()
    for statement in ("UPDATE auditentry SET target = 'x'", "DELETE FROM auditentry"):
        with pytest.raises(IntegrityError, match="append-only"):
            session.exec(text(statement))
        session.rollback()
    assert len(admin.audit_log(session=session, actor=actor)) == 3
