"""Tests of layer scaling: inserted near-identity layers trained before a frozen layer."""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from koopman_hybrid.mlp import MLP, TrainConfig, accuracy, train_classifier
from koopman_hybrid.scaling import (
    ScaledMLP,
    ScalingConfig,
    recurrence_residual,
    train_scaling,
)

WIDTHS = (2, 10, 8, 6, 2)
N_INSERTED = 3
SCALING = ScalingConfig(n_inserted=N_INSERTED, epochs=30, batch_size=50, lr=2e-3)


def make_xor(n_samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Points in [-1.15, 1.15]^2 at least 0.15 from both axes, class 1 where x*y > 0."""
    generator = torch.Generator().manual_seed(seed)
    points = 2 * torch.rand(n_samples, 2, generator=generator) - 1
    points = points + 0.15 * torch.sign(points)
    labels = (points[:, 0] * points[:, 1] > 0).long()
    return points, labels


@pytest.fixture(scope="module")
def original():
    train_x, train_y = make_xor(600, seed=0)
    config = TrainConfig(epochs=60, batch_size=50, lr=1e-2, weight_decay=1e-4, seed=0)
    model, _ = train_classifier(WIDTHS, train_x, train_y, config, progress=False)
    return model


@pytest.fixture(scope="module", params=[1, 2])
def scaled_run(request, original):
    """Scale hidden layer 1 or 2.

    Returns a copy of the original made before scaling, the original, the scaled
    network, a copy of its initial inserted layers and the training log.
    """
    before = copy.deepcopy(original)
    scaled = ScaledMLP(original, request.param, N_INSERTED, seed=0)
    initial = copy.deepcopy(scaled.inserted)
    train_x, _ = make_xor(600, seed=0)
    log = train_scaling(scaled, train_x, SCALING, progress=False)
    return before, original, scaled, initial, log


# Construction


def test_scaled_freezes_original_parameters(original):
    scaled = ScaledMLP(original, 1, N_INSERTED)
    assert not any(p.requires_grad for p in scaled.original.parameters())


def test_scaled_inserted_parameters_trainable(original):
    scaled = ScaledMLP(original, 1, N_INSERTED)
    assert all(p.requires_grad for p in scaled.inserted.parameters())


def test_scaled_leaves_caller_network_trainable(original):
    ScaledMLP(original, 1, N_INSERTED)
    assert all(p.requires_grad for p in original.parameters())


def test_scaled_inserted_shapes(original):
    scaled = ScaledMLP(original, 2, 4)
    shapes = [tuple(linear.weight.shape) for linear in scaled.inserted]
    assert shapes == [(8, 8)] * 4


def test_scaled_widths(original):
    scaled = ScaledMLP(original, 2, N_INSERTED)
    assert (scaled.d_in, scaled.d_out, scaled.n_inserted) == (8, 6, N_INSERTED)


def test_scaled_without_noise_starts_as_identity(original):
    scaled = ScaledMLP(original, 1, N_INSERTED, init_noise=0.0)
    for linear in scaled.inserted:
        assert torch.equal(linear.weight, torch.eye(10))
        assert torch.equal(linear.bias, torch.zeros(10))


def test_scaled_without_noise_matches_original(original):
    # Identity layers pass non-negative ReLU outputs through unchanged, and a product
    # with an identity matrix is exact in float32.
    scaled = ScaledMLP(original, 1, N_INSERTED, init_noise=0.0)
    x, _ = make_xor(50, seed=3)
    assert torch.equal(scaled(x), original(x))


def test_scaled_init_noise_standard_deviation():
    original = MLP((3, 64, 5, 2))
    scaled = ScaledMLP(original, 1, 10, init_noise=0.5, seed=1)
    noise = torch.stack(
        [linear.weight.detach() - torch.eye(64) for linear in scaled.inserted]
    )
    # 40,960 draws: the sample standard deviation is within 1 % of the true one
    # with overwhelming probability, and 3 % leaves room.
    expected = 0.5 / math.sqrt(64)
    assert float(noise.std()) == pytest.approx(expected, rel=0.03)


def test_scaled_init_repeatable_with_seed(original):
    first = ScaledMLP(original, 1, N_INSERTED, seed=5)
    second = ScaledMLP(original, 1, N_INSERTED, seed=5)
    assert torch.equal(first.inserted[2].weight, second.inserted[2].weight)


def test_scaled_accepts_sequential():
    sequential = nn.Sequential(
        nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)
    )
    scaled = ScaledMLP(sequential, 1, 2, init_noise=0.0)
    x = torch.rand(5, 2)
    assert torch.equal(scaled(x), sequential(x))


@pytest.mark.parametrize(
    "layer, n_inserted, init_noise, error",
    [
        (0, 3, 0.5, ValueError),
        (3, 3, 0.5, ValueError),
        (1, 0, 0.5, ValueError),
        (1, 2.0, 0.5, TypeError),
        (1, 3, -0.1, ValueError),
        (1, 3, math.nan, ValueError),
    ],
)
def test_scaled_rejects_bad_arguments(original, layer, n_inserted, init_noise, error):
    with pytest.raises(error):
        ScaledMLP(original, layer, n_inserted, init_noise=init_noise)


# Forward pass and states


def test_states_shape(original):
    scaled = ScaledMLP(original, 2, N_INSERTED)
    x, _ = make_xor(7, seed=3)
    assert scaled.states(x, -0.5).shape == (7, N_INSERTED + 2, 8)


def test_states_first_is_layer_input(original):
    scaled = ScaledMLP(original, 2, N_INSERTED)
    x, _ = make_xor(7, seed=3)
    assert torch.equal(scaled.states(x, -0.5)[:, 0], original.run_layers(x, 0, 2))


def test_states_follow_inserted_layers(original):
    scaled = ScaledMLP(original, 2, N_INSERTED)
    x, _ = make_xor(7, seed=3)
    states = scaled.states(x, -0.5)
    for index, linear in enumerate(scaled.inserted):
        expected = torch.relu(linear(states[:, index]))
        assert torch.equal(states[:, index + 1], expected), index


def test_states_last_is_layer_output(original):
    scaled = ScaledMLP(original, 2, N_INSERTED)
    x, _ = make_xor(7, seed=3)
    last = scaled.states(x, -0.5)[:, -1]
    assert torch.equal(last[:, :6], scaled.layer_output(x))


def test_states_last_is_padded(original):
    scaled = ScaledMLP(original, 2, N_INSERTED)
    x, _ = make_xor(7, seed=3)
    last = scaled.states(x, -2.0)[:, -1]
    assert torch.equal(last[:, 6:], torch.full((7, 2), -2.0))


def test_layer_output_feeds_rest_of_network(original):
    scaled = ScaledMLP(original, 2, N_INSERTED)
    x, _ = make_xor(7, seed=3)
    rest = original.run_layers(scaled.layer_output(x), 3, 4)
    assert torch.equal(rest, scaled(x))


@pytest.mark.parametrize("pad_value", [0.0, 0.5, math.nan, -math.inf, "low", True])
def test_states_rejects_bad_pad_value(original, pad_value):
    scaled = ScaledMLP(original, 1, N_INSERTED)
    with pytest.raises(ValueError, match="finite negative number"):
        scaled.states(torch.zeros(2, 2), pad_value)


def test_run_inserted_rejects_bad_stop(original):
    scaled = ScaledMLP(original, 1, N_INSERTED)
    with pytest.raises(ValueError, match="stop=4 is out of range"):
        scaled.run_inserted(torch.zeros(2, 10), stop=4)


def test_extra_repr_names_layer(original):
    scaled = ScaledMLP(original, 2, N_INSERTED)
    assert "layer=2, n_inserted=3, d_in=8" in repr(scaled)


# remove_inserted


def test_remove_inserted_returns_mlp(original):
    scaled = ScaledMLP(original, 1, N_INSERTED)
    assert isinstance(scaled.remove_inserted(), MLP)


def test_remove_inserted_same_output(original):
    scaled = ScaledMLP(original, 1, N_INSERTED)
    x, _ = make_xor(50, seed=3)
    assert torch.equal(scaled.remove_inserted()(x), original(x))


def test_remove_inserted_same_tensors(original):
    restored = ScaledMLP(original, 1, N_INSERTED).remove_inserted().state_dict()
    for name, tensor in original.state_dict().items():
        assert torch.equal(restored[name], tensor), name


def test_remove_inserted_trainable(original):
    restored = ScaledMLP(original, 1, N_INSERTED).remove_inserted()
    assert all(p.requires_grad for p in restored.parameters())


# train_scaling


def test_train_scaling_keeps_original_bit_identical(scaled_run):
    before, _, scaled, _, _ = scaled_run
    after = scaled.original.state_dict()
    for name, tensor in before.state_dict().items():
        assert torch.equal(after[name], tensor), name


def test_train_scaling_leaves_caller_network_unchanged(scaled_run):
    before, original, _, _, _ = scaled_run
    for name, tensor in before.state_dict().items():
        assert torch.equal(original.state_dict()[name], tensor), name


def test_train_scaling_changes_inserted_layers(scaled_run):
    _, _, scaled, initial, _ = scaled_run
    for index, linear in enumerate(scaled.inserted):
        assert not torch.equal(linear.weight, initial[index].weight), index


def test_train_scaling_keeps_accuracy(scaled_run):
    _, original, scaled, _, _ = scaled_run
    test_x, test_y = make_xor(2000, seed=1)
    # 0.005 is half a percentage point, 10 of the 2,000 test points.
    difference = accuracy(scaled, test_x, test_y) - accuracy(original, test_x, test_y)
    assert abs(difference) <= 0.005


def test_train_scaling_reduces_loss(scaled_run):
    _, _, _, _, log = scaled_run
    assert log.losses[-1] < log.losses[0]


def test_train_scaling_logs_each_epoch(scaled_run):
    _, _, _, _, log = scaled_run
    assert len(log.losses) == SCALING.epochs


def test_train_scaling_logs_no_smoothness_when_off(scaled_run):
    _, _, _, _, log = scaled_run
    assert log.smoothness_losses == []


def test_train_scaling_repeats_with_same_seed(original):
    train_x, _ = make_xor(200, seed=0)
    config = ScalingConfig(n_inserted=2, epochs=3, batch_size=50)
    first = ScaledMLP(original, 1, 2, seed=0)
    second = ScaledMLP(original, 1, 2, seed=0)
    first_log = train_scaling(first, train_x, config, progress=False)
    second_log = train_scaling(second, train_x, config, progress=False)
    assert first_log.losses == second_log.losses


def test_train_scaling_smoothness_logged(original):
    train_x, _ = make_xor(200, seed=0)
    config = ScalingConfig(n_inserted=2, epochs=4, batch_size=50, smoothness=1.0)
    log = train_scaling(ScaledMLP(original, 1, 2), train_x, config, progress=False)
    assert len(log.smoothness_losses) == 4


def test_train_scaling_smoothness_changes_training(original):
    train_x, _ = make_xor(200, seed=0)
    plain = ScaledMLP(original, 1, 2)
    smooth = ScaledMLP(original, 1, 2)
    config = ScalingConfig(n_inserted=2, epochs=2, batch_size=50)
    train_scaling(plain, train_x, config, progress=False)
    smooth_config = ScalingConfig(
        n_inserted=2, epochs=2, batch_size=50, smoothness=10.0
    )
    train_scaling(smooth, train_x, smooth_config, progress=False)
    assert not torch.equal(plain.inserted[0].weight, smooth.inserted[0].weight)


def test_recurrence_residual_zero_for_affine_recurrence():
    # s_{t+1} = 0.5 s_t - 0.3 s_{t-1} + c holds for every trajectory, so delay 1 fits
    # it exactly; the ridge term leaves a bias far below 1e-8.
    generator = torch.Generator().manual_seed(0)
    states = [torch.randn(40, 3, generator=generator, dtype=torch.float64)]
    states.append(torch.randn(40, 3, generator=generator, dtype=torch.float64))
    c = torch.tensor([0.2, -0.1, 0.4], dtype=torch.float64)
    for _ in range(5):
        states.append(0.5 * states[-1] - 0.3 * states[-2] + c)
    trajectories = torch.stack(states, dim=1)
    assert recurrence_residual(trajectories, 1) < 1e-8


def test_recurrence_residual_matches_least_squares():
    # With delay 0 the fit is the affine least-squares map from s_t to s_{t+1} over
    # all pairs, which numpy solves independently; the ridge changes it by ~1e-6.
    generator = torch.Generator().manual_seed(1)
    trajectories = torch.rand(30, 4, 2, generator=generator, dtype=torch.float64)
    X = trajectories[:, :-1].reshape(-1, 2).numpy()
    Y = trajectories[:, 1:].reshape(-1, 2).numpy()
    X = np.hstack([X, np.ones((len(X), 1))])
    coefficients = np.linalg.lstsq(X, Y, rcond=None)[0]
    expected = np.mean((Y - X @ coefficients) ** 2)
    got = float(recurrence_residual(trajectories, 0))
    assert got == pytest.approx(expected, rel=1e-4)


def test_recurrence_rollout_compounds_errors():
    # Trajectory (2, 4, 8) follows s_{t+1} = 2 s_t, trajectory (1, 2, 5) breaks it in
    # its last step, so no affine map fits all four pairs. The rollout feeds the
    # first prediction back in; numpy's fit and a hand rollout give the expected error.
    trajectories = torch.tensor([[[1.0], [2.0], [5.0]], [[2.0], [4.0], [8.0]]])
    X = np.array([[1.0, 1.0], [2.0, 1.0], [2.0, 1.0], [4.0, 1.0]])
    Y = np.array([2.0, 5.0, 4.0, 8.0])
    a, c = np.linalg.lstsq(X, Y, rcond=None)[0]
    first = a * np.array([1.0, 2.0]) + c
    second = a * first + c
    errors = np.concatenate([first - [2.0, 4.0], second - [5.0, 8.0]])
    got = float(recurrence_residual(trajectories.double(), 0, rollout=True))
    # The ridge term (1e-6 of the mean Gram diagonal) moves the fit by about 1e-6.
    assert got == pytest.approx(np.mean(errors**2), rel=1e-3)


def test_train_scaling_linearity_lowers_recurrence_residual(original):
    train_x, _ = make_xor(300, seed=0)
    config = ScalingConfig(
        n_inserted=3,
        epochs=20,
        batch_size=100,
        linearity_delay=1,
        linearity_rollout=True,
    )
    residuals = []
    for weight in (0.0, 10.0):
        scaled = ScaledMLP(original, 1, 3, seed=0)
        config = dataclasses.replace(config, linearity=weight)
        log = train_scaling(scaled, train_x, config, progress=False)
        with torch.no_grad():
            states = scaled.states(train_x, pad_value=config.pad_value)
        residuals.append(float(recurrence_residual(states, 1, rollout=True)))
    assert len(log.linearity_losses) == config.epochs
    assert residuals[1] < 0.5 * residuals[0]


def test_train_scaling_rejects_n_inserted_mismatch(original):
    train_x, _ = make_xor(20, seed=0)
    with pytest.raises(ValueError, match="config.n_inserted=3"):
        train_scaling(ScaledMLP(original, 1, 2), train_x, SCALING, progress=False)


def test_train_scaling_rejects_wrong_input_width(original):
    with pytest.raises(ValueError, match=r"shape \(n_samples, 2\)"):
        train_scaling(
            ScaledMLP(original, 1, N_INSERTED),
            torch.zeros(5, 3),
            SCALING,
            progress=False,
        )


@pytest.mark.parametrize(
    "changes",
    [
        {"n_inserted": 0},
        {"epochs": 0},
        {"lr": -1.0},
        {"betas": (1.2, 0.9)},
        {"init_noise": -1.0},
        {"smoothness": -0.1},
        {"smoothness": math.inf},
        {"linearity": -1.0},
        {"linearity": 1.0, "n_inserted": 3, "linearity_delay": 4},
        {"pad_value": 0.5},
    ],
)
def test_scaling_config_rejects_bad_values(changes):
    with pytest.raises(ValueError):
        ScalingConfig(**changes)


# Dead units at initialisation


def test_restart_after_dead_start_lowers_noise(original):
    # Noise 50 times the identity scrambles the ten inserted layers so much that
    # some used layer-1 output unit is zero for every input at the first draw.
    scaled = ScaledMLP(original, 1, 10, init_noise=50.0, seed=0)
    config = dataclasses.replace(SCALING, n_inserted=10, epochs=2, max_restarts=2)
    train_x, _ = make_xor(600, seed=0)

    log = train_scaling(scaled, train_x, config, progress=False)

    assert len(log.init_seeds_tried) >= 2
    assert log.dead_units == []
    assert scaled.init_noise < 50.0


def test_last_restart_starts_at_identity(original):
    scaled = ScaledMLP(original, 1, 10, init_noise=50.0, seed=0)
    config = dataclasses.replace(SCALING, n_inserted=10, epochs=1, max_restarts=1)
    train_x, _ = make_xor(600, seed=0)

    log = train_scaling(scaled, train_x, config, progress=False)

    assert log.init_seeds_tried == [0, 1]
    assert scaled.init_noise == 0.0
