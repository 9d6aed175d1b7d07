"""Batch uploads: image files or ZIPs of them; each image is validated like any upload, and the ones that
cannot be used are listed with the reason.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath

from studio.media.validation import MAX_UPLOAD_BYTES, UploadRejected, ValidatedImage, validate_image_bytes

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
MAX_ZIP_MEMBERS = 500
MAX_ZIP_TOTAL_BYTES = 1024 * 1024 * 1024  # uncompressed; a ZIP that claims more is refused unopened


@dataclass(frozen=True)
class BatchUploads:
    images: list[tuple[str, ValidatedImage]]  # (name, image), in upload order
    rejected: list[tuple[str, str]]  # (name, why)


def read_uploads(files: list[tuple[str, bytes]]) -> BatchUploads:
    """Images and ZIPs of images → the usable images and, for each file that is not, the reason."""
    images: list[tuple[str, ValidatedImage]] = []
    rejected: list[tuple[str, str]] = []
    for name, data in files:
        if name.lower().endswith(".zip") or data[:4] == b"PK\x03\x04":
            for member_name, member_data in _zip_members(name, data, rejected):
                _validate(member_name, member_data, images, rejected)
        else:
            _validate(name, data, images, rejected)
    return BatchUploads(images, rejected)


def _validate(name: str, data: bytes, images: list, rejected: list) -> None:
    try:
        images.append((name, validate_image_bytes(data, filename=name)))
    except UploadRejected as exc:
        rejected.append((name, str(exc)))


def _zip_members(name: str, data: bytes, rejected: list[tuple[str, str]]) -> list[tuple[str, bytes]]:
    """The image files inside a ZIP (folders flattened, hidden and macOS resource files skipped);
    what cannot be used goes to `rejected` with the reason."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        entries = [
            info
            for info in archive.infolist()
            if not info.is_dir()
            and PurePosixPath(info.filename).suffix.lower() in IMAGE_SUFFIXES
            and not any(part.startswith((".", "__MACOSX")) for part in PurePosixPath(info.filename).parts)
        ]
        if len(entries) > MAX_ZIP_MEMBERS:
            rejected.append((name, f"holds {len(entries)} images; a batch ZIP may hold {MAX_ZIP_MEMBERS}."))
            return []
        if sum(info.file_size for info in entries) > MAX_ZIP_TOTAL_BYTES:
            rejected.append((name, "unpacks to more than 1 GB; split it."))
            return []
        members = []
        for info in entries:
            member = PurePosixPath(info.filename).name
            if info.file_size > MAX_UPLOAD_BYTES:
                rejected.append((member, f"File too large: {info.file_size / 1024 / 1024:.1f} MB, max 10 MB."))
            else:
                members.append((member, archive.read(info)))
        return members
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        rejected.append((name, f"is not a readable ZIP file ({exc})."))
        return []
