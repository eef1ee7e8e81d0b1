"""Codec: Gaussian targets, sub-pixel decoding, heatmap <-> input coordinates, the HeatmapCodec object."""

import math

import numpy as np
import pytest
import torch

from crfpose.codec import HeatmapCodec, decode, encode, heatmap_to_input, input_to_heatmap, labelled, stride_between


def _interior_points(b=3, k=5, w=24, h=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    kp = torch.rand(b, k, 3, generator=g, dtype=torch.float64)
    kp[..., 0] = kp[..., 0] * (w - 12) + 6
    kp[..., 1] = kp[..., 1] * (h - 12) + 6
    kp[..., 2] = 2
    return kp


def test_encode_matches_hand_computed_gaussian():
    kp = torch.tensor([[2.3, 1.6, 2.0]])
    target, weight = encode(kp, (5, 4), sigma=1.5)
    assert target.shape == (1, 4, 5) and weight.tolist() == [1.0]
    x, y = 4, 0
    expected = math.exp(-((x - 2.3) ** 2 + (y - 1.6) ** 2) / (2 * 1.5**2))
    assert target[0, y, x].item() == pytest.approx(expected, rel=1e-6)
    assert target.max().item() <= 1.0


def test_encode_weights_unlabelled_and_off_grid():
    kp = torch.tensor([[3.0, 3.0, 0.0], [3.0, 3.0, 1.0], [-0.6, 3.0, 2.0], [7.4, 5.4, 2.0], [7.6, 3.0, 2.0]])
    target, weight = encode(kp, (8, 6), sigma=1.0)
    assert weight.tolist() == [0.0, 1.0, 0.0, 1.0, 0.0]
    assert target[weight == 0].abs().sum() == 0
    assert target[1].max() == pytest.approx(1.0)


def test_encode_accepts_numpy_and_batches():
    kp = _interior_points().numpy()
    batched, _ = encode(kp, (24, 20))
    single, _ = encode(kp[1], (24, 20))
    assert batched.shape == (3, 5, 20, 24)
    assert torch.equal(batched[1], single)


@pytest.mark.parametrize("sigma", [1.0, 2.0, 3.0])
def test_round_trip_dark_within_005(sigma):
    kp = _interior_points(seed=int(sigma))
    target, _ = encode(kp, (24, 20), sigma=sigma)
    for blur in (0.0, 1.0):
        out = decode(target, "dark", blur_sigma=blur)
        assert (out[..., :2] - kp[..., :2]).abs().max() < 0.05
        assert torch.allclose(out[..., 2], target.flatten(-2).max(-1).values)


def test_quarter_and_none_refinement_match_their_definitions():
    kp = _interior_points()
    target, _ = encode(kp, (24, 20), sigma=2.0)
    none = decode(target, "none")
    assert torch.equal(none[..., :2], kp[..., :2].round().float())
    quarter = decode(target, "quarter")
    shift = quarter[..., :2] - none[..., :2]
    expected = 0.25 * torch.sign(kp[..., :2] - kp[..., :2].round())
    assert torch.allclose(shift, expected.float())
    # quarter is closer than the arg-max on average
    assert (quarter[..., :2] - kp[..., :2]).abs().mean() < (none[..., :2] - kp[..., :2]).abs().mean()


def test_decode_border_peak_is_not_refined_and_score_is_max():
    maps = torch.zeros(1, 2, 5, 6)
    maps[0, 0, 0, 5] = 0.7
    maps[0, 0, 1, 4] = 0.3
    maps[0, 1, 2, 3] = 0.9
    maps[0, 1, 2, 4] = 0.5
    out = decode(maps, "quarter")
    assert out[0, 0].tolist() == pytest.approx([5.0, 0.0, 0.7])
    assert out[0, 1].tolist() == pytest.approx([3.25, 2.0, 0.9])


def test_decode_marginals_of_a_gaussian():
    kp = _interior_points(b=1, k=2)
    target, _ = encode(kp, (24, 20), sigma=2.0)
    marginals = target / target.sum(dim=(-2, -1), keepdim=True)
    out = decode(marginals, "dark")
    assert (out[..., :2] - kp[..., :2]).abs().max() < 0.05


def test_heatmap_input_round_trip_and_convention():
    pts = np.array([[0.0, 0.0, 2.0], [3.25, 7.5, 1.0]])
    crop = heatmap_to_input(pts, 4)
    # heatmap cell 0 covers input pixels 0..3, whose centre is 1.5
    assert crop[0, :2].tolist() == [1.5, 1.5] and crop[:, 2].tolist() == [2.0, 1.0]
    back = input_to_heatmap(crop, 4)
    assert np.allclose(back, pts)
    t = torch.tensor([[2.0, 3.0]])
    assert torch.allclose(input_to_heatmap(heatmap_to_input(t, (4, 2)), (4, 2)), t)
    assert heatmap_to_input(t, (4, 2))[0].tolist() == [9.5, 6.5]


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="keypoints must have shape"):
        encode(torch.zeros(4, 2), (8, 8))
    with pytest.raises(ValueError, match="heatmap_size"):
        encode(torch.zeros(4, 3), (8, 0))
    with pytest.raises(ValueError, match="sigma"):
        encode(torch.zeros(4, 3), (8, 8), sigma=0)
    with pytest.raises(ValueError, match="NaN"):
        encode(torch.tensor([[float("nan"), 1.0, 2.0]]), (8, 8))
    with pytest.raises(ValueError, match="heatmaps must have shape"):
        decode(torch.zeros(3, 8, 8))
    with pytest.raises(TypeError, match="heatmaps must be a torch.Tensor"):
        decode(np.zeros((1, 1, 8, 8)))
    with pytest.raises(ValueError, match="refine must be one of"):
        decode(torch.zeros(1, 1, 8, 8), refine="taylor")
    with pytest.raises(ValueError, match="blur_sigma"):
        decode(torch.zeros(1, 1, 8, 8), blur_sigma=-1)
    with pytest.raises(ValueError, match="stride"):
        heatmap_to_input(np.zeros((2, 2)), 0)
    with pytest.raises(ValueError, match="points must be"):
        input_to_heatmap(np.zeros((2, 1)), 4)


def test_labelled_rule_by_hand():
    # heatmap 4 x 3 (W x H): the grid spans [-0.5, 3.5] x [-0.5, 2.5]
    kp = torch.tensor(
        [
            [
                [1.0, 1.0, 2.0],  # inside
                [1.0, 1.0, 0.0],  # v = 0
                [float("nan"), float("nan"), 0.0],  # v = 0 at NaN: not labelled, no error
                [-0.5, -0.5, 1.0],  # on the -0.5 corner: inside
                [3.5, 2.5, 1.0],  # on the far border: inside
                [-0.51, 1.0, 1.0],  # just left of the grid
                [1.0, 2.51, 1.0],  # just below it
                [4.0, 1.0, 2.0],  # right of it
            ]
        ],
        dtype=torch.float64,
    )
    expected = [[True, False, False, True, True, False, False, False]]
    mask = labelled(kp, (4, 3))
    assert mask.dtype == torch.bool and mask.tolist() == expected
    assert labelled(kp.numpy(), (4, 3)).tolist() == expected  # arrays give arrays
    assert (encode(kp, (4, 3))[1] > 0).tolist() == expected  # the rule encode weights by
    with pytest.raises(ValueError, match="labelled joints .* got NaN"):
        labelled(torch.tensor([[float("nan"), 1.0, 1.0]]), (4, 3))
    with pytest.raises(ValueError, match="keypoints must have shape"):
        labelled(torch.zeros(2, 2), (4, 3))


def test_heatmap_codec_stride_and_round_trip():
    c = HeatmapCodec([48, 64], [12, 32], sigma=1.5)
    assert c.input_size == (48, 64) and c.heatmap_size == (12, 32) and c.stride == (4.0, 2.0)
    pts = torch.tensor([[0.0, 0.0, 2.0], [3.25, 7.5, 1.0]], dtype=torch.float64)
    assert c.to_input(pts)[0].tolist() == [1.5, 0.5, 2.0]  # cell 0 covers input pixels 0..3 (x) and 0..1 (y)
    assert torch.allclose(c.to_heatmap(c.to_input(pts)), pts)
    assert torch.equal(c.to_input(pts), heatmap_to_input(pts, (4.0, 2.0)))
    assert stride_between(torch.zeros(1, 3, 64, 48), torch.zeros(1, 5, 32, 12)) == c.stride
    with pytest.raises(ValueError, match="heatmap_size must be"):
        HeatmapCodec((48, 64), (12, 0))


def test_heatmap_codec_encode_and_decode_work_in_input_pixels():
    c = HeatmapCodec((96, 80), (24, 20), sigma=2.0)
    cells = _interior_points(w=24, h=20)  # (3, 5, 3) heatmap pixels
    crop = c.to_input(cells)
    target, weight = c.encode(crop)
    expected_target, expected_weight = encode(cells, (24, 20), sigma=2.0)
    assert torch.allclose(target, expected_target, atol=1e-6) and torch.equal(weight, expected_weight)
    decoded = c.decode(expected_target, refine="dark")
    assert torch.allclose(decoded, heatmap_to_input(decode(expected_target, refine="dark"), c.stride))
    assert torch.allclose(decoded[..., :2], crop[..., :2].float(), atol=0.05 * 4)
    with pytest.raises(ValueError, match=r"heatmaps must be on the 20 x 24 grid"):
        c.decode(torch.zeros(1, 5, 24, 20))
