"""Batch uploads: image files or ZIPs of them; each image is validated like any upload, and the ones that
cannot be used are listed with the reason.

Memory stays bounded whatever is uploaded: images are read and decoded one at a time (ZIP members too, straight
from the archive), and only one image per process is decoded at any moment (`_DECODING`), however many people
upload at once. Each accepted image's normalised PNG is staged on disk (studio.media.staging); what comes back
is its name, size and hash, and small thumbnails of the first few, which is all the page shows. What a batch
may decode is capped: at most `max_images` images (a batch takes MAX_BATCH_IMAGES) and `max_pixels` pixels in all,
read from each image's header before its pixels are decoded; the images past either limit are listed as skipped,
with the reason. A ZIP may carry a mask beside each image (studio.batches.masks): then the batch inpaints.
"""

from __future__ import annotations

import io
import threading
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from PIL import Image

from studio.batches.masks import BatchMask, is_mask_name, pair_masks, read_mask
from studio.jobs.submit import MAX_BATCH_IMAGES
from studio.media.staging import StagedImage, stage
from studio.media.storage import AssetStore
from studio.media.validation import MAX_UPLOAD_BYTES, OverPixelBudget, UploadRejected, validate_image_bytes

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
MAX_ZIP_MEMBERS = 500
MAX_ZIP_TOTAL_BYTES = 1024 * 1024 * 1024  # uncompressed; a ZIP that claims more is refused unopened
THUMBNAILS = 12  # the page shows the first few accepted images
THUMBNAIL_SIDE = 160

# One decode at a time in this process: a decoded 4096² image and its conversions take a few hundred MB,
# so several sessions decoding together would add up; this way they take turns, image by image.
_DECODING = threading.Lock()

# An upload: its bytes, a file on disk, or an open binary file (Streamlit's UploadedFile).
Upload = bytes | Path | BinaryIO


@dataclass(frozen=True)
class BatchUploads:
    images: list[StagedImage]  # in upload order, staged on disk
    rejected: list[tuple[str, str]]  # (name, why)
    thumbnails: list[bytes] = field(default_factory=list)  # JPEGs of the first THUMBNAILS images
    pixels: int = 0  # decoded, in all
    masks: list[StagedImage] = field(default_factory=list)  # none, or masks[i] for images[i] (an inpainting batch)


def read_uploads(
    files: Iterable[tuple[str, Upload]],
    *,
    staging: AssetStore,
    max_pixels: int | None,
    max_images: int | None = MAX_BATCH_IMAGES,
) -> BatchUploads:
    """Images and ZIPs of images → the usable images, staged, and for each file that is not, the reason.

    None for a limit: no limit (the command line's `transform`, which submits the images one by one).
    """
    reader = _Reader(staging, max_images, max_pixels)
    for name, upload in files:
        if _is_zip(name, upload):
            for member_name, member_data in _zip_members(name, upload, reader.rejected):
                reader.add(member_name, member_data)
        else:
            reader.add(name, _read_bounded(name, upload, reader.rejected))
    return reader.uploads()


class _Reader:
    """Validates images one at a time, stages the accepted ones, and keeps count against the batch's limits."""

    def __init__(self, staging: AssetStore, max_images: int | None, max_pixels: int | None) -> None:
        self.staging, self.max_images, self.max_pixels = staging, max_images, max_pixels
        self.images: list[StagedImage] = []
        self.rejected: list[tuple[str, str]] = []
        self.thumbnails: list[bytes] = []  # of images[:THUMBNAILS]
        self.masks: list[BatchMask] = []
        self.pixels = 0

    def uploads(self) -> BatchUploads:
        """What was read; with masks, only the images with a good one (the others listed, with the reason)."""
        if not self.masks:
            return BatchUploads(self.images, self.rejected, self.thumbnails, self.pixels)
        paired = pair_masks(self.images, self.masks)
        kept = {image.sha256 for image in paired.images}
        thumbnails = [thumb for image, thumb in zip(self.images, self.thumbnails, strict=False) if image.sha256 in kept]
        return BatchUploads(paired.images, self.rejected + paired.rejected, thumbnails, self.pixels, paired.masks)

    def add(self, name: str, data: bytes | None) -> None:
        if data is None:  # refused before it was read (its reason is listed)
            return
        if is_mask_name(name):  # never an image to transform
            with _DECODING:
                self.masks.append(read_mask(self.staging, name, data))
            return
        if self.max_images is not None and len(self.images) >= self.max_images:
            why = f"not read: a batch takes at most {self.max_images} images; run it in another batch."
            self.rejected.append((name, why))
            return
        budget = None if self.max_pixels is None else self.max_pixels - self.pixels
        try:
            with _DECODING:
                image = validate_image_bytes(data, filename=name, pixel_budget=budget)
                self.images.append(
                    stage(self.staging, name=name, png=image.png_bytes, width=image.width, height=image.height)
                )
                if len(self.thumbnails) < THUMBNAILS:
                    self.thumbnails.append(_thumbnail(image.image))
            self.pixels += image.width * image.height
        except OverPixelBudget as exc:
            self.rejected.append((name, _over_budget(exc.pixels, self.pixels, self.max_pixels)))
        except UploadRejected as exc:
            self.rejected.append((name, str(exc)))


def _over_budget(pixels: int, used: int, cap: int) -> str:
    return (
        f"not read: its {pixels / 1e6:,.1f} megapixels would take the batch past the {cap / 1e6:,.0f} megapixels "
        f"one batch may decode ({used / 1e6:,.1f} so far); run it in another batch."
    )


def _thumbnail(image: Image.Image) -> bytes:
    """A small JPEG of a decoded image, shrunk in place (it is staged already, and dropped next)."""
    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


def _is_zip(name: str, upload: Upload) -> bool:
    if name.lower().endswith(".zip"):
        return True
    with _opened(upload) as file:
        return file.read(4) == b"PK\x03\x04"


def _read_bounded(name: str, upload: Upload, rejected: list[tuple[str, str]]) -> bytes | None:
    """The file's bytes, unless it is over the upload limit (then listed in `rejected`, and not read)."""
    with _opened(upload) as file:
        size = file.seek(0, io.SEEK_END)
        if size > MAX_UPLOAD_BYTES:
            rejected.append((name, f"File too large: {size / 1024 / 1024:.1f} MB, max 10 MB."))
            return None
        file.seek(0)
        return file.read()


class _opened:
    """An upload as a binary file positioned at its start (a file on disk is opened and closed again)."""

    def __init__(self, upload: Upload) -> None:
        self.upload, self.owned = upload, None

    def __enter__(self) -> BinaryIO:
        if isinstance(self.upload, Path):
            self.owned = self.upload.open("rb")
            return self.owned
        file = io.BytesIO(self.upload) if isinstance(self.upload, bytes | bytearray | memoryview) else self.upload
        file.seek(0)
        return file

    def __exit__(self, *_) -> None:
        if self.owned is not None:
            self.owned.close()


def _zip_members(name: str, upload: Upload, rejected: list[tuple[str, str]]) -> Iterator[tuple[str, bytes]]:
    """The image files inside a ZIP, read one at a time (folders flattened, hidden and macOS resource files
    skipped); what cannot be used goes to `rejected` with the reason."""
    with _opened(upload) as file:
        try:
            archive = zipfile.ZipFile(file)
            entries = [
                info
                for info in archive.infolist()
                if not info.is_dir()
                and PurePosixPath(info.filename).suffix.lower() in IMAGE_SUFFIXES
                and not any(part.startswith((".", "__MACOSX")) for part in PurePosixPath(info.filename).parts)
            ]
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            rejected.append((name, f"is not a readable ZIP file ({exc})."))
            return
        if len(entries) > MAX_ZIP_MEMBERS:
            rejected.append((name, f"holds {len(entries)} images; a batch ZIP may hold {MAX_ZIP_MEMBERS}."))
            return
        if sum(info.file_size for info in entries) > MAX_ZIP_TOTAL_BYTES:
            rejected.append((name, "unpacks to more than 1 GB; split it."))
            return
        for info in entries:
            member = PurePosixPath(info.filename).name
            if info.file_size > MAX_UPLOAD_BYTES:
                rejected.append((member, f"File too large: {info.file_size / 1024 / 1024:.1f} MB, max 10 MB."))
                continue
            try:
                data = archive.read(info)
            except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:  # a damaged member: skip just it
                rejected.append((member, f"could not be unpacked from {name} ({exc})."))
                continue
            yield member, data
