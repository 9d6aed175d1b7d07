"""Upload validation: every accepted normalisation and every rejection, on images made in memory."""

import io
import struct

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from studio.validation import (
    MAX_UPLOAD_BYTES,
    UploadRejected,
    ValidatedImage,
    sniff_format,
    validate_image_bytes,
)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def rgb(width=300, height=400, color=(10, 120, 200)) -> Image.Image:
    return Image.new("RGB", (width, height), color)


def reject(data: bytes, match: str, filename: str | None = None) -> None:
    with pytest.raises(UploadRejected, match=match):
        validate_image_bytes(data, filename=filename)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_valid_images_pass_as_rgb_with_their_size(fmt):
    result = validate_image_bytes(encode(rgb(), fmt))
    assert isinstance(result, ValidatedImage)
    assert (result.width, result.height) == (300, 400) == result.image.size
    assert result.image.mode == "RGB"
    assert result.source_format == fmt
    assert result.notes == ()
    with Image.open(io.BytesIO(result.png_bytes)) as reopened:
        assert reopened.format == "PNG" and reopened.size == (300, 400)


def test_content_decides_the_format_not_the_extension():
    result = validate_image_bytes(encode(rgb(), "PNG"), filename="holiday.jpg")
    assert result.source_format == "PNG"
    assert any("named .jpg" in note for note in result.notes)


def test_sniff_format_reads_magic_bytes():
    assert sniff_format(encode(rgb(), "JPEG")) == "JPEG"
    assert sniff_format(encode(rgb(), "PNG")) == "PNG"
    assert sniff_format(encode(rgb(), "WEBP")) == "WEBP"
    assert sniff_format(b"GIF89a....") is None
    assert sniff_format(b"RIFF\x00\x00\x00\x00WAVE") is None


def test_zero_bytes():
    reject(b"", r"The file is empty \(0 bytes\)\.")


def test_over_ten_megabytes_is_refused_before_decoding():
    data = b"\x89PNG\r\n\x1a\n" + bytes(MAX_UPLOAD_BYTES - 7)
    reject(data, r"File too large: 10\.0 MB, max 10\.0 MB\.")
    reject(bytes(12 * 1024 * 1024), r"File too large: 12\.0 MB")


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"hello, this is a text file\n", "Unsupported file type: only JPG, PNG and WebP"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"></svg>', "SVG is not supported"),
        (b'<?xml version="1.0"?>\n<svg></svg>', "SVG is not supported"),
        (b"GIF89a" + bytes(100), "GIF files are not supported"),
        (b"BM" + bytes(100), "BMP files are not supported"),
        (b"II*\x00" + bytes(100), "TIFF files are not supported"),
        (b"%PDF-1.7" + bytes(100), "PDF files are not supported"),
    ],
)
def test_other_file_types_are_named_and_refused(data, match):
    reject(data, match)


def test_too_large_dimensions_name_the_size_and_the_limit():
    reject(encode(Image.new("L", (5000, 300)), "PNG"), "Image too large: 5000×300, max 4096×4096.")


def test_too_small_dimensions_name_the_size_and_the_limit():
    reject(encode(rgb(200, 180), "PNG"), "Image too small: 200×180, min 256×256.")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_truncated_files_are_corrupt(fmt):
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8))
    data = encode(noisy, fmt)
    reject(data[: len(data) // 2], "corrupt or truncated")


def test_garbage_after_a_valid_signature_is_corrupt():
    reject(b"\x89PNG\r\n\x1a\n" + b"garbage" * 50, "corrupt or truncated")
    reject(b"\xff\xd8\xff" + b"\x00" * 500, "corrupt or truncated")


def test_a_decompression_bomb_is_refused(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300 * 300)
    reject(encode(rgb(400, 400), "PNG"), "decompression bomb")


def test_the_global_bomb_limit_is_left_alone():
    before = Image.MAX_IMAGE_PIXELS
    validate_image_bytes(encode(rgb(), "PNG"))
    assert before == Image.MAX_IMAGE_PIXELS


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_animations_use_the_first_frame(fmt):
    frames = [rgb(300, 300, c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], lossless=True)
    result = validate_image_bytes(data)
    assert "Animated image: used the first frame of 3." in result.notes
    assert result.image.getpixel((150, 150)) == (255, 0, 0)


def test_cmyk_becomes_rgb():
    result = validate_image_bytes(encode(Image.new("CMYK", (300, 300), (0, 255, 255, 0)), "JPEG"))
    assert result.image.mode == "RGB"
    assert "Converted CMYK to RGB." in result.notes
    red, green, blue = result.image.getpixel((150, 150))
    assert red > 200 and green < 60 and blue < 60


def test_16_bit_png_is_scaled_not_clipped():
    samples = np.zeros((300, 300), dtype=np.uint16)
    samples[:, :100], samples[:, 100:200] = 65535, 32768
    result = validate_image_bytes(encode(Image.fromarray(samples), "PNG"))
    assert result.image.getpixel((50, 0)) == (255, 255, 255)
    assert result.image.getpixel((150, 0)) == (128, 128, 128)
    assert result.image.getpixel((250, 0)) == (0, 0, 0)
    assert "Reduced a 16-bit image to 8 bits per channel." in result.notes


def test_palette_transparency_is_flattened_onto_white():
    palette_image = rgb(300, 300, (255, 0, 0)).convert("P")
    transparent = palette_image.getpixel((0, 0))
    data = encode(palette_image, "PNG", transparency=transparent)
    result = validate_image_bytes(data)
    assert result.image.getpixel((0, 0)) == (255, 255, 255)
    assert "Flattened transparency onto white." in result.notes


def test_rgba_transparent_pixels_become_white_and_opaque_ones_keep_their_colour():
    image = Image.new("RGBA", (300, 300), (0, 0, 255, 255))
    image.paste((0, 0, 0, 0), (0, 0, 100, 300))
    result = validate_image_bytes(encode(image, "PNG"))
    assert result.image.getpixel((50, 50)) == (255, 255, 255)
    assert result.image.getpixel((200, 50)) == (0, 0, 255)
    assert "Flattened transparency onto white." in result.notes


def test_an_opaque_alpha_channel_is_dropped_without_a_note():
    result = validate_image_bytes(encode(Image.new("RGBA", (300, 300), (1, 2, 3, 255)), "PNG"))
    assert result.image.getpixel((0, 0)) == (1, 2, 3)
    assert result.notes == ()


def test_exif_orientation_is_applied():
    image = rgb(300, 400)
    image.paste((255, 0, 0), (0, 0, 300, 50))  # a red band along the top
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    result = validate_image_bytes(encode(image, "JPEG", exif=exif, quality=95))
    assert (result.width, result.height) == (400, 300)
    assert "Applied the EXIF orientation." in result.notes
    assert result.image.getpixel((390, 150))[0] > 200  # the top band is now on the right


def test_metadata_is_stripped_from_the_stored_png():
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # Make
    exif[0x8825] = {1: "N"}  # GPS
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "private")
    icc = b"\x00" * 128
    png = encode(rgb(), "PNG", exif=exif, pnginfo=info, icc_profile=icc)
    result = validate_image_bytes(png)
    assert "Removed metadata (EXIF, colour profile, text)." in result.notes
    with Image.open(io.BytesIO(result.png_bytes)) as reopened:
        assert "exif" not in reopened.info and "icc_profile" not in reopened.info
        assert "Comment" not in reopened.info
        assert len(reopened.getexif()) == 0
    assert b"SecretCam" not in result.png_bytes and b"private" not in result.png_bytes


def test_webp_riff_header_with_a_broken_body_is_corrupt():
    body = b"WEBPVP8 " + struct.pack("<I", 1000) + b"\x00" * 20
    reject(b"RIFF" + struct.pack("<I", len(body)) + body, "corrupt or truncated")


def test_an_embedded_colour_profile_is_converted_to_srgb_not_just_dropped():
    from PIL import ImageCms

    srgb_profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    result = validate_image_bytes(encode(rgb(color=(200, 100, 50)), "PNG", icc_profile=srgb_profile))
    assert "Converted the embedded colour profile to sRGB." in result.notes
    assert all(abs(a - b) <= 2 for a, b in zip(result.image.getpixel((5, 5)), (200, 100, 50), strict=True))
    with Image.open(io.BytesIO(result.png_bytes)) as reopened:
        assert "icc_profile" not in reopened.info
