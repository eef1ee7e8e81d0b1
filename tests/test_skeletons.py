"""Skeleton validation and the built-in kinematic trees."""

import pytest

from crfpose.skeletons import BUILTIN, COCO17, LSP14, MPII16, Skeleton, get_skeleton


def test_coco17_matches_the_coco_category():
    assert COCO17.num_joints == 17 and COCO17.num_edges == 16
    assert COCO17.joints[0] == "nose" and COCO17.root == 0
    assert len(COCO17.links) == 19
    # The category's 1-based "skeleton" from person_keypoints_*.json, made 0-based.
    coco_skeleton = [
        [16, 14],
        [14, 12],
        [17, 15],
        [15, 13],
        [12, 13],
        [6, 12],
        [7, 13],
        [6, 7],
        [6, 8],
        [7, 9],
        [8, 10],
        [9, 11],
        [2, 3],
        [1, 2],
        [1, 3],
        [2, 4],
        [3, 5],
        [4, 6],
        [5, 7],
    ]
    assert [list(link) for link in COCO17.links] == [[a - 1, b - 1] for a, b in coco_skeleton]
    assert COCO17.sigmas[0] == 0.026 and COCO17.sigmas[11] == 0.107 and len(COCO17.sigmas) == 17
    # Arms hang from the shoulders, legs from the hips, hips from the shoulders on their side.
    name = COCO17.joints
    for child, parent in [
        ("left_wrist", "left_elbow"),
        ("right_ankle", "right_knee"),
        ("left_hip", "left_shoulder"),
        ("right_shoulder", "nose"),
        ("left_ear", "nose"),
    ]:
        assert COCO17.parents[name.index(child)] == name.index(parent)


@pytest.mark.parametrize("skeleton", list(BUILTIN.values()), ids=list(BUILTIN))
def test_builtins_are_trees_with_consistent_derived_fields(skeleton):
    k = skeleton.num_joints
    assert [c for _, c in skeleton.edges] == sorted(c for _, c in skeleton.edges)
    assert all(skeleton.parents[c] == p for p, c in skeleton.edges)
    assert skeleton.depth[skeleton.root] == 0
    assert all(skeleton.depth[c] == skeleton.depth[p] + 1 for p, c in skeleton.edges)
    perm = skeleton.flip_permutation
    assert sorted(perm) == list(range(k)) and all(perm[perm[j]] == j for j in range(k))
    for left, right in skeleton.flip_pairs:
        assert skeleton.joints[left].replace("left", "right") == skeleton.joints[right]
    assert get_skeleton(skeleton.name.upper()) is skeleton


def test_mpii_and_lsp_roots():
    assert MPII16.joints[MPII16.root] == "pelvis"
    assert LSP14.joints[LSP14.root] == "neck"
    assert LSP14.parents[LSP14.index("head_top")] == LSP14.index("neck")


def test_links_default_to_edges_and_index_by_name():
    s = Skeleton("t", ["a", "b", "c"], [-1, 0, 1])
    assert s.links == s.edges == ((0, 1), (1, 2))
    assert s.children == ((1,), (2,), ())
    assert s.index("c") == 2
    with pytest.raises(ValueError, match=r"Skeleton 't' has no joint 'd'; joints: \['a', 'b', 'c'\]"):
        s.index("d")


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(joints=[], parents=[]), "joints must name at least one joint, got none"),
        (dict(joints=["a", "a"], parents=[-1, 0]), r"joint names must be unique, repeated: \['a'\]"),
        (dict(joints=["a", "b"], parents=[-1]), r"parents must have one entry per joint \(expected 2\), got 1"),
        (dict(joints=["a", "b"], parents=[-1, 5]), r"parents\[1\] = 5 is not a joint index in \[0, 2\) other than 1"),
        (dict(joints=["a", "b"], parents=[-1, 1]), r"parents\[1\] = 1 is not a joint index"),
        (dict(joints=["a", "b"], parents=[-1, -1]), r"exactly one root \(parent -1\), got 2: \[0, 1\]"),
        (dict(joints=["a", "b", "c"], parents=[-1, 2, 1]), "joint 1 \\('b'\\) never reaches the root: the parents form a cycle"),
        (
            dict(joints=["a", "b"], parents=[-1, 0], flip_pairs=[(0, 2)]),
            r"flip pair \(0, 2\) must be two different joint indices in \[0, 2\)",
        ),
        (dict(joints=["a", "b", "c"], parents=[-1, 0, 0], flip_pairs=[(1, 2), (2, 0)]), "a joint appears in more than one flip pair"),
        (dict(joints=["a", "b"], parents=[-1, 0], sigmas=[0.1]), r"sigmas must have one entry per joint \(expected 2\), got 1"),
        (dict(joints=["a", "b"], parents=[-1, 0], sigmas=[0.1, 0.0]), "sigmas must be positive"),
        (dict(joints=["a", "b"], parents=[-1, 0], links=[(0, 3)]), r"link \(0, 3\) must join joint indices in \[0, 2\)"),
    ],
)
def test_validation_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Skeleton("bad", **kwargs)


def test_unknown_builtin():
    with pytest.raises(ValueError, match=r"unknown skeleton 'h36m'; expected one of \['coco17', 'lsp14', 'mpii16'\]"):
        get_skeleton("h36m")
