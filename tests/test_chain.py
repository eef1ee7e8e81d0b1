"""Linear-chain baseline (pytorch-crf) against brute-force enumeration and hand-computed fixtures."""

import itertools

import pytest
import torch

from brute_force import all_poses, enumerate_scores
from crfpose.crf.chain import ChainCRF, cells_to_tags, chain_order, is_chain, kernel_transitions, tags_to_cells
from crfpose.skeletons import LSP14, Skeleton

# A chain whose joint indices are not in chain order: 1 -> 2 -> 0 -> 3.
PATH = Skeleton("path", ("a", "b", "c", "d"), (2, -1, 1, 0))
FORK = Skeleton("fork", ("a", "b", "c"), (-1, 0, 0))


def test_chain_order_is_depth_first_preorder():
    assert chain_order(PATH) == (1, 2, 0, 3)
    assert chain_order(FORK) == (0, 1, 2)
    assert chain_order(LSP14) == (12, 8, 2, 1, 0, 7, 6, 9, 3, 4, 5, 10, 11, 13)
    assert is_chain(PATH) and not is_chain(FORK) and not is_chain(LSP14)


def test_cells_tags_round_trip():
    cells = torch.tensor([[0, 0], [4, 0], [0, 1], [3, 2]])
    tags = cells_to_tags(cells, width=5)
    assert tags.tolist() == [0, 4, 5, 13]
    assert torch.equal(tags_to_cells(tags, width=5), cells)


def test_kernel_transitions_explicit():
    kernel = torch.arange(9.0).view(3, 3)
    out = kernel_transitions(kernel, height=2, width=3)
    cells = [(x, y) for y in range(2) for x in range(3)]
    for i, (xi, yi) in enumerate(cells):
        for j, (xj, yj) in enumerate(cells):
            dx, dy = xj - xi, yj - yi
            expected = kernel[1 + dy, 1 + dx] if abs(dx) <= 1 and abs(dy) <= 1 else float("-inf")
            assert out[i, j] == expected


def test_emissions_pool_cells_by_log_sum_exp():
    model = ChainCRF(FORK, height=3, width=5, cell=2)
    assert (model.grid_height, model.grid_width, model.num_tags) == (2, 3, 6)
    unary = torch.randn(2, 3, 3, 5)
    em = model.emissions(unary)
    assert em.shape == (2, 3, 6)
    assert torch.allclose(em[1, 2, 0], torch.logsumexp(unary[1, 2, 0:2, 0:2].flatten(), 0))
    assert torch.allclose(em[0, 1, 5], unary[0, 1, 2, 4])  # partial corner cell: one pixel
    assert torch.allclose(em[0, 0, 4], torch.logsumexp(unary[0, 0, 2, 2:4], 0))


def test_chain_skeleton_matches_tree_crf_by_enumeration():
    """cell=1 with a kernel shared by all edges: the baseline is the tree CRF (log-probability and MAP)."""
    torch.manual_seed(0)
    kernel = torch.randn(3, 3, dtype=torch.float64)
    unary = torch.randn(2, 4, 2, 3, dtype=torch.float64)
    model = ChainCRF(PATH, height=2, width=3).double()
    model.init_from_kernel(kernel)
    poses, scores = enumerate_scores(unary, kernel.expand(3, 3, 3), PATH)  # (S, K, 2), (B, S)
    log_p = scores - torch.logsumexp(scores, dim=1, keepdim=True)
    for index in (0, 17, 500, 1295):
        chosen = poses[index].expand(2, 4, 2)
        got = model.log_prob(unary, chosen)
        assert torch.allclose(got, log_p[:, index], atol=1e-9), (got, log_p[:, index])
    assert torch.equal(model.decode(unary), poses[scores.argmax(dim=1)])


def _chain_brute(model: ChainCRF, emissions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All tag sequences (N, K) and their scores (B, N) from the linear-chain definition."""
    k = emissions.shape[1]
    seqs = torch.tensor(list(itertools.product(range(model.num_tags), repeat=k)))
    crf = model.crf
    scores = crf.start_transitions[seqs[:, 0]] + crf.end_transitions[seqs[:, -1]]
    scores = scores + sum(crf.transitions[seqs[:, i - 1], seqs[:, i]] for i in range(1, k))
    scores = scores + sum(emissions[:, i, seqs[:, i]] for i in range(k))
    return seqs, scores


def test_partial_nll_marginalises_unlabelled_joints():
    torch.manual_seed(1)
    model = ChainCRF(FORK, height=3, width=4, cell=2).double()
    unary = torch.randn(3, 3, 3, 4, dtype=torch.float64)
    keypoints = torch.tensor(
        [
            [[0.2, 0.4, 2], [3.0, 2.0, 2], [2.6, 1.1, 1]],  # all labelled: cells (0,0), (1,1), (1,0)
            [[0.0, 0.0, 0], [1.0, 2.0, 2], [9.0, 9.0, 2]],  # joint 0 unlabelled, joint 2 off the grid
            [[0.0, 0.0, 0], [0.0, 0.0, 0], [0.0, 0.0, 0]],  # nothing labelled: loss 0
        ],
        dtype=torch.float64,
    )
    loss = model(unary, keypoints)
    with torch.no_grad():
        seqs, scores = _chain_brute(model, model.emissions(unary))
    log_z = torch.logsumexp(scores, dim=1)
    # chain order of FORK is (0, 1, 2): sequence position = joint index; tags = y * 2 + x.
    allowed = [
        (seqs[:, 0] == 0) & (seqs[:, 1] == 3) & (seqs[:, 2] == 1),
        seqs[:, 1] == 2,
        torch.ones(len(seqs), dtype=torch.bool),
    ]
    for b in range(3):
        expected = log_z[b] - torch.logsumexp(scores[b, allowed[b]], dim=0)
        assert torch.allclose(loss[b], expected, atol=1e-9)


def test_nll_gradients_are_finite_and_training_lowers_it():
    torch.manual_seed(2)
    model = ChainCRF(LSP14, height=4, width=4, cell=2)
    unary = torch.randn(2, 14, 4, 4, requires_grad=True)
    keypoints = torch.rand(2, 14, 3) * 3
    keypoints[..., 2] = 2
    keypoints[0, :5, 2] = 0
    optimiser = torch.optim.SGD(list(model.parameters()) + [unary], lr=0.5)
    first = None
    for _ in range(5):
        optimiser.zero_grad()
        loss = model(unary, keypoints).mean()
        loss.backward()
        assert torch.isfinite(unary.grad).all() and torch.isfinite(model.crf.transitions.grad).all()
        optimiser.step()
        first = loss.item() if first is None else first
    assert model(unary, keypoints).mean().item() < first


def test_cell_centres_hand_computed():
    model = ChainCRF(FORK, height=3, width=5, cell=2)
    centres = model.cell_centres(torch.tensor([[0, 0], [2, 1], [1, 0]]))
    assert centres.tolist() == [[0.5, 0.5], [4.0, 2.0], [2.5, 0.5]]


def test_decode_returns_skeleton_order_on_a_tree():
    model = ChainCRF(FORK, height=2, width=2)
    model.init_from_kernel(torch.zeros(3, 3))
    unary = torch.full((1, 3, 2, 2), -5.0)
    unary[0, 0, 1, 0] = unary[0, 1, 0, 1] = unary[0, 2, 1, 1] = 5.0  # (x, y) = (0, 1), (1, 0), (1, 1)
    assert model.decode(unary).tolist() == [[[0, 1], [1, 0], [1, 1]]]


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: ChainCRF(FORK, 0, 4), "height must be an int >= 1"),
        (lambda: ChainCRF(FORK, 4, 4, cell=0), "cell must be an int >= 1"),
        (lambda: kernel_transitions(torch.zeros(2, 2), 3, 3), r"kernel must have shape \(2R\+1, 2R\+1\)"),
        (lambda: kernel_transitions(torch.zeros(3, 3), 0, 3), "height and width must be >= 1"),
        (lambda: ChainCRF(FORK, 2, 2).emissions(torch.zeros(1, 3, 2, 3)), r"unary must have shape \(B, 3, 2, 2\)"),
        (lambda: ChainCRF(FORK, 2, 2)(torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 3)), r"keypoints must have shape \(B, 3, 3\)"),
        (lambda: ChainCRF(FORK, 2, 2)(torch.zeros(1, 3, 2, 2), torch.zeros(2, 3, 3)), "batch size 1"),
        (
            lambda: ChainCRF(FORK, 2, 2).log_prob(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 3, dtype=torch.long)),
            r"cells must have shape \(1, 3, 2\)",
        ),
    ],
)
def test_invalid_arguments_raise_value_error(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_wrong_types_raise_type_error():
    with pytest.raises(TypeError, match="unary must be a torch.Tensor"):
        ChainCRF(FORK, 2, 2).emissions([[0.0]])
    with pytest.raises(TypeError, match="kernel must be a torch.Tensor"):
        kernel_transitions([[0.0]], 2, 2)


def test_chain_baseline_agrees_with_tree_crf_beyond_enumeration():
    """pytorch-crf as the oracle of the tree CRF on a 5-joint chain over a 5 x 6 grid (30^5 poses)."""
    from crfpose.crf import TreeCRF

    torch.manual_seed(3)
    skeleton = Skeleton("chain5", tuple("abcde"), (3, 0, -1, 2, 1))  # 2 -> 3 -> 0 -> 1 -> 4
    kernel = torch.randn(5, 5, dtype=torch.float64)
    unary = torch.randn(2, 5, 5, 6, dtype=torch.float64) * 2
    model = ChainCRF(skeleton, height=5, width=6).double()
    model.init_from_kernel(kernel)
    tree = TreeCRF(unary, kernel.expand(4, 5, 5), skeleton)
    assert torch.equal(model.decode(unary), tree.argmax)
    pose = tree.argmax.clone()
    pose[:, 4] = (pose[:, 1] + torch.tensor([1, -1])).clamp(0, 4)  # a nearby, different pose
    for candidate in (tree.argmax, pose):
        assert torch.allclose(model.log_prob(unary, candidate), tree.log_prob(candidate), atol=1e-8)


def _fine_brute(model: ChainCRF, unary: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every fine-grid pose (S, K, 2) and its score (B, S): unary values plus the chain's transitions
    between the coarse cells the joints fall in, straight from the definition."""
    poses = all_poses(unary.shape[1], model.height, model.width)  # (S, K, 2) (x, y)
    tags = cells_to_tags(poses // model.cell, model.grid_width)[:, model.order]  # (S, K) chain order
    crf = model.crf
    scores = crf.start_transitions[tags[:, 0]] + crf.end_transitions[tags[:, -1]]
    scores = scores + sum(crf.transitions[tags[:, i - 1], tags[:, i]] for i in range(1, tags.shape[1]))
    scores = scores + sum(unary[:, j, poses[:, j, 1], poses[:, j, 0]] for j in range(unary.shape[1]))
    return poses, scores


@pytest.mark.parametrize("cell", [1, 2])
def test_chain_distribution_matches_enumeration_on_the_fine_grid(cell):
    """log Z, marginals and MAP of the fine-grid distribution, and log Z's gradient in the transitions."""
    torch.manual_seed(3)
    model = ChainCRF(PATH, height=3, width=3, cell=cell).double()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    unary = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    poses, scores = _fine_brute(model, unary)
    dist = model.distribution(unary)
    assert torch.allclose(dist.log_partition, torch.logsumexp(scores, dim=1), atol=1e-10)
    probs = torch.softmax(scores, dim=1)  # (B, S)
    for j in range(4):
        index = poses[:, j, 1] * 3 + poses[:, j, 0]  # (S,) the joint's pixel
        expected = torch.zeros(2, 9, dtype=torch.float64).index_add_(1, index, probs)
        assert torch.allclose(dist.marginals[:, j].flatten(1), expected, atol=1e-10)
    assert torch.equal(dist.argmax, poses[scores.argmax(dim=1)])
    dist.log_partition.sum().backward()  # d log Z / d transitions = expected transition counts
    _, again = _fine_brute(model, unary)
    expected = torch.autograd.grad(torch.logsumexp(again, dim=1).sum(), model.crf.transitions)[0]
    assert torch.allclose(model.crf.transitions.grad, expected, atol=1e-10)


def test_chain_marginals_are_differentiable_when_the_unary_is():
    torch.manual_seed(4)
    model = ChainCRF(FORK, height=2, width=3).double()
    unary = torch.randn(1, 3, 2, 3, dtype=torch.float64, requires_grad=True)
    assert model.distribution(unary).marginals.requires_grad
    with torch.no_grad():
        assert not model.distribution(unary).marginals.requires_grad
    torch.autograd.gradcheck(lambda u: model.distribution(u).marginals, (unary,))


def test_fit_sets_transitions_from_consecutive_chain_displacements():
    """Every consecutive pair of chain joints displaced by (+1, 0) cell: the fitted transitions peak
    there, are finite everywhere (the kernel covers the grid) and start/end are 0."""
    model = ChainCRF(PATH, height=4, width=6, cell=1)
    order = chain_order(PATH)  # (1, 2, 0, 3)
    keypoints = torch.zeros(5, 4, 3)
    for i, joint in enumerate(order):
        keypoints[:, joint] = torch.tensor([float(i), 2.0, 2.0])
    model.fit_(keypoints, PATH)
    trans = model.crf.transitions
    assert torch.isfinite(trans).all()
    start = 2 * 6 + 1  # cell (1, 2)
    assert int(trans[start].argmax()) == start + 1  # the next cell along x
    assert not model.crf.start_transitions.any() and not model.crf.end_transitions.any()
    with pytest.raises(ValueError, match="no pose has two consecutive chain joints labelled"):
        model.fit_(torch.zeros(2, 4, 3), PATH)
