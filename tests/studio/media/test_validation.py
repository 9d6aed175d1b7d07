"""Upload validation: every accepted normalisation and every rejection, on images made in memory."""

from __future__ import annotations

import dataclasses
import io
import struct
import warnings
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageCms, ImageFile, PngImagePlugin

from studio.media.validation import (
    MAX_SIDE,
    MAX_UPLOAD_BYTES,
    MIN_SIDE,
    UploadRejected,
    ValidatedImage,
    _header_size,
    _to_rgb,
    sniff_format,
    validate_image_bytes,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


# --- helpers ---------------------------------------------------------------------------------


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def solid(width: int = 300, height: int = 400, color: tuple[int, ...] = (10, 120, 200), mode: str = "RGB"):
    return Image.new(mode, (width, height), color)


def noise(width: int = 300, height: int = 300) -> Image.Image:
    """Incompressible pixels, so cutting the file in half really cuts into the image data."""
    return Image.merge("RGB", [Image.effect_noise((width, height), 100 + 20 * i) for i in range(3)])


def reject(data: bytes, match: str | None, filename: str | None = None) -> UploadRejected:
    with pytest.raises(UploadRejected, match=match) as caught:
        validate_image_bytes(data, filename=filename)
    return caught.value


def close_to(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 3) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(actual, expected, strict=True))


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def raw_png(width: int, height: int, bit_depth: int, color_type: int, rows: bytes | None) -> bytes:
    """A PNG assembled by hand: for bit depths/headers Pillow will not write, or no pixel data at all."""
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0))
    data = png_chunk(b"IDAT", zlib.compress(rows)) if rows is not None else b""
    return PNG_MAGIC + header + data + png_chunk(b"IEND", b"")


def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


# --- accepted images -------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_valid_images_pass_as_rgb_with_their_size(fmt):
    result = validate_image_bytes(encode(solid(), fmt))
    assert isinstance(result, ValidatedImage)
    assert (result.width, result.height) == (300, 400) == result.image.size
    assert result.image.mode == "RGB"
    assert result.source_format == fmt
    assert result.notes == ()
    assert close_to(result.image.getpixel((150, 200)), (10, 120, 200), tolerance=4)
    with Image.open(io.BytesIO(result.png_bytes)) as reopened:
        assert reopened.format == "PNG" and reopened.mode == "RGB" and reopened.size == (300, 400)
        assert reopened.tobytes() == result.image.tobytes()  # png_bytes is exactly `image`


def test_the_result_is_immutable_and_fully_loaded():
    result = validate_image_bytes(encode(solid(), "PNG"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.width = 1  # type: ignore[misc]
    assert result.image.info == {}
    assert result.image.getpixel((0, 0)) == (10, 120, 200)  # no file behind it to read from


@pytest.mark.parametrize("size", [(MIN_SIDE, MIN_SIDE), (MAX_SIDE, MIN_SIDE), (MIN_SIDE, MAX_SIDE)])
def test_sides_exactly_at_the_limits_are_accepted(size):
    result = validate_image_bytes(encode(solid(*size, color=0, mode="L"), "PNG"))
    assert (result.width, result.height) == size


@pytest.mark.parametrize("data_type", [bytearray, memoryview])
def test_other_bytes_like_uploads_are_accepted(data_type):
    assert validate_image_bytes(data_type(encode(solid(), "PNG"))).source_format == "PNG"


# --- the format comes from the content, never from the name -----------------------------------


def test_png_named_jpg_is_read_as_png_with_a_note():
    result = validate_image_bytes(encode(solid(), "PNG"), filename="holiday.jpg")
    assert result.source_format == "PNG"
    assert "The file is named .jpg but contains a PNG image; it was read as PNG." in result.notes


def test_jpeg_named_png_is_read_as_jpeg():
    result = validate_image_bytes(encode(solid(), "JPEG"), filename="scan.PNG")
    assert result.source_format == "JPEG"
    assert any(".png but contains a JPEG image" in note for note in result.notes)


@pytest.mark.parametrize("filename", ["photo.jpeg", "photo", "photo.bin", "archive.tar.JPG", ""])
def test_matching_or_unknown_extensions_add_no_note(filename):
    assert validate_image_bytes(encode(solid(), "JPEG"), filename=filename).notes == ()


def test_the_filename_is_never_opened(tmp_path):
    on_disk = tmp_path / "real.png"
    on_disk.write_bytes(encode(solid(color=RED), "PNG"))
    result = validate_image_bytes(encode(solid(500, 300, BLUE), "WEBP"), filename=str(on_disk))
    assert result.source_format == "WEBP" and result.image.size == (500, 300)


def test_a_type_is_refused_whatever_the_name_says():
    reject(b"GIF89a" + bytes(100), "GIF is not supported", filename="cat.png")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\xff\xd8\xff\xe0" + bytes(20), "JPEG"),
        (PNG_MAGIC + bytes(20), "PNG"),
        (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "WEBP"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", None),
        (b"GIF89a" + bytes(20), None),
        (b"BM" + bytes(20), None),
        (b"II*\x00" + bytes(20), None),
        (b"\xff\xd8", None),  # too short to be a JPEG signature
        (PNG_MAGIC[:7], None),
        (b"RIFF\x00\x00\x00\x00WEB", None),
        (b"<svg></svg>", None),
        (b"", None),
    ],
)
def test_sniff_format_reads_magic_bytes(data, expected):
    assert sniff_format(data) == expected


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_sniff_format_on_real_files(fmt):
    assert sniff_format(encode(solid(), fmt)) == fmt


# --- size and type, refused before any decoding ----------------------------------------------


def test_zero_bytes():
    reject(b"", r"^The file is empty \(0 bytes\)\.$")


def test_one_byte_over_ten_megabytes_is_refused_before_decoding():
    data = PNG_MAGIC + bytes(MAX_UPLOAD_BYTES + 1 - len(PNG_MAGIC))  # a real decode would fail: never reached
    reject(data, r"^File too large: 10\.1 MB, max 10 MB\.$")


def test_the_size_in_the_message_matches_the_example():
    reject(bytes(13_002_342), r"^File too large: 12\.4 MB, max 10 MB\.$")


def test_exactly_ten_megabytes_is_not_too_large():
    data = PNG_MAGIC + bytes(MAX_UPLOAD_BYTES - len(PNG_MAGIC))
    reject(data, "corrupt or truncated")  # got past the size check to the decoder


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"hello, this is a text file\n", "Unsupported file type: only JPG, PNG and WebP images are accepted."),
        (b"BMW is a car brand\n" + bytes(20), "Unsupported file type: "),  # "BM" alone is not a bitmap
        (b'<svg xmlns="http://www.w3.org/2000/svg" width="10"></svg>', "SVG is not supported: "),
        (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"></svg>', "SVG is not supported: "),
        (b'\xef\xbb\xbf\n  <!-- logo -->\n<svg viewBox="0 0 1 1"/>', "SVG is not supported: "),
        (b'<?xml version="1.0"?><rss version="2.0"></rss>', "XML is not supported: "),
        (b"<!DOCTYPE html><html><body>hi</body></html>", "HTML is not supported: "),
        (b"GIF87a" + bytes(100), "GIF is not supported: "),
        (b"GIF89a" + bytes(100), "GIF is not supported: "),
        (encode(solid(300, 300), "BMP"), "BMP is not supported: "),
        (encode(solid(300, 300), "TIFF"), "TIFF is not supported: "),
        (b"MM\x00*" + bytes(100), "TIFF is not supported: "),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(50), "HEIC is not supported: "),
        (b"\x00\x00\x00\x1cftypmif1\x00\x00\x00\x00mif1miafMA1B" + bytes(50), "HEIC is not supported: "),
        (b"\x00\x00\x00\x20ftypavif\x00\x00\x00\x00avifmif1miafMA1B" + bytes(50), "AVIF is not supported: "),
        (b"\x00\x00\x00\x1cftypmif1\x00\x00\x00\x00mif1avifmiaf" + bytes(50), "AVIF is not supported: "),
        (b"\x00\x00\x00\x18ftypisom\x00\x00\x00\x00isomiso2" + bytes(50), "Unsupported file type: "),
        (b"%PDF-1.7\n" + bytes(100), "PDF is not supported: "),
    ],
)
def test_other_file_types_are_named_and_refused(data, message):
    error = reject(data, None)
    assert str(error).startswith(message)
    assert str(error).endswith("only JPG, PNG and WebP images are accepted.")


# --- dimensions, from the header -------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_too_large_dimensions_name_the_size_and_the_limit(fmt):
    reject(encode(solid(5000, 300, 0, "L"), fmt), r"^Image too large: 5000×300, max 4096×4096\.$")


def test_a_too_tall_image_is_too_large_too():
    reject(encode(solid(300, 4097, 0, "L"), "PNG"), r"^Image too large: 300×4097, max 4096×4096\.$")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_too_small_dimensions_name_the_size_and_the_limit(fmt):
    reject(encode(solid(200, 180), fmt), r"^Image too small: 200×180, min 256×256\.$")


@pytest.mark.parametrize("size", [(255, 300), (300, 255)])
def test_one_short_side_is_enough_to_be_too_small(size):
    reject(encode(solid(*size), "PNG"), f"Image too small: {size[0]}×{size[1]}, min 256×256.")


def jpeg_header(width: int, height: int) -> bytes:
    """SOI, a baseline start-of-frame for a 3-channel image, EOI: a size and no pixels."""
    components = b"\x01\x11\x00\x02\x11\x01\x03\x11\x01"
    return b"\xff\xd8\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3) + components + b"\xff\xd9"


def webp_vp8x_header(width: int, height: int) -> bytes:
    chunk = b"VP8X" + struct.pack("<I", 10) + bytes(4) + (width - 1).to_bytes(3, "little")
    chunk += (height - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


@pytest.mark.parametrize(
    "data",
    [raw_png(20_000, 9_000, 8, 2, rows=None), jpeg_header(20_000, 9_000), webp_vp8x_header(20_000, 9_000)],
    ids=["PNG", "JPEG", "WEBP"],
)
def test_dimensions_are_checked_from_the_header_before_decoding(data):
    # A header with no pixel data at all, big enough that Pillow's own bomb check refuses it inside
    # open(): the message still names the size and the side limit, not "decompression bomb".
    reject(data, r"^Image too large: 20000×9000, max 4096×4096\.$")


def test_a_small_header_without_pixels_is_too_small_before_it_is_corrupt():
    reject(raw_png(100, 100, 8, 2, rows=None), r"^Image too small: 100×100, min 256×256\.$")


def header_size_samples() -> list[tuple[str, bytes]]:
    exif = Image.Exif()
    exif[0x010F] = "Cam"
    image, rgba = noise(301, 257), solid(301, 257, (1, 2, 3, 100), "RGBA")
    pictures = [solid(301, 257, RED), solid(301, 257, BLUE)]
    return [
        ("PNG", encode(image, "PNG")),
        ("JPEG", encode(image, "JPEG")),
        ("JPEG", encode(image, "JPEG", progressive=True, exif=exif, icc_profile=srgb_icc())),
        ("JPEG", encode(pictures[0], "MPO", save_all=True, append_images=pictures[1:])),
        ("WEBP", encode(image, "WEBP")),  # VP8
        ("WEBP", encode(image, "WEBP", lossless=True)),  # VP8L
        ("WEBP", encode(rgba, "WEBP")),  # VP8X (alpha)
        ("WEBP", encode(image, "WEBP", exif=exif)),  # VP8X (metadata)
        ("WEBP", encode(pictures[0], "WEBP", save_all=True, append_images=pictures[1:])),  # animated
    ]


@pytest.mark.parametrize(("fmt", "data"), header_size_samples())
def test_the_header_size_reader_agrees_with_pillow(fmt, data):
    assert _header_size(data, fmt) == (301, 257)


@pytest.mark.parametrize(
    ("fmt", "data"),
    [("PNG", PNG_MAGIC), ("JPEG", b"\xff\xd8\xff\xe0\x00"), ("JPEG", b"\xff\xd8\xff\xda"), ("WEBP", b"RIFF")],
)
def test_the_header_size_reader_gives_up_quietly(fmt, data):
    assert _header_size(data, fmt) is None


def test_a_huge_header_under_a_lowered_pixel_limit_still_names_the_side_limit(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300 * 300)
    reject(encode(solid(5000, 300, 0, "L"), "PNG"), r"^Image too large: 5000×300, max 4096×4096\.$")


# --- decompression bombs ---------------------------------------------------------------------


def test_pillows_bomb_warning_becomes_a_refusal(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300 * 300)  # 400×400 is over it, but not 2× over
    reject(encode(solid(400, 400), "PNG"), r"^Image rejected as a possible decompression bomb \(.*160000 pixels")


def test_pillows_bomb_error_becomes_a_refusal(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100 * 100)  # 400×400 is over 2× the limit: Pillow raises
    reject(encode(solid(400, 400), "PNG"), "possible decompression bomb")


def test_the_pixel_limit_holds_even_if_pillows_check_is_bypassed(monkeypatch):
    # catch_warnings is process-wide, so a concurrent thread could reset the filter; our own check remains.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300 * 300)
    monkeypatch.setattr(Image, "_decompression_bomb_check", lambda size: None)
    reject(encode(solid(400, 400), "PNG"), r"decompression bomb \(400×400 = 160,000 pixels, limit 90,000\)")


def test_pillow_globals_and_warning_filters_are_left_alone():
    limit, truncated, filters = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES, list(warnings.filters)
    validate_image_bytes(encode(solid(), "PNG"))
    with pytest.raises(UploadRejected):
        validate_image_bytes(encode(solid(), "PNG")[:200])
    assert limit == Image.MAX_IMAGE_PIXELS
    assert ImageFile.LOAD_TRUNCATED_IMAGES is truncated is False
    assert warnings.filters == filters


# --- corrupt and truncated files -------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_truncated_files_are_corrupt(fmt):
    data = encode(noise(), fmt)
    reject(data[: len(data) // 2], r"^The image file is corrupt or truncated and could not be decoded\.$")


@pytest.mark.parametrize(
    "data",
    [
        PNG_MAGIC + b"garbage" * 50,
        b"\xff\xd8\xff" + b"\x00" * 500,
        b"RIFF\x2c\x00\x00\x00WEBPVP8 " + struct.pack("<I", 1000) + b"\x00" * 20,
        PNG_MAGIC,  # the signature and nothing else
    ],
)
def test_garbage_after_a_valid_signature_is_corrupt(data):
    reject(data, "corrupt or truncated")


def test_a_jpeg_with_garbage_after_its_header_is_corrupt():
    data = encode(noise(), "JPEG")
    reject(data[:400] + bytes(range(256)) * 40, "corrupt or truncated")


def test_a_png_with_a_bad_checksum_is_corrupt():
    data = bytearray(encode(solid(), "PNG"))
    data[29] ^= 0xFF  # inside IHDR, so its CRC no longer matches
    reject(bytes(data), "corrupt or truncated")


def test_an_unexpected_decoder_exception_becomes_the_corrupt_message(monkeypatch):
    def explode(self):
        raise RuntimeError("a Pillow bug")

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", explode)
    reject(encode(solid(), "PNG"), "corrupt or truncated")


def test_memory_errors_are_not_disguised_as_corrupt_files(monkeypatch):
    def exhaust(self):
        raise MemoryError

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", exhaust)
    with pytest.raises(MemoryError):
        validate_image_bytes(encode(solid(), "PNG"))


def sample_uploads() -> list[bytes]:
    exif = Image.Exif()
    exif[0x0112] = 6
    image = noise(256, 256)
    return [encode(image, fmt, exif=exif) for fmt in ("PNG", "JPEG", "WEBP")]


SAMPLES = sample_uploads()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sample=st.sampled_from(SAMPLES),
    edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=8),
    cut=st.one_of(st.none(), st.floats(0, 1)),
)
def test_damaged_files_are_accepted_or_refused_never_a_traceback(sample, edits, cut):
    data = bytearray(sample)
    for where, value in edits:
        data[int(where * len(data))] = value
    if cut is not None:
        data = data[: int(cut * len(data))]
    try:
        result = validate_image_bytes(bytes(data))
    except UploadRejected:
        return
    assert result.image.mode == "RGB" and result.image.size == (result.width, result.height)


# --- animation -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_animations_use_the_first_frame(fmt):
    frames = [solid(300, 300, color) for color in (RED, GREEN, BLUE)]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], lossless=True)
    result = validate_image_bytes(data)
    assert "Animated image: used the first frame of 3." in result.notes
    assert result.image.getpixel((150, 150)) == RED
    assert result.image.size == (300, 300)


def test_a_multi_picture_jpeg_uses_its_primary_image_and_is_not_called_animated():
    pictures = [solid(300, 300, RED), solid(300, 300, BLUE)]
    result = validate_image_bytes(encode(pictures[0], "MPO", save_all=True, append_images=pictures[1:]))
    assert result.source_format == "JPEG"
    assert close_to(result.image.getpixel((150, 150)), RED)
    assert not any("Animated" in note for note in result.notes)


# --- colour modes ----------------------------------------------------------------------------


def test_cmyk_becomes_rgb():
    result = validate_image_bytes(encode(solid(300, 300, (0, 255, 255, 0), "CMYK"), "JPEG"))
    assert result.image.mode == "RGB"
    assert "Converted CMYK to RGB." in result.notes
    red, green, blue = result.image.getpixel((150, 150))
    assert red > 200 and green < 60 and blue < 60


def sixteen_bit_grey(values: list[int], width: int = 300, height: int = 300) -> Image.Image:
    """Vertical bands of the given 16-bit values."""
    image = Image.new("I;16", (width, height), 0)
    band = width // len(values)
    for index, value in enumerate(values):
        image.paste(Image.new("I;16", (band, height), value), (index * band, 0))
    return image


def test_16_bit_greyscale_png_is_scaled_not_clipped():
    result = validate_image_bytes(encode(sixteen_bit_grey([65535, 32768, 255, 0]), "PNG"))
    assert result.image.getpixel((30, 0)) == WHITE  # 65535 → 255
    assert result.image.getpixel((100, 0)) == (128, 128, 128)  # 32768 → 128, not clipped to 255
    assert result.image.getpixel((180, 0)) == (0, 0, 0)  # 255 → 0: it was nearly black
    assert result.image.getpixel((260, 0)) == (0, 0, 0)
    assert "Reduced 16-bit PNG to 8-bit." in result.notes


def test_a_16_bit_greyscale_transparency_key_is_flattened():
    data = encode(sixteen_bit_grey([1000, 40000]), "PNG", transparency=1000)
    result = validate_image_bytes(data)
    assert result.image.getpixel((50, 0)) == WHITE
    assert result.image.getpixel((250, 0)) == (156, 156, 156)  # 40000 >> 8
    assert "Flattened transparency onto white." in result.notes


def test_48_bit_rgb_png_is_reduced_to_8_bit():
    pixel = struct.pack(">3H", 65535, 32768, 0)
    rows = (b"\x00" + pixel * 256) * 256
    result = validate_image_bytes(raw_png(256, 256, 16, 2, rows))
    assert result.image.getpixel((10, 10)) == (255, 128, 0)
    assert "Reduced 16-bit PNG to 8-bit." in result.notes


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (solid(300, 300, 77, "L"), (77, 77, 77)),
        (solid(300, 300, 1, "1"), WHITE),
        (solid(300, 300, (40, 50, 60, 255), "RGBA"), (40, 50, 60)),
        (solid(300, 300, (90, 255), "LA"), (90, 90, 90)),
        (solid(300, 300, GREEN).convert("P"), GREEN),
    ],
)
def test_plain_modes_become_rgb_silently(image, expected):
    result = validate_image_bytes(encode(image, "PNG"))
    assert result.image.getpixel((0, 0)) == expected
    assert result.notes == ()


@pytest.mark.parametrize(
    ("mode", "color"),
    [("YCbCr", (128, 128, 128)), ("HSV", (0, 0, 128)), ("LAB", (128, 128, 128))],
)
def test_other_colour_spaces_are_converted_to_grey_correctly(mode, color):
    # None of the accepted formats decodes to these modes today; the conversion is still correct.
    notes: list[str] = []
    rgb = _to_rgb(solid(2, 2, color, mode), None, notes)
    assert rgb.mode == "RGB"
    red, green, blue = rgb.getpixel((0, 0))
    assert max(red, green, blue) - min(red, green, blue) <= 2 and 100 <= red <= 140
    assert notes == [f"Converted {mode} to RGB."]


# --- transparency ----------------------------------------------------------------------------


def test_palette_transparency_is_flattened_onto_white():
    image = solid(300, 300, RED)
    image.paste(BLUE, (0, 0, 150, 300))
    palette_image = image.convert("P")
    transparent_index = palette_image.getpixel((0, 0))
    result = validate_image_bytes(encode(palette_image, "PNG", transparency=transparent_index))
    assert result.image.getpixel((0, 0)) == WHITE
    assert result.image.getpixel((200, 0)) == RED
    assert "Flattened transparency onto white." in result.notes


def test_an_unused_palette_transparency_index_adds_no_note():
    palette_image = solid(300, 300, RED).convert("P")
    unused = (palette_image.getpixel((0, 0)) + 1) % 256
    result = validate_image_bytes(encode(palette_image, "PNG", transparency=unused))
    assert result.image.getpixel((0, 0)) == RED
    assert result.notes == ()


@pytest.mark.parametrize(
    ("image", "key"),
    [(solid(300, 300, (10, 20, 30)), (10, 20, 30)), (solid(300, 300, 7, "L"), 7)],
)
def test_a_truecolour_or_grey_transparency_key_is_flattened(image, key):
    result = validate_image_bytes(encode(image, "PNG", transparency=key))
    assert result.image.getpixel((0, 0)) == WHITE
    assert "Flattened transparency onto white." in result.notes


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_rgba_transparent_pixels_become_white_and_opaque_ones_keep_their_colour(fmt):
    image = solid(300, 300, (0, 0, 255, 255), "RGBA")
    image.paste((0, 0, 0, 0), (0, 0, 100, 300))
    image.paste((0, 0, 0, 128), (100, 0, 200, 300))
    result = validate_image_bytes(encode(image, fmt, lossless=True))
    assert result.image.getpixel((50, 50)) == WHITE
    assert close_to(result.image.getpixel((150, 50)), (127, 127, 127), tolerance=1)  # half black over white
    assert result.image.getpixel((250, 50)) == BLUE
    assert "Flattened transparency onto white." in result.notes


def test_an_opaque_alpha_channel_is_dropped_without_a_note():
    result = validate_image_bytes(encode(solid(300, 300, (1, 2, 3, 255), "RGBA"), "PNG"))
    assert result.image.getpixel((0, 0)) == (1, 2, 3)
    assert result.notes == ()


# --- orientation -----------------------------------------------------------------------------


def with_red_top_band(width: int = 300, height: int = 400) -> Image.Image:
    image = solid(width, height, BLUE)
    image.paste(RED, (0, 0, width, 50))
    return image


def orientation_exif(value: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_exif_orientation_6_rotates_a_portrait_to_landscape(fmt):
    data = encode(with_red_top_band(), fmt, exif=orientation_exif(6), quality=95)
    result = validate_image_bytes(data)
    assert (result.width, result.height) == (400, 300) == result.image.size
    assert "Applied EXIF orientation (rotated 90° clockwise)." in result.notes
    assert close_to(result.image.getpixel((390, 150)), RED, tolerance=12)  # the top band is now on the right
    assert close_to(result.image.getpixel((10, 150)), BLUE, tolerance=12)


@pytest.mark.parametrize(
    ("value", "size", "red_at"),
    [(3, (300, 400), (150, 390)), (8, (400, 300), (10, 150)), (2, (300, 400), (150, 10))],
)
def test_other_orientations_are_applied(value, size, red_at):
    result = validate_image_bytes(encode(with_red_top_band(), "PNG", exif=orientation_exif(value)))
    assert result.image.size == size
    assert result.image.getpixel(red_at) == RED
    assert any("orientation" in note for note in result.notes)


@pytest.mark.parametrize("value", [1, 0, 9])
def test_upright_or_invalid_orientations_change_nothing(value):
    result = validate_image_bytes(encode(with_red_top_band(), "PNG", exif=orientation_exif(value)))
    assert result.image.size == (300, 400) and result.image.getpixel((150, 10)) == RED
    assert not any("orientation" in note for note in result.notes)


def test_unreadable_exif_is_ignored_not_a_traceback():
    data = encode(with_red_top_band(), "PNG", exif=b"MM\x00*\x01")  # a TIFF header cut short
    result = validate_image_bytes(data)
    assert result.image.size == (300, 400)
    assert "Ignored unreadable EXIF data (orientation not applied)." in result.notes
    assert "Removed metadata (EXIF)." in result.notes


# --- metadata --------------------------------------------------------------------------------


def assert_no_metadata(png: bytes) -> None:
    with Image.open(io.BytesIO(png)) as reopened:
        reopened.load()  # text chunks after the pixel data are only read now
        for key in ("exif", "icc_profile", "xmp", "XML:com.adobe.xmp", "comment"):
            assert key not in reopened.info
        assert reopened.text == {}
        assert len(reopened.getexif()) == 0
    chunk_types = {png[i + 4 : i + 8] for i in range(8, len(png) - 8) if png[i + 4 : i + 8].isalpha()}
    assert not chunk_types & {b"eXIf", b"iCCP", b"tEXt", b"zTXt", b"iTXt"}


def private_exif() -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # Make
    exif[0x8825] = {1: "N", 2: (51.0, 30.0, 0.0)}  # GPS position
    return exif


def test_png_metadata_is_stripped():
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "private-comment")
    info.add_itxt("Author", "private-author", zip=True)
    result = validate_image_bytes(encode(solid(), "PNG", exif=private_exif(), pnginfo=info, icc_profile=srgb_icc()))
    assert "Removed metadata (EXIF, ICC profile, text)." in result.notes
    assert result.image.info == {}
    assert_no_metadata(result.png_bytes)
    assert b"SecretCam" not in result.png_bytes and b"private" not in result.png_bytes


def test_jpeg_metadata_is_stripped():
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/">private-xmp</x:xmpmeta>'
    data = encode(solid(), "JPEG", exif=private_exif(), icc_profile=srgb_icc(), comment=b"private-note", xmp=xmp)
    result = validate_image_bytes(data)
    assert "Removed metadata (EXIF, ICC profile, XMP, text)." in result.notes
    assert_no_metadata(result.png_bytes)
    assert b"SecretCam" not in result.png_bytes and b"private" not in result.png_bytes


def test_webp_metadata_is_stripped():
    result = validate_image_bytes(encode(solid(), "WEBP", exif=private_exif(), icc_profile=srgb_icc()))
    assert "Removed metadata (EXIF, ICC profile)." in result.notes
    assert_no_metadata(result.png_bytes)


def test_an_embedded_colour_profile_is_converted_to_srgb_not_just_dropped():
    result = validate_image_bytes(encode(solid(color=(200, 100, 50)), "PNG", icc_profile=srgb_icc()))
    assert "Converted the embedded colour profile to sRGB." in result.notes
    assert close_to(result.image.getpixel((5, 5)), (200, 100, 50), tolerance=2)
    assert_no_metadata(result.png_bytes)


def test_a_transparent_image_keeps_its_alpha_through_the_colour_profile():
    image = solid(300, 300, (0, 0, 255, 255), "RGBA")
    image.paste((0, 0, 0, 0), (0, 0, 100, 300))
    result = validate_image_bytes(encode(image, "PNG", icc_profile=srgb_icc()))
    assert result.image.getpixel((50, 50)) == WHITE
    assert close_to(result.image.getpixel((250, 50)), BLUE, tolerance=2)


def test_an_unreadable_colour_profile_is_dropped_with_a_note():
    result = validate_image_bytes(encode(solid(color=(200, 100, 50)), "PNG", icc_profile=b"\x00" * 128))
    assert "Ignored an unreadable colour profile." in result.notes
    assert result.image.getpixel((5, 5)) == (200, 100, 50)
    assert_no_metadata(result.png_bytes)
