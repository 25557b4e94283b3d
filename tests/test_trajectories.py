"""Tests of trajectory collection from a scaled network."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from koopman_hybrid.mlp import MLP
from koopman_hybrid.scaling import ScaledMLP
from koopman_hybrid.trajectories import collect_trajectories


@pytest.fixture
def scaled():
    original = MLP((3, 6, 4, 2), generator=torch.Generator().manual_seed(0))
    return ScaledMLP(original, 1, 3, seed=0)


@pytest.fixture
def inputs():
    return torch.randn(10, 3, generator=torch.Generator().manual_seed(1))


def test_collect_shape(scaled, inputs):
    trajectories = collect_trajectories(scaled, inputs)
    assert trajectories.shape == (10, 5, 6)


def test_collect_dtype(scaled, inputs):
    assert collect_trajectories(scaled, inputs).dtype == np.float32


def test_collect_matches_states(scaled, inputs):
    with torch.no_grad():
        expected = scaled.states(inputs, -0.5).numpy()
    np.testing.assert_array_equal(collect_trajectories(scaled, inputs), expected)


def test_collect_batches_give_same_result(scaled, inputs):
    whole = collect_trajectories(scaled, inputs, batch_size=4096)
    batched = collect_trajectories(scaled, inputs, batch_size=3)
    # Matrix products may sum in another order for another batch size, which moves
    # float32 results by a few units in the last place.
    np.testing.assert_allclose(batched, whole, rtol=1e-5, atol=1e-6)


def test_collect_pads_last_state(scaled, inputs):
    trajectories = collect_trajectories(scaled, inputs, pad_value=-5.0)
    np.testing.assert_array_equal(trajectories[:, -1, 4:], np.full((10, 2), -5.0))


def test_collect_first_state_is_layer_input(scaled, inputs):
    with torch.no_grad():
        expected = scaled.original.run_layers(inputs, 0, 1).numpy()
    np.testing.assert_array_equal(collect_trajectories(scaled, inputs)[:, 0], expected)


def test_collect_accepts_numpy_inputs(scaled, inputs):
    from_numpy = collect_trajectories(scaled, inputs.numpy())
    np.testing.assert_array_equal(from_numpy, collect_trajectories(scaled, inputs))


def test_collect_restores_training_mode(scaled, inputs):
    scaled.train()
    collect_trajectories(scaled, inputs)
    assert scaled.training


@pytest.mark.parametrize("pad_value", [0.0, 0.5, math.nan, math.inf, -math.inf, "x"])
def test_collect_rejects_bad_pad_value(scaled, inputs, pad_value):
    with pytest.raises(ValueError, match="finite negative number"):
        collect_trajectories(scaled, inputs, pad_value=pad_value)


@pytest.mark.parametrize("shape", [(10,), (10, 4), (0, 3), (2, 3, 1)])
def test_collect_rejects_bad_input_shape(scaled, shape):
    with pytest.raises(ValueError, match=r"shape \(n_samples, 3\)"):
        collect_trajectories(scaled, torch.zeros(shape))


def test_collect_rejects_integer_inputs(scaled):
    with pytest.raises(TypeError, match="floating point"):
        collect_trajectories(scaled, torch.zeros(2, 3, dtype=torch.int64))


def test_collect_rejects_plain_mlp(inputs):
    with pytest.raises(TypeError, match="ScaledMLP"):
        collect_trajectories(MLP((3, 6, 4, 2)), inputs)


def test_collect_rejects_zero_batch_size(scaled, inputs):
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        collect_trajectories(scaled, inputs, batch_size=0)
