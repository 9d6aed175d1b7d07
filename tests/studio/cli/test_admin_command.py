"""`python -m studio admin …` (the operator's commands) and the first-run set-up every command does."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlmodel import select

from studio.accounts.users import get_user, verify_password
from studio.billing.credits import Account, ledger_sum
from studio.cli.main import main
from studio.config import get_settings
from studio.db.engine import session_for
from studio.db.tables import AuditAction, AuditEntry, Plan, Role, Team
from tests.support import png_bytes


def audit(settings) -> list[AuditEntry]:
    with session_for(settings.database_url) as session:
        return list(session.exec(select(AuditEntry).order_by(AuditEntry.id)))


def balance_of(settings, username: str) -> int:
    with session_for(settings.database_url) as session:
        return ledger_sum(session=session, account=Account(user_id=get_user(session=session, username=username).id))


def test_on_an_empty_data_folder_the_operator_grants_the_first_admin_credits(studio_settings, capsys):
    assert not studio_settings.data_dir.exists()  # nothing set up yet: the command does the first run
    assert main(["admin", "grant", "--user", "admin", "--credits", "50", "--reason", "launch week"]) == 0
    assert capsys.readouterr().out.strip() == "Granted 50 credits to user admin."
    assert balance_of(studio_settings, "admin") == 60  # trial + grant
    [entry] = audit(studio_settings)  # (the suite's first admin is Free with no credits: no first-run entry)
    assert (entry.actor_id, entry.action, entry.target) == (None, AuditAction.credit_grant, "user admin")
    assert entry.details["by"] == "operator" and entry.details["reason"] == "launch week"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["grant", "--user", "nobody", "--credits", "5", "--reason", "x"], "There is no user 'nobody'."),
        (["grant", "--team", "Design", "--credits", "5", "--reason", "x"], "There is no team 'Design'."),
        (["grant", "--user", "admin", "--credits", "0", "--reason", "x"], "Credits are whole positive numbers"),
        (["grant", "--user", "admin", "--credits", "5", "--reason", " "], "Say why the credits are added."),
        (
            ["grant", "--user", "admin", "--credits", "5", "--reason", "x", "--expires", "2000-01-01"],
            "is not in the future",
        ),
        (["role", "--user", "admin", "--role", "member"], "admin is the studio's only active admin"),
        (["create-user", "--username", "admin", "--email", "a@x.org"], "Username 'admin' is taken."),
        (["create-user", "--username", "x", "--email", "a@x.org"], "Username must be 3–32 characters"),
        (["plan", "--user", "ghost", "--plan", "pro_annual"], "There is no user 'ghost'."),
    ],
)
def test_bad_input_says_why_and_changes_nothing(studio, studio_settings, capsys, args, message):
    assert main(["admin", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Nothing changed: ") and message in err, err
    assert balance_of(studio_settings, "admin") == 10
    assert audit(studio_settings) == []
    with session_for(studio_settings.database_url) as session:
        first = get_user(session=session, username="admin")
        assert (first.role, first.plan) == (Role.admin, Plan.free)


def test_create_a_user_set_plan_and_role_reset_the_password_and_grant_a_team(studio, studio_settings, capsys):
    assert main(["admin", "create-user", "--username", "mia", "--email", "mia@x.org", "--plan", "pro_annual"]) == 0
    password = re.search(r"Temporary password \(shown once\): (\S+)", capsys.readouterr().out).group(1)
    assert main(["admin", "role", "--user", "mia", "--role", "admin"]) == 0
    assert main(["admin", "plan", "--user", "mia", "--plan", "free"]) == 0
    assert main(["admin", "reset-password", "--user", "mia"]) == 0
    new_password = re.search(r"signed out everywhere\): (\S+)", capsys.readouterr().out).group(1)
    with session_for(studio_settings.database_url) as session:
        mia = get_user(session=session, username="mia")
        assert (mia.role, mia.plan) == (Role.admin, Plan.free)
        assert verify_password(new_password, mia.password_hash) and not verify_password(password, mia.password_hash)
        session.add(Team(name="Design"))
        session.commit()
    assert main(["admin", "grant", "--team", "Design", "--credits", "200", "--reason", "pool"]) == 0
    entries = audit(studio_settings)
    assert [e.action for e in entries] == [
        AuditAction.user_create,
        AuditAction.user_role,
        AuditAction.user_plan,
        AuditAction.user_password_reset,
        AuditAction.credit_grant,
    ]
    assert all(e.actor_id is None and e.details["by"] == "operator" for e in entries)
    assert entries[-1].target == "team Design"
    assert not any(password in str(e.details) or new_password in str(e.details) for e in entries)


def test_transform_on_an_empty_data_folder_does_the_first_run_and_runs(studio_settings, tmp_path: Path, capsys):
    source = tmp_path / "shoe.png"
    source.write_bytes(png_bytes(256, 256))
    args = ["transform", "--user", "admin", str(source), "--output", str(tmp_path / "out"), "--prompt", "red"]
    args += ["--steps", "2"]
    assert main(args) == 0, capsys.readouterr()
    assert (tmp_path / "out" / "shoe-img2img.png").is_file()


def test_a_command_refuses_to_start_on_a_bad_configuration(studio_settings, monkeypatch, capsys):
    monkeypatch.setenv("STUDIO_ADMIN_PLAN", "gold")
    get_settings.cache_clear()
    assert main(["admin", "plan", "--user", "admin", "--plan", "free"]) == 2
    assert "The studio cannot start: STUDIO_ADMIN_PLAN must be one of" in capsys.readouterr().err
    assert not (studio_settings.data_dir / "studio.db").exists()
