"""Upload validation: decide by content (magic bytes), decode safely, normalise to plain RGB.

Each rejection raises `UploadRejected` with a specific, user-facing message; validation stores
nothing, so a rejected upload leaves no trace. Accepted images come back as 8-bit sRGB "RGB" with
EXIF orientation applied, transparency flattened onto white and every piece of metadata dropped
(re-encoded as a bare PNG).

Policies: animated images use their first frame; a multi-picture JPEG (MPO) uses its primary
image; an embedded colour profile is converted to sRGB before it is dropped; unreadable EXIF is
ignored (the image is kept as stored, unrotated) rather than refused.

Pure Pillow + stdlib. Pillow globals (`Image.MAX_IMAGE_PIXELS`, `ImageFile.LOAD_TRUNCATED_IMAGES`)
are only read, never changed.
"""

from __future__ import annotations

import io
import math
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from PIL import Image, ImageCms, ImageFile, ImageOps

from studio.errors import Refused

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MIN_SIDE = 256
MAX_SIDE = 4096

_MB = 1024 * 1024
_ACCEPTED = "only JPG, PNG and WebP images are accepted"
_CORRUPT = "The image file is corrupt or truncated and could not be decoded."
_EXTENSIONS = {"jpg": "JPEG", "jpeg": "JPEG", "jpe": "JPEG", "jfif": "JPEG", "png": "PNG", "webp": "WEBP"}

# Other formats people upload by mistake, named so the message says what the file is.
_OTHER_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"%PDF-", "PDF"),
)
# ISO-BMFF brands (the `ftyp` box) of the HEIF family that phones produce.
_HEIC_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})

_ORIENTATION_TAG = 0x0112
_ORIENTATIONS = {  # EXIF orientation → what applying it does to the stored pixels
    2: "mirrored",
    3: "rotated 180°",
    4: "flipped",
    5: "mirrored and rotated",
    6: "rotated 90° clockwise",
    7: "mirrored and rotated",
    8: "rotated 90° counter-clockwise",
}
# Start-of-frame markers carry the image size (C4, C8 and CC are other segments in that range).
_JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa"})
# Modes whose conversion to RGB is lossless and not worth telling the user about.
_PLAIN_MODES = frozenset({"RGB", "RGBA", "RGBX", "RGBa", "L", "LA", "P", "PA", "1"}) | _SIXTEEN_BIT_MODES


class UploadRejected(Refused):
    """Raised with a clear, specific, user-facing message; nothing has been stored."""


class OverPixelBudget(UploadRejected):
    """The image has more pixels than its caller had left to decode (read from the header; nothing decoded)."""

    def __init__(self, width: int, height: int, budget: int) -> None:
        super().__init__(f"{width}×{height} is more pixels than are left to decode ({budget:,}).")
        self.pixels = width * height


@dataclass(frozen=True)
class ValidatedImage:
    image: Image.Image  # decoded, EXIF orientation applied, mode "RGB", loaded, no metadata in .info
    png_bytes: bytes  # `image` as PNG without any metadata (no EXIF, text chunks or ICC profile)
    width: int  # of `image`, after orientation
    height: int
    source_format: str  # "JPEG" | "PNG" | "WEBP", from the magic bytes
    notes: tuple[str, ...]  # what normalisation did, for the user


# ---------------------------------------------------------------------------------------------
# Before decoding: size and type


def sniff_format(data: bytes) -> str | None:
    """The accepted format the bytes are, by signature ("JPEG", "PNG" or "WEBP"), or None."""
    head = bytes(data[:12])
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if len(head) == 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def _check_size(size: int) -> None:
    if size == 0:
        raise UploadRejected("The file is empty (0 bytes).")
    if size > MAX_UPLOAD_BYTES:
        # Rounded up, so a file just over the limit never reads as "10.0 MB, max 10 MB".
        shown = math.ceil(size * 10 / _MB) / 10
        raise UploadRejected(f"File too large: {shown:.1f} MB, max {MAX_UPLOAD_BYTES / _MB:g} MB.")


def _describe_unsupported(data: bytes) -> str:
    """A rejection message that names the file's actual type where it is a common one."""
    kind = _other_kind(data)
    if kind is None:
        return f"Unsupported file type: {_ACCEPTED}."
    return f"{kind} is not supported: {_ACCEPTED}."


def _other_kind(data: bytes) -> str | None:
    for signature, name in _OTHER_SIGNATURES:
        if data.startswith(signature):
            return name
    # BMP: "BM", then the file size and two reserved zero words (so a text starting "BM…" is not one).
    if data.startswith(b"BM") and len(data) >= 14 and data[6:10] == b"\x00\x00\x00\x00":
        return "BMP"
    if data[4:8] == b"ftyp":
        return _heif_kind(data)
    text = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"<") and b"<svg" in text:
        return "SVG"
    if text.startswith(b"<?xml"):
        return "XML"
    if text.startswith((b"<!doctype html", b"<html")):
        return "HTML"
    return None


def _heif_kind(data: bytes) -> str | None:
    """HEIC or AVIF from an ISO-BMFF `ftyp` box (major brand plus compatible brands), else None."""
    box_size = int.from_bytes(data[:4], "big")
    brands = {data[8:12]} | {data[i : i + 4] for i in range(16, min(box_size, 64, len(data)) - 3, 4)}
    if brands & _AVIF_BRANDS:
        return "AVIF"
    if brands & _HEIC_BRANDS:
        return "HEIC"
    return None


def _extension_note(filename: str | None, source_format: str) -> str | None:
    """A note when the name says one accepted format and the content is another (content wins)."""
    if not filename or "." not in filename:
        return None
    extension = filename.rsplit(".", 1)[1].lower()
    claimed = _EXTENSIONS.get(extension)
    if claimed is None or claimed == source_format:
        return None
    return f"The file is named .{extension} but contains a {source_format} image; it was read as {source_format}."


def _header_size(data: bytes, source_format: str) -> tuple[int, int] | None:
    """(width, height) read straight from the file header, or None where it cannot be read.

    Only used to name the size when Pillow has already refused the file for its pixel count, so a
    misread here can never reject an image Pillow would accept.
    """
    try:
        if source_format == "PNG":
            return struct.unpack(">II", data[16:24]) if data[12:16] == b"IHDR" else None
        if source_format == "WEBP":
            return _webp_header_size(data)
        return _jpeg_header_size(data)
    except (struct.error, IndexError):
        return None


def _webp_header_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X":  # extended: 24-bit canvas width-1 and height-1
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if chunk == b"VP8L" and data[20] == 0x2F:  # lossless: 14-bit width-1 and height-1
        bits = int.from_bytes(data[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":  # lossy: key frame start code, 14-bit sizes
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    return None


def _jpeg_header_size(data: bytes) -> tuple[int, int] | None:
    """Walk the marker segments to the first start-of-frame (skipping APP segments and their thumbnails)."""
    offset = 2
    while offset + 4 <= len(data) and data[offset] == 0xFF:
        marker = data[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
        elif marker in _JPEG_SOF_MARKERS:
            height, width = struct.unpack(">HH", data[offset + 5 : offset + 9])
            return width, height
        elif marker in (0xD9, 0xDA):  # end of image, or the scan started without a frame header
            return None
        else:
            offset += 2 + struct.unpack(">H", data[offset + 2 : offset + 4])[0]
    return None


def _png_bit_depth(data: bytes) -> int | None:
    # IHDR is always the first chunk: signature (8) + length (4) + "IHDR" (4) + width, height (8).
    return data[24] if len(data) > 24 and data[12:16] == b"IHDR" else None


# ---------------------------------------------------------------------------------------------
# Decoding


@contextmanager
def _decoding_errors_rejected() -> Iterator[None]:
    """Turn whatever Pillow raises while decoding into an `UploadRejected`, never a traceback.

    Pillow only *warns* about pixel counts over `Image.MAX_IMAGE_PIXELS` (it raises at twice
    that); here the warning is a refusal too, without touching the global limit or filters.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except UploadRejected:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            detail = str(exc).split(",")[0].rstrip(".")  # "Image size (N pixels) exceeds limit of M pixels"
            raise UploadRejected(f"Image rejected as a possible decompression bomb ({detail}).") from exc
        except MemoryError:
            raise  # not the file's fault; let the process deal with it
        except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, ValueError, struct.error…)
            raise UploadRejected(_CORRUPT) from exc


def _check_dimensions(width: int, height: int) -> None:
    """Side limits, from the header, before any pixel is decoded."""
    if width > MAX_SIDE or height > MAX_SIDE:
        raise UploadRejected(f"Image too large: {width}×{height}, max {MAX_SIDE}×{MAX_SIDE}.")
    if width < MIN_SIDE or height < MIN_SIDE:
        raise UploadRejected(f"Image too small: {width}×{height}, min {MIN_SIDE}×{MIN_SIDE}.")


def _open(data: bytes, source_format: str) -> ImageFile.ImageFile:
    """Pillow's lazy open: reads the header only. Restricted to the sniffed format's decoder."""
    try:
        return Image.open(io.BytesIO(data), formats=[source_format])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow refuses huge pixel counts inside open(), before we see the size; when the header
        # shows it is simply over the side limit, say that rather than "decompression bomb".
        size = _header_size(data, source_format)
        if size is not None:
            _check_dimensions(*size)
        raise


def _check_pixel_budget(width: int, height: int) -> None:
    # Pillow's own check is a warning, and `warnings.catch_warnings` is process-wide state that a
    # concurrent thread (Streamlit runs sessions in threads) can reset; so check the limit here too.
    limit = Image.MAX_IMAGE_PIXELS
    if limit and width * height > limit:
        raise UploadRejected(
            f"Image rejected as a possible decompression bomb ({width}×{height} = {width * height:,} pixels, "
            f"limit {limit:,})."
        )


def _frame_count(image: Image.Image) -> int:
    # An MPO is a JPEG with extra pictures (depth maps, previews), not an animation: use the primary one.
    if image.format == "MPO":
        return 1
    return getattr(image, "n_frames", 1)


def _metadata_kinds(image: Image.Image, exif_present: bool) -> list[str]:
    """The kinds of metadata the decoded file carried (all of which the output drops)."""
    info = image.info
    kinds = []
    if exif_present:
        kinds.append("EXIF")
    if info.get("icc_profile"):
        kinds.append("ICC profile")
    if info.get("xmp") or info.get("XML:com.adobe.xmp"):
        kinds.append("XMP")
    if getattr(image, "text", None) or info.get("comment"):  # PNG text chunks, JPEG comment
        kinds.append("text")
    return kinds


def _read_orientation(image: Image.Image, notes: list[str]) -> tuple[int, bool]:
    """(EXIF orientation, whether there was EXIF). Unreadable EXIF counts as none: it is dropped anyway."""
    try:
        exif = image.getexif()
        orientation = exif.get(_ORIENTATION_TAG, 1)
    except Exception:  # malformed IFDs raise struct.error, SyntaxError, ValueError…
        notes.append("Ignored unreadable EXIF data (orientation not applied).")
        return 1, bool(image.info.get("exif"))
    if not isinstance(orientation, int):  # a corrupt tag can hold bytes, strings or tuples
        orientation = 1
    return orientation, bool(exif) or bool(image.info.get("exif"))


def _apply_orientation(image: Image.Image, orientation: int, notes: list[str]) -> Image.Image:
    if orientation not in _ORIENTATIONS:  # 1 is upright; other values are invalid and ignored
        return image
    notes.append(f"Applied EXIF orientation ({_ORIENTATIONS[orientation]}).")
    return ImageOps.exif_transpose(image)


# ---------------------------------------------------------------------------------------------
# Normalising pixels: 8-bit, sRGB, no alpha


def _sixteen_bit_to_eight(image: Image.Image) -> Image.Image:
    """16-bit greyscale → 8-bit "L" keeping the top byte (65535 → 255, 32768 → 128); a plain
    `convert("L")` clips instead, turning everything above 255 white. A tRNS key becomes alpha."""
    wide = image.convert("I")  # one 32-bit container for every 16-bit byte order
    grey = wide.point([value >> 8 for value in range(65536)], "L")
    key = image.info.get("transparency")
    if not isinstance(key, int):
        return grey
    alpha = wide.point([0 if value == key else 255 for value in range(65536)], "L")
    return Image.merge("LA", (grey, alpha))


def _lab_to_rgb(image: Image.Image) -> Image.Image:
    # Pillow's plain LAB → RGB conversion reinterprets the channels; a colour transform is needed.
    lab, srgb = ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB")
    return ImageCms.applyTransform(image, ImageCms.buildTransform(lab, srgb, "LAB", "RGB"))


def _to_8bit_base(image: Image.Image, notes: list[str]) -> Image.Image:
    """Any decoded mode → one of L, LA, RGB, RGBA, CMYK, keeping transparency as an alpha channel."""
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        return _sixteen_bit_to_eight(image)
    if mode not in _PLAIN_MODES and mode != "CMYK":
        notes.append(f"Converted {mode} to RGB.")
        return _lab_to_rgb(image) if mode == "LAB" else image.convert("RGB")
    if mode in ("P", "PA", "RGBa") or (mode in ("L", "RGB", "1") and "transparency" in image.info):
        # Palette entries and tRNS colour keys can be transparent: make that an alpha channel.
        return image.convert("RGBA")
    if mode in ("1", "RGBX"):
        return image.convert("RGB")
    return image


def _to_srgb(image: Image.Image, icc_profile: bytes | None, notes: list[str]) -> Image.Image:
    """Convert pixels from an embedded colour profile to sRGB, so dropping the profile keeps the colours."""
    if not icc_profile or image.mode not in ("RGB", "RGBA", "CMYK"):
        return image
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
        output_mode = "RGBA" if image.mode == "RGBA" else "RGB"
        converted = ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode=output_mode)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        notes.append("Ignored an unreadable colour profile.")
        return image
    notes.append("Converted the embedded colour profile to sRGB.")
    return converted


def _flatten_to_rgb(image: Image.Image, notes: list[str]) -> Image.Image:
    """Alpha → composited onto white (noted only if some pixel is not opaque); anything else → RGB."""
    if image.mode not in _ALPHA_MODES:
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    if rgba.getextrema()[3][0] == 255:
        return rgba.convert("RGB")
    notes.append("Flattened transparency onto white.")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _to_rgb(image: Image.Image, icc_profile: bytes | None, notes: list[str]) -> Image.Image:
    """Decoded pixels in any mode → a fresh 8-bit sRGB "RGB" image with no alpha."""
    was_cmyk = image.mode == "CMYK"
    try:
        base = _to_8bit_base(image, notes)
    except ValueError as exc:  # a mode Pillow cannot convert; none of the accepted formats decode to one
        raise UploadRejected(f"Unsupported colour mode ({image.mode}): save the image as RGB and try again.") from exc
    rgb = _flatten_to_rgb(_to_srgb(base, icc_profile, notes), notes)
    if was_cmyk:
        notes.append("Converted CMYK to RGB.")
    return rgb


# ---------------------------------------------------------------------------------------------
# The entry point


def validate_image_bytes(
    data: bytes, *, filename: str | None = None, pixel_budget: int | None = None
) -> ValidatedImage:
    """Check an upload and return it normalised, or raise `UploadRejected` saying why not.

    `filename` is only quoted in notes, never opened; the format comes from the bytes alone. With
    `pixel_budget`, an image with more pixels than that raises `OverPixelBudget` before it is decoded.
    """
    # 1. Size and type, before any decoding
    _check_size(memoryview(data).nbytes)
    data = bytes(data)  # bytearray / memoryview uploads too; a no-op for bytes
    source_format = sniff_format(data)
    if source_format is None:
        raise UploadRejected(_describe_unsupported(data))

    notes: list[str] = []
    extension_note = _extension_note(filename, source_format)
    if extension_note:
        notes.append(extension_note)

    with _decoding_errors_rejected(), _open(data, source_format) as decoded:
        # 2. Dimensions from the header, before the pixels are decoded
        _check_dimensions(*decoded.size)
        _check_pixel_budget(*decoded.size)
        if pixel_budget is not None and decoded.width * decoded.height > pixel_budget:
            raise OverPixelBudget(*decoded.size, pixel_budget)
        # 3. Full decode of the first frame: truncated or corrupt data fails here
        frames = _frame_count(decoded)
        decoded.seek(0)
        decoded.load()
        if frames > 1:
            notes.append(f"Animated image: used the first frame of {frames}.")
        if _png_bit_depth(data) == 16:
            notes.append("Reduced 16-bit PNG to 8-bit.")

        # 4. Orientation, then plain 8-bit sRGB
        orientation, exif_present = _read_orientation(decoded, notes)
        metadata = _metadata_kinds(decoded, exif_present)
        oriented = _apply_orientation(decoded, orientation, notes)
        rgb = _to_rgb(oriented, decoded.info.get("icc_profile"), notes)
        if metadata:
            notes.append(f"Removed metadata ({', '.join(metadata)}).")

        # 5. Re-encode without metadata. Pillow carries .info (ICC, EXIF, text) through conversions
        # and writes some of it back on save, so empty it: the stored file is just these pixels.
        rgb.info = {}
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


def decode_mask_upload(data: bytes) -> Image.Image:
    """An uploaded inpainting mask, decoded with the same safety checks as a source image, or
    `UploadRejected` saying why not. It keeps its mode (transparency means something in a mask) and
    may be any size up to MAX_SIDE: pipelines.masks.mask_from_upload fits it to the source.
    """
    _check_size(memoryview(data).nbytes)
    data = bytes(data)
    source_format = sniff_format(data)
    if source_format is None:
        raise UploadRejected(_describe_unsupported(data))
    with _decoding_errors_rejected(), _open(data, source_format) as decoded:
        width, height = decoded.size
        if width > MAX_SIDE or height > MAX_SIDE:
            raise UploadRejected(f"Mask too large: {width}×{height}, max {MAX_SIDE}×{MAX_SIDE}.")
        _check_pixel_budget(width, height)
        decoded.seek(0)
        decoded.load()
        orientation, _ = _read_orientation(decoded, [])
        mask = _apply_orientation(decoded, orientation, [])
        if mask.mode in _SIXTEEN_BIT_MODES:
            mask = _sixteen_bit_to_eight(mask)
        return mask.copy() if mask is decoded else mask
