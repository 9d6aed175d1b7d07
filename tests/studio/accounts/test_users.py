import pytest
from sqlmodel import select

from studio.accounts.users import authenticator_credentials, create_user, get_active_user
from studio.db.engine import session_for
from studio.db.tables import Role, User
from studio.errors import Refused


@pytest.fixture
def session(studio, studio_settings):
    with session_for(studio_settings.database_url) as session:
        yield session


@pytest.mark.parametrize(
    ("username", "password", "email", "message"),
    [
        ("ab", "long-enough", "a@b.c", "3–32 characters"),
        ("has space", "long-enough", "a@b.c", "3–32 characters"),
        ("../etc", "long-enough", "a@b.c", "3–32 characters"),
        ("newuser", "short", "a@b.c", "at least 8"),
        ("newuser", "long-enough", "not-an-email", "e-mail"),
        ("ADMIN", "long-enough", "a@b.c", "taken"),
    ],
)
def test_invalid_users_are_refused_and_nothing_is_stored(session, username, password, email, message):
    before = len(session.exec(select(User)).all())
    with pytest.raises(Refused, match=message):
        create_user(session=session, username=username, password=password, email=email)
    assert len(session.exec(select(User)).all()) == before


def test_credentials_for_the_authenticator_come_from_active_users_only(session):
    create_user(session=session, username="Dana", password="dana-password", email="dana@example.com")
    gone = create_user(session=session, username="gone", password="gone-password", email="g@example.com")
    gone.is_active = False
    session.commit()

    users = authenticator_credentials(session=session)["usernames"]
    assert set(users) == {"admin", "dana"}
    assert users["dana"]["roles"] == [Role.member.value]
    assert users["dana"]["password"].startswith("$2")  # a bcrypt hash, never the password
    assert get_active_user(session=session, username="gone") is None
    assert get_active_user(session=session, username="DANA").username == "dana"


def test_creating_a_user_while_a_worker_keeps_writing_does_not_hit_a_locked_database(studio, studio_settings):
    """Regression: a deferred transaction that read, hashed (~0.25 s), then inserted could not upgrade to a
    write while another connection committed meanwhile, and SQLite failed at once with 'database is locked'."""
    import threading

    from sqlalchemy import text

    from studio.db.engine import get_engine, write_session

    stop = threading.Event()

    def keep_writing():
        engine = get_engine(studio_settings.database_url)
        while not stop.is_set():
            with engine.begin() as conn:
                conn.execute(text("UPDATE user SET plan = plan WHERE id = 1"))
            stop.wait(0.02)

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        for name in ("ana", "ben", "cyd"):
            with write_session(studio_settings.database_url) as session:
                create_user(session=session, username=name, password="long-enough", email=f"{name}@example.com")
    finally:
        stop.set()
        writer.join()
