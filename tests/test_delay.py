"""Tests for the delay embedding, snapshot pairs and trajectory checks."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch

from koopman_hybrid import delay
from koopman_hybrid.delay import check_trajectories, delay_embed, snapshot_pairs


def arange_trajectories() -> np.ndarray:
    """Two trajectories of four states with two features: entries 0..15."""
    return np.arange(16, dtype=np.float64).reshape(2, 4, 2)


def test_delay_embed_arange_layout():
    windows = delay_embed(arange_trajectories(), 1)

    # Window t of trajectory i is [s_t; s_{t+1}], oldest state first.
    expected = np.array(
        [
            [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7]],
            [[8, 9, 10, 11], [10, 11, 12, 13], [12, 13, 14, 15]],
        ],
        dtype=np.float64,
    )
    assert windows.shape == (2, 3, 4)
    np.testing.assert_array_equal(windows, expected)


def test_snapshot_pairs_arange_layout():
    X, Y = snapshot_pairs(arange_trajectories(), 1)

    # Columns: (trajectory 0, t = 0), (0, 1), (1, 0), (1, 1). Y is X one window later
    # inside the same trajectory.
    expected_X = np.array(
        [[0, 2, 8, 10], [1, 3, 9, 11], [2, 4, 10, 12], [3, 5, 11, 13]],
        dtype=np.float64,
    )
    expected_Y = np.array(
        [[2, 4, 10, 12], [3, 5, 11, 13], [4, 6, 12, 14], [5, 7, 13, 15]],
        dtype=np.float64,
    )
    np.testing.assert_array_equal(X, expected_X)
    np.testing.assert_array_equal(Y, expected_Y)


def test_snapshot_pairs_delay_zero_layout():
    X, Y = snapshot_pairs(arange_trajectories(), 0)

    expected_X = np.array([[0, 2, 4, 8, 10, 12], [1, 3, 5, 9, 11, 13]], np.float64)
    expected_Y = np.array([[2, 4, 6, 10, 12, 14], [3, 5, 7, 11, 13, 15]], np.float64)
    np.testing.assert_array_equal(X, expected_X)
    np.testing.assert_array_equal(Y, expected_Y)


def test_snapshot_pairs_constant_row():
    X, Y = snapshot_pairs(arange_trajectories(), 1, constant=True)

    assert X.shape == (5, 4)
    assert Y.shape == (5, 4)
    np.testing.assert_array_equal(X[4], np.ones(4))
    np.testing.assert_array_equal(Y[4], np.ones(4))
    np.testing.assert_array_equal(X[:4], snapshot_pairs(arange_trajectories(), 1)[0])


def test_snapshot_pairs_never_mix_trajectories():
    # Entry (i, t, j) encodes the trajectory i as 1000 * i, so the trajectory of any
    # entry is its value // 1000.
    n_trajectories, n_states, n_features = 5, 7, 3
    i, t, j = np.meshgrid(
        np.arange(n_trajectories),
        np.arange(n_states),
        np.arange(n_features),
        indexing="ij",
    )
    trajectories = (1000 * i + 10 * t + j).astype(np.float64)

    X, Y = snapshot_pairs(trajectories, 2)

    owners = np.concatenate([X, Y]) // 1000
    assert X.shape[1] == n_trajectories * (n_states - 2 - 1)
    np.testing.assert_array_equal(owners.min(axis=0), owners.max(axis=0))


def test_snapshot_pairs_column_order_by_trajectory():
    trajectories = np.arange(5 * 6 * 2, dtype=np.float64).reshape(5, 6, 2)

    X, _ = snapshot_pairs(trajectories, 1)

    # Column k = i * (T - h - 1) + t holds s_t of trajectory i in its first block.
    pairs_per_trajectory = 6 - 1 - 1
    for k in range(X.shape[1]):
        i, t = divmod(k, pairs_per_trajectory)
        np.testing.assert_array_equal(X[:2, k], trajectories[i, t])


@pytest.mark.parametrize(
    ("n_trajectories", "n_states", "n_features", "delay_value"),
    [(1, 2, 1, 0), (3, 5, 2, 3), (2, 12, 4, 10), (4, 6, 3, 1)],
)
def test_delay_embed_inverts_to_trajectory(
    n_trajectories, n_states, n_features, delay_value
):
    rng = np.random.default_rng(0)
    trajectories = rng.standard_normal((n_trajectories, n_states, n_features))

    windows = delay_embed(trajectories, delay_value)

    # The first block of every window and the later blocks of the last window give
    # back every state once.
    first_blocks = windows[:, :, :n_features]
    last_window = windows[:, -1].reshape(n_trajectories, delay_value + 1, n_features)
    recovered = np.concatenate([first_blocks, last_window[:, 1:]], axis=1)
    np.testing.assert_array_equal(recovered, trajectories)


def test_delay_embed_is_view_of_input():
    trajectories = arange_trajectories()

    windows = delay_embed(trajectories, 2)

    assert np.shares_memory(windows, trajectories)


def test_delay_embed_torch_is_view_of_input():
    trajectories = torch.arange(16, dtype=torch.float32).reshape(2, 4, 2)

    windows = delay_embed(trajectories, 2)

    assert windows.untyped_storage().data_ptr() == (
        trajectories.untyped_storage().data_ptr()
    )


def test_snapshot_pairs_torch_matches_numpy():
    trajectories = arange_trajectories()

    X, Y = snapshot_pairs(torch.from_numpy(trajectories), 1, constant=True)
    expected_X, expected_Y = snapshot_pairs(trajectories, 1, constant=True)

    assert isinstance(X, torch.Tensor)
    assert X.dtype == torch.float64
    np.testing.assert_array_equal(X.numpy(), expected_X)
    np.testing.assert_array_equal(Y.numpy(), expected_Y)


def test_snapshot_pairs_keep_dtype():
    trajectories = arange_trajectories().astype(np.float32)

    X, Y = snapshot_pairs(trajectories, 1)

    assert X.dtype == np.float32
    assert Y.dtype == np.float32


def test_snapshot_pairs_non_contiguous_input():
    trajectories = np.asfortranarray(arange_trajectories())

    X, _ = snapshot_pairs(trajectories, 1)

    np.testing.assert_array_equal(X, snapshot_pairs(arange_trajectories(), 1)[0])


def test_snapshot_pairs_longest_delay():
    # T = 4 states (two inserted layers): h = 2 gives two windows, one pair each.
    X, Y = snapshot_pairs(arange_trajectories(), 2)

    assert X.shape == (6, 2)
    np.testing.assert_array_equal(X[:, 0], np.arange(6))
    np.testing.assert_array_equal(Y[:, 0], np.arange(2, 8))


def test_snapshot_pairs_rejects_one_window():
    with pytest.raises(ValueError, match=r"delay=3 leaves 1 delay window") as error:
        snapshot_pairs(arange_trajectories(), 3)

    message = str(error.value)
    assert "T=4" in message
    assert "at most T - 2 = 2" in message
    assert "insert more layers" in message


def test_snapshot_pairs_rejects_no_window():
    with pytest.raises(ValueError, match=r"delay=4 leaves 0 delay window") as error:
        snapshot_pairs(arange_trajectories(), 4)

    message = str(error.value)
    assert "T=4" in message
    assert "Lower the delay" in message
    assert "insert more layers" in message


def test_delay_embed_accepts_one_window():
    windows = delay_embed(arange_trajectories(), 3)

    assert windows.shape == (2, 1, 8)


def test_delay_embed_rejects_no_window():
    with pytest.raises(ValueError, match=r"delay=4 .* T=4 .* at most T - 1 = 3"):
        delay_embed(arange_trajectories(), 4)


@pytest.mark.parametrize("bad_delay", [1.0, True, "1", None])
def test_delay_rejects_non_int(bad_delay):
    with pytest.raises(TypeError, match="delay must be an int"):
        snapshot_pairs(arange_trajectories(), bad_delay)


def test_delay_rejects_negative():
    with pytest.raises(ValueError, match="delay must be >= 0, got -1"):
        delay_embed(arange_trajectories(), -1)


def test_delay_accepts_numpy_integer():
    X, _ = snapshot_pairs(arange_trajectories(), np.int64(1))

    assert X.shape == (4, 4)


def test_snapshot_pairs_rejects_2d_input():
    with pytest.raises(ValueError, match="Add a leading axis"):
        snapshot_pairs(np.zeros((4, 2)), 0)


def test_snapshot_pairs_rejects_list():
    with pytest.raises(TypeError, match="numpy array or a torch tensor"):
        snapshot_pairs([[[1.0], [2.0]]], 0)


def test_snapshot_pairs_rejects_empty():
    with pytest.raises(ValueError, match="must not be empty"):
        snapshot_pairs(np.zeros((0, 4, 2)), 0)


def test_check_trajectories_names_nan_entry():
    trajectories = np.ones((3, 4, 5), dtype=np.float32)
    trajectories[1, 2, 3] = np.nan
    trajectories[2, 0, 0] = np.nan

    with pytest.raises(ValueError, match=r"nan at \(input 1, state 2, unit 3\)"):
        check_trajectories(trajectories)


def test_check_trajectories_names_inf_entry():
    trajectories = torch.ones((3, 4, 5))
    trajectories[0, 3, 1] = -torch.inf

    with pytest.raises(ValueError, match=r"-inf at \(input 0, state 3, unit 1\)"):
        check_trajectories(trajectories)


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_check_trajectories_rejects_all_zero(kind):
    trajectories = np.zeros((3, 4, 5), dtype=np.float32)
    if kind == "torch":
        trajectories = torch.from_numpy(trajectories)

    with pytest.raises(ValueError, match="dead ReLU layer") as error:
        check_trajectories(trajectories)

    assert "another seed" in str(error.value)


def test_check_trajectories_accepts_finite():
    trajectories = np.zeros((3, 4, 5))
    trajectories[2, 3, 4] = -0.5

    assert check_trajectories(trajectories) is None


def test_docstring_examples_run():
    results = doctest.testmod(delay)

    assert results.attempted >= 4
    assert results.failed == 0
