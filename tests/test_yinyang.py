from __future__ import annotations

import math

import numpy as np
import pytest

from koopman_hybrid.yinyang import classify_yinyang, make_yinyang


def reference_class(x: float, y: float) -> int | None:
    """Class of one point by the Yin-Yang rule in scalar form, None for a dot."""
    d_left = math.hypot(x - 0.25, y - 0.5)
    d_right = math.hypot(x - 0.75, y - 0.5)
    if d_left < 0.1 or d_right < 0.1:
        return None
    is_yin = d_right <= 0.1 or 0.1 < d_left <= 0.25 or (y > 0.5 and d_right > 0.25)
    return 0 if is_yin else 1


# Points worked out by hand from the rule. (0.5, 0.9): upper half, 0.47 from the
# right dot, so yin. (0.5, 0.1): lower half, 0.47 from both dots, so yang.
# (0.25, 0.3): lower half, 0.2 from the left dot, so yin. (0.75, 0.7): upper half,
# 0.2 from the right dot, so yang. (0.9, 0.5): on the middle line, 0.15 from the right
# dot, so yang. (0.1, 0.5): 0.15 from the left dot, so yin.
HAND_PICKED = [
    ((0.5, 0.9), 0),
    ((0.5, 0.1), 1),
    ((0.25, 0.3), 0),
    ((0.75, 0.7), 1),
    ((0.9, 0.5), 1),
    ((0.1, 0.5), 0),
]


@pytest.mark.parametrize(("point", "expected"), HAND_PICKED)
def test_classify_hand_picked_points(point, expected):
    assert classify_yinyang(np.array([point]))[0] == expected


@pytest.mark.parametrize("point", [(0.25, 0.5), (0.3, 0.55), (0.75, 0.5), (0.7, 0.45)])
def test_classify_marks_dot_points_outside(point):
    assert classify_yinyang(np.array([point]))[0] == -1


@pytest.mark.parametrize("point", [(0.0, 0.0), (1.0, 1.0), (0.5, 1.0 + 1e-9)])
def test_classify_marks_points_beyond_disc_outside(point):
    assert classify_yinyang(np.array([point]))[0] == -1


def test_classify_rejects_wrong_shape():
    with pytest.raises(ValueError, match="shape"):
        classify_yinyang(np.zeros((4, 3)))


def test_make_yinyang_shapes_and_dtypes():
    points, labels = make_yinyang(100, seed=0)
    assert points.shape == (100, 2)
    assert labels.shape == (100,)
    assert points.dtype == np.float32
    assert labels.dtype == np.int64


def test_make_yinyang_is_deterministic():
    points_a, labels_a = make_yinyang(200, seed=7)
    points_b, labels_b = make_yinyang(200, seed=7)
    np.testing.assert_array_equal(points_a, points_b)
    np.testing.assert_array_equal(labels_a, labels_b)


def test_make_yinyang_seeds_differ():
    points_a, _ = make_yinyang(200, seed=1)
    points_b, _ = make_yinyang(200, seed=2)
    assert not np.array_equal(points_a, points_b)


@pytest.mark.parametrize("n_samples", [2, 10, 1000])
def test_make_yinyang_is_balanced(n_samples):
    _, labels = make_yinyang(n_samples, seed=3)
    assert np.bincount(labels, minlength=2).tolist() == [n_samples // 2] * 2


def test_make_yinyang_points_inside_disc():
    points, _ = make_yinyang(2000, seed=4)
    distance = np.hypot(points[:, 0] - 0.5, points[:, 1] - 0.5)
    assert distance.max() <= 0.5


@pytest.mark.parametrize("dot_centre", [(0.25, 0.5), (0.75, 0.5)])
def test_make_yinyang_points_outside_dots(dot_centre):
    points, _ = make_yinyang(2000, seed=5)
    distance = np.hypot(points[:, 0] - dot_centre[0], points[:, 1] - dot_centre[1])
    assert distance.min() >= 0.1


def test_make_yinyang_labels_follow_rule():
    points, labels = make_yinyang(500, seed=6)
    expected = [reference_class(float(x), float(y)) for x, y in points]
    assert labels.tolist() == expected


def test_make_yinyang_is_shuffled():
    # 100 labels sorted by class would have exactly one change of label.
    _, labels = make_yinyang(100, seed=8)
    assert np.count_nonzero(np.diff(labels)) > 1


@pytest.mark.parametrize("n_samples", [0, 3, -2])
def test_make_yinyang_rejects_bad_count(n_samples):
    with pytest.raises(ValueError, match="n_samples"):
        make_yinyang(n_samples, seed=0)


@pytest.mark.parametrize("n_samples", [10.0, "10", True])
def test_make_yinyang_rejects_non_int_count(n_samples):
    with pytest.raises(TypeError, match="n_samples"):
        make_yinyang(n_samples, seed=0)


def test_make_yinyang_rejects_negative_seed():
    with pytest.raises(ValueError, match="seed"):
        make_yinyang(10, seed=-1)


def test_make_yinyang_accepts_numpy_int():
    points, _ = make_yinyang(np.int64(6), seed=np.int32(0))
    assert points.shape == (6, 2)
