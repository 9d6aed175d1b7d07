"""A fresh install's first admin can use every feature (a plan and credits from the configuration), and the
operator's services (what `python -m studio admin …` calls) act without an admin account, audited as the operator."""

from __future__ import annotations

import pytest
from sqlmodel import select

from studio.accounts import admin
from studio.accounts.bootstrap import bootstrap
from studio.accounts.users import create_user, get_user
from studio.billing.credits import Account, ledger_sum
from studio.config import get_settings, load_settings
from studio.db.engine import session_for, write_session
from studio.db.tables import AuditAction, AuditEntry, CreditEntry, Plan, Role
from studio.errors import ConfigError, Refused


@pytest.fixture
def fresh_install(studio_settings, monkeypatch):
    """The settings of a fresh install left at the defaults (the suite's studio_settings make the admin Free)."""
    monkeypatch.delenv("STUDIO_ADMIN_PLAN")
    monkeypatch.delenv("STUDIO_ADMIN_CREDITS")
    get_settings.cache_clear()
    return get_settings()


def audit(settings) -> list[AuditEntry]:
    with session_for(settings.database_url) as session:
        return list(session.exec(select(AuditEntry).order_by(AuditEntry.id)))


def test_the_first_admin_of_a_fresh_install_is_pro_with_credits_audited_as_the_operator(fresh_install):
    bootstrap(fresh_install)
    bootstrap(fresh_install)  # a second start changes nothing
    with session_for(fresh_install.database_url) as session:
        first = get_user(session=session, username="admin")
        assert (first.role, first.plan) == (Role.admin, Plan.pro_monthly)
        assert ledger_sum(session=session, account=Account(user_id=first.id)) == 10 + 1000  # trial + configured
    [entry] = audit(fresh_install)
    assert (entry.actor_id, entry.action, entry.target) == (None, AuditAction.user_create, "user admin")
    assert entry.details | {"user_id": 0} == {
        "user_id": 0,
        "role": "admin",
        "plan": "pro_monthly",
        "credits": 1000,
        "first_run": True,
        "by": "operator",
    }


def test_the_first_admins_plan_and_credits_come_from_the_configuration(fresh_install, monkeypatch):
    monkeypatch.setenv("STUDIO_ADMIN_PLAN", "pro_annual")
    monkeypatch.setenv("STUDIO_ADMIN_CREDITS", "25")
    get_settings.cache_clear()
    settings = get_settings()
    bootstrap(settings)
    with session_for(settings.database_url) as session:
        first = get_user(session=session, username="admin")
        assert first.plan is Plan.pro_annual
        assert ledger_sum(session=session, account=Account(user_id=first.id)) == 35


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("STUDIO_ADMIN_PLAN", "gold", "STUDIO_ADMIN_PLAN must be one of free, pro_monthly, pro_annual"),
        ("STUDIO_ADMIN_CREDITS", "-5", "STUDIO_ADMIN_CREDITS must be a whole number of credits 0–1000000"),
        ("STUDIO_ADMIN_CREDITS", "1000001", "STUDIO_ADMIN_CREDITS must be a whole number"),
        ("STUDIO_ADMIN_CREDITS", "ten", "STUDIO_ADMIN_CREDITS must be a whole number"),
    ],
)
def test_a_bad_first_admin_setting_is_refused_with_its_name(name, value, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        load_settings({name: value}, secrets_path=tmp_path / "none.toml")


def test_the_operator_grants_the_only_admin_credits_and_the_audit_log_says_so(studio, studio_settings):
    with write_session(studio_settings.database_url) as session:
        first = get_user(session=session, username="admin")
        admin.grant_credits(session=session, actor=admin.OPERATOR, user_id=first.id, amount=500, reason="launch")
        admin.set_plan(session=session, actor=admin.OPERATOR, user_id=first.id, plan=Plan.pro_annual)
        assert ledger_sum(session=session, account=Account(user_id=first.id)) == 510
        grant = session.exec(select(CreditEntry).where(CreditEntry.amount == 500)).one()
        assert grant.actor_id is None and grant.reason == "launch"
    grant_entry, plan_entry = audit(studio_settings)
    assert (grant_entry.actor_id, grant_entry.action, grant_entry.details["by"]) == (
        None,
        AuditAction.credit_grant,
        "operator",
    )
    assert plan_entry.details == {"user_id": first.id, "before": "free", "after": "pro_annual", "by": "operator"}
    assert admin.audit_actor(grant_entry, {}) == "operator"


def test_the_operator_cannot_demote_or_deactivate_the_last_active_admin(studio, studio_settings):
    with write_session(studio_settings.database_url) as session:
        first = get_user(session=session, username="admin")
        with pytest.raises(Refused, match="only active admin"):
            admin.set_role(session=session, actor=admin.OPERATOR, user_id=first.id, role=Role.member)
        with pytest.raises(Refused, match="only active admin"):
            admin.set_active(session=session, actor=admin.OPERATOR, user_id=first.id, active=False)
        # With a second admin, the operator may.
        create_user(session=session, username="ops", password="ops-password", email="o@x.org", role=Role.admin)
        admin.set_role(session=session, actor=admin.OPERATOR, user_id=first.id, role=Role.member)
        assert session.get(type(first), first.id).role is Role.member
    assert [entry.action for entry in audit(studio_settings)] == [AuditAction.user_role]


def test_a_refused_operator_action_changes_nothing(studio, studio_settings):
    with write_session(studio_settings.database_url) as session:
        first = get_user(session=session, username="admin")
        for amount in (0, -5):
            with pytest.raises(Refused):
                admin.grant_credits(session=session, actor=admin.OPERATOR, user_id=first.id, amount=amount, reason="x")
        assert ledger_sum(session=session, account=Account(user_id=first.id)) == 10
    assert audit(studio_settings) == []
