"""Images read right or refused by name (issue 19, items 4, 5, 9): every PIL mode to 8-bit RGB by its
true range, EXIF orientation (all 8) for user photos and the stored frame for data sets, and float
inputs outside [0, 1] refused. Truths are computed here with numpy from the values written."""

import colorsys

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import crfpose.images as images
from crfpose.data import PersonRecord, PoseDataset, load_image
from crfpose.images import decode_image
from crfpose.models import PoseModel
from crfpose.predict import Predictor, read_image
from crfpose.skeletons import LSP14

RNG = np.random.default_rng(0)
RAMP16 = (np.arange(40 * 64, dtype=np.int64).reshape(40, 64) * 65535 // (40 * 64 - 1)).astype(np.uint16)  # 0..65535


def grey_rgb(grey8: np.ndarray) -> np.ndarray:
    return np.repeat(np.asarray(grey8, dtype=np.uint8)[..., None], 3, axis=2)


def over_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``rgb`` with opacity ``alpha`` (0-255) composited on white, in float (the truth for transparency)."""
    a = alpha[..., None] / 255.0
    return rgb * a + 255.0 * (1 - a)


def saved(tmp_path, image: Image.Image, name: str, **options):
    path = tmp_path / name
    image.save(path, **options)
    return path


def test_16_bit_grey_png_is_scaled_not_clipped(tmp_path):
    path = saved(tmp_path, Image.fromarray(RAMP16), "ramp16.png")
    with Image.open(path) as im:
        assert im.mode in ("I;16", "I")  # what PIL makes of a 16-bit grey PNG
    expected = grey_rgb(np.round(RAMP16 * 255.0 / 65535))
    assert np.array_equal(decode_image(path), expected)
    assert np.array_equal(load_image(path).numpy().transpose(1, 2, 0), expected / np.float32(255))
    assert torch.equal(read_image(path), load_image(path))
    # the same picture stored in 8 bits reads the same
    eight = saved(tmp_path, Image.fromarray(expected[..., 0]), "ramp8.png")
    assert torch.equal(read_image(eight), read_image(path))


def grey16(mode: str) -> Image.Image:
    """RAMP16 as a PIL image of a 16-bit mode (PIL's convert between 16-bit modes clips at 255: bytes instead)."""
    return Image.frombytes(mode, (64, 40), RAMP16.astype(">u2" if mode == "I;16B" else "=u2" if mode == "I;16N" else "<u2").tobytes())


@pytest.mark.parametrize("mode, suffix", [("I;16", ".tif"), ("I;16B", ".tif"), ("I;16", ".ppm")])  # PPM comes back as mode "I"
def test_16_bit_modes_of_other_formats(tmp_path, mode, suffix):
    path = saved(tmp_path, grey16(mode), "ramp" + suffix)
    assert np.array_equal(decode_image(path), grey_rgb(np.round(RAMP16 * 255.0 / 65535)))


def test_in_memory_16_bit_modes():
    for mode in ("I;16", "I;16L", "I;16N", "I;16B"):
        assert np.array_equal(decode_image(grey16(mode)), grey_rgb(np.round(RAMP16 * 255.0 / 65535))), mode


def test_32_bit_integer_and_float_images(tmp_path):
    ramp_i = saved(tmp_path, Image.fromarray(RAMP16.astype(np.int32)), "i.tif")
    assert np.array_equal(decode_image(ramp_i), grey_rgb(np.round(RAMP16 * 255.0 / 65535)))
    unit = RNG.uniform(0, 1, (30, 20)).astype(np.float32)
    path = saved(tmp_path, Image.fromarray(unit), "f.tif")
    with Image.open(path) as im:
        assert im.mode == "F"
    assert np.array_equal(decode_image(path), grey_rgb(np.round(unit * 255)))
    wide = saved(tmp_path, Image.fromarray(np.array([[0, 70000]], dtype=np.int32)), "wide.tif")
    with pytest.raises(ValueError, match=r"wide\.tif: 32-bit integer image \(mode 'I'\) with values 0\.\.70000, outside"):
        decode_image(wide)
    negative = Image.fromarray(np.array([[-5, 10]], dtype=np.int32))
    with pytest.raises(ValueError, match=r"image: 32-bit integer image \(mode 'I'\) with values -5\.\.10"):
        decode_image(negative)
    big = saved(tmp_path, Image.fromarray(np.array([[0.0, 200.0]], dtype=np.float32)), "f255.tif")
    with pytest.raises(ValueError, match=r"f255\.tif: 32-bit float image \(mode 'F'\) with values 0\.\.200; float images are read as 0"):
        read_image(big)
    with pytest.raises(ValueError, match=r"mode 'F'.* nan"):
        decode_image(Image.fromarray(np.array([[0.5, np.nan]], dtype=np.float32)))


def test_palette_bilevel_and_colour_spaces(tmp_path):
    rgb = RNG.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    palette = Image.fromarray(rgb).quantize(16)
    table = np.array(palette.getpalette()[: 3 * 256], dtype=np.uint8).reshape(-1, 3)
    assert np.array_equal(decode_image(saved(tmp_path, palette, "p.png")), table[np.asarray(palette)])

    bits = RNG.integers(0, 2, (9, 11)).astype(bool)
    assert np.array_equal(decode_image(saved(tmp_path, Image.fromarray(bits), "b.png")), grey_rgb(bits * 255))

    cmyk = RNG.integers(0, 256, (6, 7, 4), dtype=np.uint8)
    c, k = cmyk[..., :3] / 255.0, cmyk[..., 3:] / 255.0
    got = decode_image(saved(tmp_path, Image.fromarray(cmyk, "CMYK"), "c.tif")).astype(float)
    assert np.abs(got - 255 * (1 - c) * (1 - k)).max() <= 1

    ycc = RNG.integers(16, 240, (6, 7, 3)).astype(np.uint8)
    y, cb, cr = (ycc[..., i].astype(float) for i in range(3))
    jfif = np.stack([y + 1.402 * (cr - 128), y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128), y + 1.772 * (cb - 128)], -1)
    assert np.abs(decode_image(Image.fromarray(ycc, "YCbCr")).astype(float) - np.clip(jfif, 0, 255)).max() <= 2

    hsv = RNG.integers(0, 256, (5, 4, 3), dtype=np.uint8)
    truth = np.array([[colorsys.hsv_to_rgb(*(px / 255.0)) for px in row] for row in hsv]) * 255
    assert np.abs(decode_image(Image.fromarray(hsv, "HSV")).astype(float) - truth).max() <= 1

    lab = np.array([[[255, 0, 0], [0, 0, 0], [255, 0, 0]]], dtype=np.uint8)  # L* 100 -> white, L* 0 -> black
    assert np.abs(decode_image(Image.fromarray(lab, "LAB")).astype(int) - np.array([[[255] * 3, [0] * 3, [255] * 3]])).max() <= 2


def test_transparency_is_composited_on_white(tmp_path):
    rgb = RNG.integers(0, 256, (8, 9, 3), dtype=np.uint8)
    alpha = RNG.integers(0, 256, (8, 9), dtype=np.uint8)
    alpha[0, 0], alpha[0, 1] = 0, 255
    rgba = np.dstack([rgb, alpha])
    got = decode_image(saved(tmp_path, Image.fromarray(rgba, "RGBA"), "a.png"))
    assert np.abs(got - over_white(rgb, alpha)).max() <= 1
    assert got[0, 0].tolist() == [255, 255, 255] and got[0, 1].tolist() == rgb[0, 1].tolist()
    assert np.abs(decode_image(Image.fromarray(rgba, "RGBA").convert("RGBa")) - over_white(rgb, alpha)).max() <= 2

    grey = rgb[..., 0]
    la = Image.fromarray(np.dstack([grey, alpha]), "LA")
    assert np.abs(decode_image(saved(tmp_path, la, "la.png")) - over_white(grey_rgb(grey), alpha)).max() <= 1
    assert np.abs(decode_image(la.convert("La")) - over_white(grey_rgb(grey), alpha)).max() <= 2

    palette = Image.fromarray(rgb).quantize(8)
    index = np.asarray(palette)
    clear = int(index[0, 0])
    palette.info["transparency"] = clear
    table = np.array(palette.getpalette()[:24], dtype=np.uint8).reshape(-1, 3)
    expected = np.where((index == clear)[..., None], 255, table[index])
    assert np.array_equal(decode_image(saved(tmp_path, palette, "pt.png", transparency=clear)), expected)
    pa = Image.fromarray(np.dstack([index, alpha]), "PA")
    pa.putpalette(palette.getpalette())
    assert np.abs(decode_image(pa) - over_white(table[index], alpha)).max() <= 1

    clear16 = int(RAMP16[0, 5])  # a 16-bit grey PNG's transparent value (tRNS)
    expected16 = np.where(RAMP16 == clear16, 255, np.round(RAMP16 * 255.0 / 65535))
    assert np.array_equal(decode_image(saved(tmp_path, Image.fromarray(RAMP16), "t16.png", transparency=clear16)), grey_rgb(expected16))
    clear8 = int(grey[0, 0])
    expected8 = np.where(grey == clear8, 255, grey)
    assert np.array_equal(decode_image(saved(tmp_path, Image.fromarray(grey), "t8.png", transparency=clear8)), grey_rgb(expected8))

    opaque = saved(tmp_path, Image.fromarray(np.dstack([rgb, np.full((8, 9), 255, np.uint8)]), "RGBA"), "opaque.png")
    assert np.array_equal(decode_image(opaque), rgb)


def test_every_pil_mode_is_read_and_an_unknown_one_refused_by_name(monkeypatch):
    modes = "1 CMYK F HSV I I;16 I;16B I;16L I;16N L LA La LAB P PA RGB RGBA RGBa RGBX YCbCr".split()
    modes += [m for m in getattr(Image, "MODES", []) if m not in modes]  # whatever this Pillow adds
    for mode in modes:
        out = decode_image(Image.new(mode, (3, 2)))
        assert out.shape == (2, 3, 3) and out.dtype == np.uint8, mode
    monkeypatch.setattr(images, "_PIL_TO_RGB", images._PIL_TO_RGB - {"HSV"})
    with pytest.raises(ValueError, match=r"photo\.hsv: image mode 'HSV' is not supported \(supported: .*\); convert it to RGB"):
        decode_image(Image.new("HSV", (3, 2)), name="photo.hsv")


def test_unreadable_files_are_named(tmp_path):
    (tmp_path / "t.png").write_text("not an image")
    with pytest.raises(ValueError, match=r"t\.png: cannot read image \(cannot identify image file"):
        read_image(tmp_path / "t.png")
    with pytest.raises(ValueError, match=r"gone\.png: image file not found"):
        read_image(tmp_path / "gone.png")
    good = saved(tmp_path, Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)), "g.png")
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"cut\.png: record r7: cannot read image"):
        load_image(tmp_path / "cut.png", "r7")
    with pytest.raises(TypeError, match="image: expected a path or a PIL image, got int"):
        decode_image(3)


# EXIF orientation: the picture a viewer shows, from the stored array, by the EXIF definition of each
# value (where the stored 0th row and 0th column go), independent of PIL's table.
SHOWN = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),  # row 0 -> left column, column 0 -> top row
    6: lambda a: np.rot90(a, -1),  # row 0 -> right column, column 0 -> top row
    7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],  # row 0 -> right column, column 0 -> bottom row
    8: lambda a: np.rot90(a, 1),  # row 0 -> left column, column 0 -> bottom row
}


def with_orientation(tmp_path, stored: np.ndarray, orientation: int, suffix: str = ".png"):
    exif = Image.Exif()
    exif[0x0112] = orientation
    return saved(tmp_path, Image.fromarray(stored), f"o{orientation}{suffix}", exif=exif)


@pytest.mark.parametrize("orientation", sorted(SHOWN))
def test_exif_orientation_is_applied_to_photos(tmp_path, orientation):
    stored = RNG.integers(0, 256, (5, 8, 3), dtype=np.uint8)
    path = with_orientation(tmp_path, stored, orientation)
    assert np.array_equal(decode_image(path), SHOWN[orientation](stored))
    assert np.array_equal(read_image(path).numpy(), SHOWN[orientation](stored).transpose(2, 0, 1) / np.float32(255))
    with Image.open(path) as im:
        assert np.array_equal(read_image(im).numpy(), read_image(path).numpy())  # a PIL image: its own EXIF
    assert np.array_equal(decode_image(path, apply_exif=False), stored)
    assert np.array_equal(load_image(path).numpy(), stored.transpose(2, 0, 1) / np.float32(255))  # data sets: stored frame
    jpeg = with_orientation(tmp_path, stored, orientation, ".jpg")
    assert np.array_equal(decode_image(jpeg), SHOWN[orientation](decode_image(jpeg, apply_exif=False)))


def test_data_sets_read_the_stored_frame_and_say_so(tmp_path):
    stored = np.zeros((30, 40, 3), np.uint8)
    stored[7, 25] = 255  # a keypoint drawn in the stored pixels, where COCO/MPII/LSP annotations are
    path = with_orientation(tmp_path, stored, 6)
    keypoints = np.zeros((14, 3))
    keypoints[0] = (25, 7, 2)
    record = PersonRecord(path, 1, "r1", np.array([5.0, 2.0, 30.0, 24.0]), keypoints, image_size=(40, 30))
    with pytest.warns(UserWarning, match=r"1 image\(s\) carry an EXIF orientation tag \(first: .*o6\.png, orientation 6\); .*stored pixel"):
        dataset = PoseDataset([record], LSP14)
    item = dataset[0]
    x, y = item["keypoints"][0, :2].round().int().tolist()
    assert item["image"][:, y, x].min() > 0.5  # the bright pixel is where the keypoint says
    turned = PersonRecord(path, 1, "r2", np.array([5.0, 2.0, 20.0, 24.0]), keypoints, image_size=(30, 40))
    with pytest.raises(ValueError, match=r"o6\.png: record r2: image is 40x30, annotation says 30x40 \(its EXIF-rotated size"):
        PoseDataset([turned], LSP14)


class TinyNet(nn.Module):
    """A fixed random convolution: a deterministic function of the crop, to compare whole predictions."""

    stride = 4

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 14, 5, padding=2), nn.AvgPool2d(4))

    def forward(self, x):
        return self.net(x)


def test_predictions_on_a_sideways_phone_photo_and_a_16_bit_png(tmp_path):
    upright = RNG.integers(0, 256, (64, 48, 3), dtype=np.uint8)
    predictor = Predictor(PoseModel(TinyNet(), LSP14, (48, 64)), decoder="unary", flip=False)
    expected = predictor(saved(tmp_path, Image.fromarray(upright), "upright.png"))[0]["keypoints"]
    sideways = with_orientation(tmp_path, np.rot90(upright, 1).copy(), 6)  # stored turned, tag says turn back
    assert np.array_equal(predictor(sideways)[0]["keypoints"], expected)

    grey = upright[..., 1]
    sixteen = saved(tmp_path, Image.fromarray(grey.astype(np.uint16) * 257), "grey16.png")
    eight = saved(tmp_path, Image.fromarray(grey), "grey8.png")
    assert np.array_equal(predictor(sixteen)[0]["keypoints"], predictor(eight)[0]["keypoints"])


def test_float_inputs_outside_0_1_are_refused():
    unit = torch.rand(3, 20, 30, generator=torch.Generator().manual_seed(0))
    assert torch.equal(read_image(unit), unit)
    assert torch.equal(read_image(unit.numpy().transpose(1, 2, 0).astype(np.float64)), unit)
    assert torch.equal(read_image((unit * 255).round().to(torch.uint8)), (unit * 255).round() / 255)
    overshoot = unit.clone()
    overshoot[0, 0, :2] = torch.tensor([-0.05, 1.05])  # bicubic resampling overshoot: clipped
    assert read_image(overshoot)[0, 0, :2].tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match=r"image: expected float values in \[0, 1\] .*got 0\.\.255: divide a 0-255 image by 255"):
        read_image(unit * 0 + torch.linspace(0, 255, 30))
    mean, std = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    with pytest.raises(ValueError, match=r"got -2\.\d+\.\.2\.\d+: .*before ImageNet normalisation"):
        read_image((unit - mean) / std)
    with pytest.raises(ValueError, match=r"got 255\.\.255"):
        read_image(np.full((4, 5, 3), 255.0))
    with pytest.raises(ValueError, match=r"got nan\.\.nan"):
        read_image(torch.full((3, 4, 5), float("nan")))
    with pytest.raises(ValueError, match=r"image: expected .* of uint8 or float in \[0, 1\], got Tensor \(3, 4, 5\) torch\.int64"):
        read_image(torch.full((3, 4, 5), 200))
    with pytest.raises(ValueError, match=r"got ndarray \(4, 5, 3\) uint16"):
        read_image(np.zeros((4, 5, 3), np.uint16))
