"""One input file -> one stored image: colour modes, orientation, ADM centre crop, and every kind of bad file."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

from vtp.data.preprocess import Skip, center_crop, decode, digest, prepare, split_of, to_rgb

BIG = 10**8


def encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def rgb_of(data: bytes, res: int = 16, fmt: str = "png") -> np.ndarray:
    out = Image.open(io.BytesIO(prepare(data, res, fmt, 95, BIG)))
    assert out.mode == "RGB" and out.size == (res, res)
    return np.asarray(out).astype(int)


def noise(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_transparency_is_composited_on_white():
    assert (rgb_of(encoded(Image.new("RGBA", (20, 20), (255, 0, 0, 0)), "PNG")) == 255).all()
    half = rgb_of(encoded(Image.new("RGBA", (20, 20), (255, 0, 0, 128)), "PNG"))
    assert np.abs(half - [255, 127, 127]).max() <= 1
    assert (rgb_of(encoded(Image.new("LA", (20, 20), (0, 0)), "PNG")) == 255).all()
    pal = Image.new("P", (20, 20), 0)
    pal.putpalette([255, 0, 0] * 256)
    assert (rgb_of(encoded(pal, "PNG", transparency=0)) == 255).all()
    pal.paste(1, (0, 0, 20, 10))
    assert (rgb_of(encoded(pal, "PNG"))[0, 0] == [255, 0, 0]).all()  # opaque palette: its colour


def test_cmyk_greyscale_and_bilevel_become_rgb():
    red = rgb_of(encoded(Image.new("CMYK", (20, 20), (0, 255, 255, 0)), "TIFF"))
    assert (red == [255, 0, 0]).all()
    assert (rgb_of(encoded(Image.new("L", (20, 20), 77), "PNG")) == 77).all()
    assert (rgb_of(encoded(Image.new("1", (20, 20), 1), "PNG")) == 255).all()


def test_16_bit_is_scaled_not_clipped():
    ramp = np.linspace(0, 65535, 32 * 32).astype(np.uint16).reshape(32, 32)
    out = to_rgb(Image.fromarray(ramp))
    assert out.mode == "RGB"
    assert np.abs(np.asarray(out)[..., 0] - np.round(ramp.astype(float) * 255 / 65535)).max() <= 1
    assert (rgb_of(encoded(Image.fromarray(np.full((20, 20), 30000, np.uint16)), "PNG")) == 117).all()


def test_exif_orientation_is_applied():
    stored = Image.new("RGB", (40, 20), (255, 0, 0))
    stored.paste((0, 0, 255), (20, 0, 40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    img, exact = decode(encoded(stored, "JPEG", exif=exif, quality=95), 16, BIG)
    assert img.size == (20, 40) and not exact
    reference = np.asarray(stored.transpose(Image.Transpose.ROTATE_270)).astype(int)
    assert np.abs(np.asarray(img).astype(int) - reference).mean() < 3


def test_center_crop_matches_torchvision_resize_and_center_crop_without_halving():
    img = noise(50, 40)  # short side < 2R: ADM does no box halving, only bicubic resize + centre crop
    ours = np.asarray(center_crop(img, 32))
    ref = np.asarray(TF.center_crop(TF.resize(img, 32, InterpolationMode.BICUBIC), 32))
    assert np.array_equal(ours, ref)


def test_center_crop_of_a_large_image_is_an_antialiased_resize():
    smooth = noise(12, 8).resize((600, 400), Image.BICUBIC)
    ours = np.asarray(center_crop(smooth, 32)).astype(float)
    ref = np.asarray(TF.center_crop(TF.resize(smooth, 32, InterpolationMode.BICUBIC, antialias=True), 32))
    assert np.abs(ours - ref).mean() < 2.0


def test_jpeg_draft_decoding_gives_the_same_picture():
    photo = noise(16, 12, seed=1).resize((1024, 768), Image.BICUBIC)
    data = encoded(photo, "JPEG", quality=95)
    img, exact = decode(data, 32, BIG)
    assert img.size == (128, 96) and not exact  # libjpeg decoded at 1/8 scale: still >= 32 px
    drafted = rgb_of(data, 32)
    full = np.asarray(center_crop(Image.open(io.BytesIO(data)).convert("RGB"), 32)).astype(int)
    assert np.abs(drafted - full).mean() < 2.0


def test_exact_images_keep_their_bytes_and_others_are_reencoded():
    png = encoded(noise(16, 16), "PNG")
    assert prepare(png, 16, "png", 95, BIG) == png
    assert prepare(png, 8, "png", 95, BIG) != png
    jpg = prepare(png, 16, "jpg", 90, BIG)
    assert Image.open(io.BytesIO(jpg)).format == "JPEG"


def _png_claiming(width: int, height: int) -> bytes:
    """A real 1x1 PNG whose header claims width x height (a decompression bomb's signature)."""
    data = bytearray(encoded(Image.new("L", (1, 1)), "PNG"))
    ihdr = 8 + 8  # signature, then chunk length + type
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr - 4:ihdr + 13]))
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


@pytest.mark.parametrize("data, reason", [
    (b"", "empty_file"),
    (b"just some text, saved as .jpg", "not_an_image"),
    (encoded(noise(64, 64), "JPEG")[:700], "truncated"),
    (encoded(noise(64, 64), "PNG")[:2000], "truncated"),
    (_png_claiming(60000, 60000), "decompression_bomb"),
])
def test_bad_files_raise_skip_with_a_reason(data, reason):
    with pytest.raises(Skip) as e:
        prepare(data, 16, "png", 95, BIG)
    assert e.value.reason == reason and e.value.detail


def test_the_pixel_limit_is_ours():
    with pytest.raises(Skip, match="decompression_bomb: 100x100 = 10000 pixels"):
        prepare(encoded(noise(100, 100), "PNG"), 16, "png", 95, max_pixels=5000)


def test_split_by_hash_is_stable_and_has_the_asked_fraction():
    digests = [digest(str(i)) for i in range(20000)]
    splits = [split_of(d, 0.05) for d in digests]
    assert splits == [split_of(d, 0.05) for d in digests]
    assert 0.04 < splits.count("val") / len(splits) < 0.06
    assert all(split_of(d, 0.0) == "train" for d in digests[:100])
    # Growing the fraction only moves samples train -> val, never back.
    assert all(split_of(d, 0.2) == "val" for d, s in zip(digests, splits, strict=True) if s == "val")
