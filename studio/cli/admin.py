"""`python -m studio admin …`: the operator's commands on the server — grant credits, set a plan or role, create a
user, reset a password. They act as the operator (studio.accounts.admin.OPERATOR): no admin account is needed, so
the only admin of a fresh install can be given credits, and every change is in the audit log as the operator's."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from sqlmodel import Session, select

from studio.accounts import admin
from studio.accounts.users import get_user
from studio.config import get_settings
from studio.db.engine import write_session
from studio.db.tables import Plan, Role, Team, User
from studio.errors import NotFound, Refused, StudioError

EXIT_OK, EXIT_REFUSED = 0, 2


def add_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "admin",
        help="the operator's commands: grant credits, set a plan or role, create a user, reset a password",
        description="Administer the studio from the server, as the operator (recorded so in the audit log).",
    )
    actions = parser.add_subparsers(dest="action", required=True)

    grant = actions.add_parser("grant", help="give a user or a team pool a lot of credits")
    target = grant.add_mutually_exclusive_group(required=True)
    target.add_argument("--user", help="username")
    target.add_argument("--team", help="team name (its pool)")
    grant.add_argument("--credits", type=int, required=True, help="how many (a whole positive number)")
    grant.add_argument("--reason", required=True, help="why (kept in the ledger and the audit log)")
    grant.add_argument("--expires", type=_date, help="YYYY-MM-DD: the lot expires at the start of that day (UTC)")
    grant.set_defaults(action_run=_grant)

    plan = actions.add_parser("plan", help="set a user's plan")
    plan.add_argument("--user", required=True, help="username")
    plan.add_argument("--plan", required=True, choices=[p.value for p in Plan])
    plan.set_defaults(action_run=_plan)

    role = actions.add_parser("role", help="make a user an admin or a member")
    role.add_argument("--user", required=True, help="username")
    role.add_argument("--role", required=True, choices=[r.value for r in Role])
    role.set_defaults(action_run=_role)

    create = actions.add_parser("create-user", help="add an account; prints its temporary password once")
    create.add_argument("--username", required=True)
    create.add_argument("--email", required=True)
    create.add_argument("--name", help="display name (default: the username)")
    create.add_argument("--role", choices=[r.value for r in Role], default=Role.member.value)
    create.add_argument("--plan", choices=[p.value for p in Plan], default=Plan.free.value)
    create.add_argument("--team", help="team name")
    create.set_defaults(action_run=_create_user)

    reset = actions.add_parser("reset-password", help="a new temporary password (printed once); signs them out")
    reset.add_argument("--user", required=True, help="username")
    reset.set_defaults(action_run=_reset_password)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """One action in one transaction; a refusal (unknown user, bad amount…) prints why and changes nothing."""
    with write_session(get_settings().database_url) as session:
        try:
            message = args.action_run(session, args)
        except StudioError as exc:
            session.rollback()
            print(f"Nothing changed: {exc}", file=sys.stderr)
            return EXIT_REFUSED
    print(message)
    return EXIT_OK


def _date(text: str) -> datetime:
    try:
        return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _user(session: Session, username: str) -> User:
    user = get_user(session=session, username=username)
    if user is None:
        raise NotFound(f"There is no user {username!r}.")
    return user


def _team(session: Session, name: str) -> Team:
    team = session.exec(select(Team).where(Team.name == name.strip())).first()
    if team is None:
        raise NotFound(f"There is no team {name!r}.")
    return team


def _grant(session: Session, args: argparse.Namespace) -> str:
    if args.expires is not None and args.expires <= datetime.now(UTC):
        raise Refused(f"The expiry {args.expires:%Y-%m-%d} is not in the future.")
    target = {"user_id": _user(session, args.user).id} if args.user else {"team_id": _team(session, args.team).id}
    admin.grant_credits(
        session=session,
        actor=admin.OPERATOR,
        amount=args.credits,
        reason=args.reason,
        expires_at=args.expires,
        **target,
    )
    return f"Granted {args.credits} credits to {f'user {args.user}' if args.user else f'team {args.team}'}."


def _plan(session: Session, args: argparse.Namespace) -> str:
    user_id = _user(session, args.user).id
    user = admin.set_plan(session=session, actor=admin.OPERATOR, user_id=user_id, plan=Plan(args.plan))
    return f"{user.username} is now on the {user.plan.value} plan."


def _role(session: Session, args: argparse.Namespace) -> str:
    role = Role(args.role)
    user = admin.set_role(session=session, actor=admin.OPERATOR, user_id=_user(session, args.user).id, role=role)
    return f"{user.username} is now {'an' if role is Role.admin else 'a'} {role.value}."


def _create_user(session: Session, args: argparse.Namespace) -> str:
    password = admin.temporary_password()
    user = admin.create_user(
        session=session,
        actor=admin.OPERATOR,
        username=args.username,
        password=password,
        email=args.email,
        display_name=args.name,
        role=Role(args.role),
        plan=Plan(args.plan),
        team_id=_team(session, args.team).id if args.team else None,
    )
    return (
        f"Created {user.username} ({user.role.value}, {user.plan.value}). Temporary password (shown once): {password}"
    )


def _reset_password(session: Session, args: argparse.Namespace) -> str:
    password = admin.temporary_password()
    user = admin.reset_password(
        session=session, actor=admin.OPERATOR, user_id=_user(session, args.user).id, new_password=password
    )
    return f"New temporary password for {user.username} (shown once; signed out everywhere): {password}"
