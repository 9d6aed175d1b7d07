"""Upload validation: decide by content (magic bytes), decode safely, normalise to plain RGB.

Each rejection raises `UploadRejected` with a specific, user-facing message; validation stores
nothing, so a rejected upload leaves no trace. Accepted images come back as RGB with EXIF
orientation applied and every piece of metadata dropped (re-encoded as a bare PNG).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageCms, ImageOps

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MIN_SIDE = 256
MAX_SIDE = 4096

_ACCEPTED = "only JPG, PNG and WebP images are accepted"
_CORRUPT = "The image file is corrupt or truncated and could not be decoded."
# Other formats people upload by mistake, named so the message says what the file is.
_OTHER_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"%PDF", "PDF"),
)


class UploadRejected(ValueError):
    """Raised with a clear, specific, user-facing message; nothing has been stored."""


@dataclass(frozen=True)
class ValidatedImage:
    image: Image.Image  # decoded, oriented, mode "RGB"
    png_bytes: bytes  # `image` as PNG without any metadata
    width: int
    height: int
    source_format: str  # "JPEG" | "PNG" | "WEBP", from the magic bytes
    notes: tuple[str, ...]  # what normalisation did, for the user


def sniff_format(data: bytes) -> str | None:
    """The accepted format the bytes are, by signature, or None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _describe_unsupported(data: bytes) -> str:
    head = data[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith((b"<svg", b"<?xml")) or b"<svg" in head:
        return f"SVG is not supported: {_ACCEPTED}."
    if len(data) >= 12 and data[4:8] == b"ftyp" and data[8:12] in (b"heic", b"heix", b"mif1", b"avif"):
        return f"HEIC/AVIF images are not supported: {_ACCEPTED}."
    for signature, name in _OTHER_SIGNATURES:
        if data.startswith(signature):
            return f"{name} files are not supported: {_ACCEPTED}."
    return f"Unsupported file type: {_ACCEPTED}."


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


def _to_rgb(image: Image.Image, notes: list[str]) -> Image.Image:
    """Any decoded mode → RGB: 16-bit scaled (not clipped), CMYK converted, alpha flattened onto white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit samples: keep the top 8 bits, so 65535 → 255 and 32768 → 128 (a plain convert clips).
        samples = np.asarray(image).astype(np.uint32)
        if image.mode.startswith("I;16") or samples.max(initial=0) > 255:
            samples = samples >> 8
        image = Image.fromarray(samples.clip(0, 255).astype(np.uint8), "L")
        notes.append("Reduced a 16-bit image to 8 bits per channel.")
    if image.mode == "CMYK":
        notes.append("Converted CMYK to RGB.")
    elif image.mode not in ("RGB", "RGBA", "L", "LA", "P", "PA", "1", "La", "RGBa"):
        notes.append(f"Converted {image.mode} to RGB.")

    has_alpha = image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (image.mode == "P" and "transparency" in image.info)
    if not has_alpha:
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    if rgba.getextrema()[3][0] < 255:
        notes.append("Flattened transparency onto white.")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _to_srgb(image: Image.Image, icc_profile: bytes | None, notes: list[str]) -> Image.Image:
    """Convert pixels from an embedded colour profile to sRGB, so dropping the profile keeps the colours."""
    if not icc_profile or image.mode not in ("RGB", "CMYK"):
        return image
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
        converted = ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError):
        notes.append("Ignored an unreadable colour profile.")
        return image
    notes.append("Converted the embedded colour profile to sRGB.")
    return converted


def validate_image_bytes(data: bytes, *, filename: str | None = None) -> ValidatedImage:
    """Check an upload and return it normalised; `filename` is only quoted, never used as a path."""
    # 1. Size and type, before any decoding
    if len(data) == 0:
        raise UploadRejected("The file is empty (0 bytes).")
    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadRejected(f"File too large: {_megabytes(len(data))}, max {_megabytes(MAX_UPLOAD_BYTES)}.")
    source_format = sniff_format(data)
    if source_format is None:
        raise UploadRejected(_describe_unsupported(data))

    notes: list[str] = []
    if filename and "." in filename:
        extension = filename.rsplit(".", 1)[1].lower()
        expected = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}.get(extension)
        if expected is not None and expected != source_format:
            notes.append(f"The file is named .{extension} but is a {source_format} image; read it as such.")

    with warnings.catch_warnings():
        # Pillow only warns about very large pixel counts; here that is a refusal.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=[source_format])
            # 2. Dimensions from the header, before the pixels are decoded
            width, height = image.size
            if width > MAX_SIDE or height > MAX_SIDE:
                raise UploadRejected(f"Image too large: {width}×{height}, max {MAX_SIDE}×{MAX_SIDE}.")
            if width < MIN_SIDE or height < MIN_SIDE:
                raise UploadRejected(f"Image too small: {width}×{height}, min {MIN_SIDE}×{MIN_SIDE}.")
            # 3. Full decode of the first frame (truncated files fail here)
            frames = getattr(image, "n_frames", 1)
            image.seek(0)
            image.load()
        except UploadRejected:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise UploadRejected(f"Image rejected as a possible decompression bomb ({exc}).") from exc
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, ValueError…)
            raise UploadRejected(_CORRUPT) from exc

    if frames > 1:
        notes.append(f"Animated image: used the first frame of {frames}.")
    if image.info.get("exif") or image.info.get("icc_profile") or image.getexif():
        notes.append("Removed metadata (EXIF, colour profile, text).")

    # 4. Orientation, then plain sRGB
    orientation = image.getexif().get(0x0112, 1)
    oriented = ImageOps.exif_transpose(image)
    if orientation != 1:
        notes.append("Applied the EXIF orientation.")
    rgb = _to_rgb(_to_srgb(oriented, image.info.get("icc_profile"), notes), notes)
    rgb.info = {}  # Pillow carries info (ICC, EXIF, text) through convert() and writes it back on save

    # 5. Re-encode without metadata: the stored file is exactly these pixels and nothing else
    buffer = io.BytesIO()
    rgb.save(buffer, format="PNG")
    return ValidatedImage(
        image=rgb,
        png_bytes=buffer.getvalue(),
        width=rgb.width,
        height=rgb.height,
        source_format=source_format,
        notes=tuple(notes),
    )
