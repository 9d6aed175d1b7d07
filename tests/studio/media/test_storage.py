import threading

import pytest

from studio.media.storage import AssetStore, sha256_hex


def test_put_is_content_addressed_and_idempotent(tmp_path):
    store = AssetStore(tmp_path)
    sha = store.put(b"hello")
    assert sha == sha256_hex(b"hello")
    assert store.path(sha) == tmp_path / sha[:2] / sha
    assert store.read(sha) == b"hello"
    assert store.put(b"hello") == sha
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [sha]


def test_path_refuses_anything_but_a_digest(tmp_path):
    store = AssetStore(tmp_path)
    for bad in ["../../etc/passwd", "photo.png", "A" * 64, "0" * 63, ""]:
        with pytest.raises(ValueError, match="SHA-256"):
            store.path(bad)


def test_concurrent_writers_of_the_same_bytes_leave_one_complete_file(tmp_path):
    store = AssetStore(tmp_path)
    data = bytes(range(256)) * 4096
    threads = [threading.Thread(target=store.put, args=(data,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 1
    assert files[0].read_bytes() == data


def test_delete_and_exists(tmp_path):
    store = AssetStore(tmp_path)
    sha = store.put(b"x")
    assert store.exists(sha)
    store.delete(sha)
    assert not store.exists(sha)
    store.delete(sha)  # deleting twice is harmless


def test_storage_dir_setting_moves_the_asset_store(tmp_path) -> None:
    from studio.config import load_settings

    env = {"STUDIO_DATA_DIR": str(tmp_path / "data")}
    assert load_settings(env, secrets_path=tmp_path / "none.toml").assets_dir == tmp_path / "data" / "assets"
    shared = load_settings({**env, "STUDIO_STORAGE_DIR": str(tmp_path / "shared")}, secrets_path=tmp_path / "x")
    assert shared.assets_dir == tmp_path / "shared"
    with pytest.raises(ValueError, match="must be a folder"):
        load_settings({**env, "STUDIO_STORAGE_DIR": "s3://bucket/assets"}, secrets_path=tmp_path / "x")
