import re

import pytest
from sqlmodel import select

from studio.accounts.users import check_new_password, create_user, get_active_user, hash_password, verify_password
from studio.db.engine import session_for
from studio.db.tables import User
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


def test_deactivated_and_unknown_users_are_not_active_users(session):
    create_user(session=session, username="Dana", password="dana-password", email="dana@example.com")
    gone = create_user(session=session, username="gone", password="gone-password", email="g@example.com")
    gone.is_active = False
    session.commit()
    assert get_active_user(session=session, username="gone") is None
    assert get_active_user(session=session, username="nobody") is None
    assert get_active_user(session=session, username="DANA").username == "dana"


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("short", "at least 8 characters"),
        ("x" * 73, "at most 72 bytes (bcrypt's limit); this one is 73 bytes"),
        ("é" * 37, "this one is 74 bytes"),  # 37 characters, 2 bytes each
        (" spaced-password", "cannot begin or end with a space"),
        ("spaced-password ", "cannot begin or end with a space"),
    ],
)
def test_a_password_bcrypt_cannot_take_is_refused_with_the_rule_not_a_traceback(password, message):
    with pytest.raises(Refused, match=re.escape(message)):
        check_new_password(password)
    with pytest.raises(Refused, match=re.escape(message)):
        hash_password(password)


def test_a_password_of_exactly_72_bytes_is_set_and_checked(session):
    password = "é" * 36  # 72 bytes
    user = create_user(session=session, username="long", password=password, email="long@example.com")
    assert verify_password(password, user.password_hash)
    assert not verify_password(password + "x", user.password_hash)  # 73 bytes: wrong, never a ValueError


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
