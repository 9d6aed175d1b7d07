"""Batch uploads in bounded memory (studio.batches.uploads, studio.media.staging): one image decoded at a time,
the accepted ones staged on disk with only thumbnails kept, a cap on the pixels one batch may decode."""

from __future__ import annotations

import io
import os

import pytest
from PIL import Image

import studio.batches.uploads
from studio.batches.uploads import THUMBNAIL_SIDE, THUMBNAILS, read_uploads
from studio.config import load_settings
from studio.errors import ConfigError, Refused
from studio.media.staging import StagedImage, purge_staged
from studio.media.storage import AssetStore, sha256_hex
from studio.media.validation import OverPixelBudget, validate_image_bytes
from tests.support import png_bytes, zip_of


@pytest.fixture
def staging(tmp_path) -> AssetStore:
    return AssetStore(tmp_path / "staging")


def test_accepted_images_are_staged_on_disk_and_only_thumbnails_stay_in_memory(staging):
    files = [(f"{n}.png", png_bytes(256 + 8 * n, 256)) for n in range(THUMBNAILS + 2)]
    uploads = read_uploads(files, staging=staging, max_pixels=None)
    assert [image.name for image in uploads.images] == [name for name, _ in files]
    for image, (_, data) in zip(uploads.images, files, strict=True):
        staged = image.path.read_bytes()  # the normalised PNG, under its hash, on disk
        assert sha256_hex(staged) == image.sha256 and image.path.parent.parent == staging.root
        assert (image.width, image.height) == (validate_image_bytes(data).width, 256)
        assert not any(isinstance(value, bytes | Image.Image) for value in vars(image).values())
    assert len(uploads.thumbnails) == THUMBNAILS  # the first few only
    for thumbnail in uploads.thumbnails:
        assert max(Image.open(io.BytesIO(thumbnail)).size) <= THUMBNAIL_SIDE
    assert uploads.pixels == sum(image.width * image.height for image in uploads.images)


def test_a_batch_past_its_pixel_cap_skips_the_rest_with_the_cap_in_the_message(staging, monkeypatch):
    decoded = []
    real_validate = studio.batches.uploads.validate_image_bytes

    def validate(data, **kwargs):
        image = real_validate(data, **kwargs)
        decoded.append(image.width * image.height)
        return image

    monkeypatch.setattr(studio.batches.uploads, "validate_image_bytes", validate)
    small, large = png_bytes(600, 600), png_bytes(900, 900)  # 0.36 and 0.81 megapixels
    archive = zip_of({"in/a.png": small, "in/big.png": large, "in/b.png": small})
    uploads = read_uploads([("set.zip", archive), ("c.png", small)], staging=staging, max_pixels=1_000_000)
    assert [image.name for image in uploads.images] == ["a.png", "b.png"]
    reasons = dict(uploads.rejected)
    assert set(reasons) == {"big.png", "c.png"}
    assert reasons["big.png"] == (
        "not read: its 0.8 megapixels would take the batch past the 1 megapixels one batch may decode "
        "(0.4 so far); run it in another batch."
    )
    assert reasons["c.png"].startswith("not read: its 0.4 megapixels") and "(0.7 so far)" in reasons["c.png"]
    assert decoded == [360_000, 360_000] and uploads.pixels == 720_000  # nothing past the cap was decoded


def test_an_image_over_the_budget_is_refused_from_its_header_before_decoding():
    data = png_bytes(300, 300)
    with pytest.raises(OverPixelBudget) as refused:
        validate_image_bytes(data, pixel_budget=300 * 300 - 1)
    assert refused.value.pixels == 90_000
    assert validate_image_bytes(data, pixel_budget=300 * 300).width == 300


def test_a_batch_takes_at_most_its_image_limit_and_lists_the_rest(staging):
    files = [(f"{n}.png", png_bytes(256, 256 + 8 * n)) for n in range(4)]
    uploads = read_uploads(files, staging=staging, max_pixels=None, max_images=3)
    assert [image.name for image in uploads.images] == ["0.png", "1.png", "2.png"]
    assert uploads.rejected == [("3.png", "not read: a batch takes at most 3 images; run it in another batch.")]


def test_uploads_may_be_open_files_or_paths_and_oversized_files_are_not_read(staging, tmp_path):
    on_disk = tmp_path / "disk.png"
    on_disk.write_bytes(png_bytes(256, 264))
    too_big = io.BytesIO(b"\x89PNG" + b"\0" * (10 * 1024 * 1024 + 1))
    uploads = read_uploads(
        [("open.png", io.BytesIO(png_bytes())), ("disk.png", on_disk), ("huge.png", too_big)],
        staging=staging,
        max_pixels=None,
    )
    assert [image.name for image in uploads.images] == ["open.png", "disk.png"]
    assert uploads.rejected == [("huge.png", "File too large: 10.0 MB, max 10 MB.")]


def test_a_staged_image_that_expired_or_changed_is_refused(staging):
    [image] = read_uploads([("a.png", png_bytes())], staging=staging, max_pixels=None).images
    assert image.read() == image.path.read_bytes()
    damaged = StagedImage(image.name, "0" * 64, image.width, image.height, image.path)
    with pytest.raises(Refused, match=r"staged copy of a\.png is damaged"):
        damaged.read()
    image.path.unlink()
    with pytest.raises(Refused, match=r"a\.png is no longer staged .*upload it again\. Nothing was charged\."):
        image.read()


def test_purge_deletes_only_staged_files_older_than_its_age(staging):
    images = read_uploads(
        [("old.png", png_bytes(256, 256)), ("new.png", png_bytes(256, 272))], staging=staging, max_pixels=None
    ).images
    old, new = (image.path for image in images)
    os.utime(old, (1_000_000, 1_000_000))
    os.utime(new, (2_000_000, 2_000_000))
    assert purge_staged(staging, max_age_s=1000, now=2_000_500) == 1
    assert not old.exists() and new.exists()


@pytest.mark.parametrize(
    ("key", "value"),
    [("STUDIO_MAX_JOBS_PER_USER", "0"), ("STUDIO_MAX_JOBS_PER_USER", "ten"), ("STUDIO_MAX_BATCH_MEGAPIXELS", "-5")],
)
def test_the_limits_are_configurable_and_bad_values_refused(tmp_path, key, value):
    env = {"STUDIO_DATA_DIR": str(tmp_path / "data")}
    settings = load_settings(
        {**env, "STUDIO_MAX_JOBS_PER_USER": "7", "STUDIO_MAX_BATCH_MEGAPIXELS": "50"}, secrets_path=tmp_path / "x"
    )
    assert (settings.max_jobs_per_user, settings.max_batch_pixels) == (7, 50_000_000)
    with pytest.raises(ConfigError, match=f"{key} must be a whole number"):
        load_settings({**env, key: value}, secrets_path=tmp_path / "x")
