"""Tests of the Koopman hybrid and the least-squares baseline on exactly linear toys."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from koopman_hybrid.dmd import DMD, NotFittedError
from koopman_hybrid.hybrid import (
    KoopmanHybrid,
    LeastSquaresLayer,
    fit_least_squares_layer,
    replace_layer,
)
from koopman_hybrid.mlp import MLP
from koopman_hybrid.scaling import ScaledMLP
from koopman_hybrid.trajectories import collect_trajectories

N_INSERTED = 3
DECAY = 0.9

# Results pass through float32 states, a float64 DMD fit and a float32 operator:
# relative errors of a few 1e-7 per step, so 1e-5 leaves a wide margin.
FLOAT32_TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}


def positive_network(widths, seed: int) -> MLP:
    """MLP whose layers before the last have weights and biases in [0.1, 1].

    For positive inputs every preactivation of those layers is positive, so each
    ReLU passes its input through and the layers are affine on the data.
    """
    generator = torch.Generator().manual_seed(seed)
    model = MLP(widths, generator=generator)
    with torch.no_grad():
        for linear in model.layers[:-1]:
            linear.weight.copy_(
                0.1 + 0.9 * torch.rand(linear.weight.shape, generator=generator)
            )
            linear.bias.copy_(
                0.1 + 0.9 * torch.rand(linear.bias.shape, generator=generator)
            )
    return model


def decaying_scaled(original: MLP, layer: int) -> ScaledMLP:
    """Scaled network whose inserted layers multiply by DECAY: s_i = DECAY**i * s_0."""
    scaled = ScaledMLP(original, layer, N_INSERTED, init_noise=0.0)
    with torch.no_grad():
        for linear in scaled.inserted:
            linear.weight.copy_(DECAY * torch.eye(scaled.d_in))
    return scaled


def positive_inputs(n_samples: int, n_features: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 0.5 + torch.rand(n_samples, n_features, generator=generator)


@pytest.fixture
def padded_toy():
    """Layer 1 maps 4 to 3 units, so the last state is padded. The dynamics are affine."""
    original = positive_network((3, 4, 3, 2), seed=0)
    scaled = decaying_scaled(original, 1)
    trajectories = collect_trajectories(scaled, positive_inputs(50, 3, seed=1))
    return scaled, trajectories


@pytest.fixture
def square_toy():
    """Layer 1 is DECAY * I (4 to 4 units, bias 0): every state is DECAY times the last."""
    original = positive_network((3, 4, 4, 2), seed=0)
    with torch.no_grad():
        original.layers[1].weight.copy_(DECAY * torch.eye(4))
        original.layers[1].bias.zero_()
    scaled = decaying_scaled(original, 1)
    trajectories = collect_trajectories(scaled, positive_inputs(50, 3, seed=1))
    return scaled, trajectories


# Exactness on linear toys


def test_hybrid_full_delay_matches_scaled_output(padded_toy):
    scaled, trajectories = padded_toy
    dmd = DMD().fit_trajectories(trajectories, N_INSERTED, constant=True)
    hybrid = KoopmanHybrid(scaled, dmd, N_INSERTED, constant=True)
    x = positive_inputs(20, 3, seed=2)
    with torch.no_grad():
        torch.testing.assert_close(hybrid(x), scaled(x), **FLOAT32_TOLERANCE)


def test_hybrid_full_delay_predicts_unpadded_layer_output(padded_toy):
    scaled, trajectories = padded_toy
    dmd = DMD().fit_trajectories(trajectories, N_INSERTED, constant=True)
    hybrid = KoopmanHybrid(scaled, dmd, N_INSERTED, constant=True)
    x = positive_inputs(20, 3, seed=2)
    with torch.no_grad():
        predicted = hybrid.layer_output(x)
        expected = scaled.layer_output(x)
    torch.testing.assert_close(predicted, expected, **FLOAT32_TOLERANCE)


@pytest.mark.parametrize("delay", range(N_INSERTED + 1))
def test_hybrid_every_delay_matches_linear_dynamics(square_toy, delay):
    scaled, trajectories = square_toy
    dmd = DMD().fit_trajectories(trajectories, delay)
    hybrid = KoopmanHybrid(scaled, dmd, delay)
    x = positive_inputs(20, 3, seed=2)
    with torch.no_grad():
        torch.testing.assert_close(hybrid(x), scaled(x), **FLOAT32_TOLERANCE)


def test_hybrid_reads_last_block(square_toy):
    # s_{n+1} = DECAY**(n + 1) * s_0, while every earlier block of the predicted
    # window holds a smaller power, so only the last block gives this value.
    scaled, trajectories = square_toy
    dmd = DMD().fit_trajectories(trajectories, 1)
    hybrid = KoopmanHybrid(scaled, dmd, 1)
    x = positive_inputs(5, 3, seed=2)
    with torch.no_grad():
        expected = DECAY ** (N_INSERTED + 1) * scaled.layer_input(x)
        torch.testing.assert_close(
            hybrid.layer_output(x), expected, **FLOAT32_TOLERANCE
        )


# Properties and display


@pytest.mark.parametrize("delay, linear_steps", [(0, 4), (1, 3), (3, 1)])
def test_hybrid_layer_counts(square_toy, delay, linear_steps):
    scaled, trajectories = square_toy
    hybrid = KoopmanHybrid(scaled, DMD().fit_trajectories(trajectories, delay), delay)
    assert hybrid.nonlinear_layers_run == delay
    assert hybrid.linear_steps == linear_steps


def test_hybrid_variant(square_toy):
    scaled, trajectories = square_toy
    hybrid = KoopmanHybrid(scaled, DMD().fit_trajectories(trajectories, 2), 2)
    assert hybrid.variant == "delay"


def test_hybrid_operator_buffer(square_toy):
    scaled, trajectories = square_toy
    hybrid = KoopmanHybrid(scaled, DMD().fit_trajectories(trajectories, 2), 2)
    assert hybrid.operator.dtype == torch.float32
    assert hybrid.operator.shape == (12, 12)
    assert "operator" in dict(hybrid.named_buffers())


def test_hybrid_operator_is_dmd_operator(square_toy):
    scaled, trajectories = square_toy
    dmd = DMD().fit_trajectories(trajectories, 2)
    hybrid = KoopmanHybrid(scaled, dmd, 2)
    expected = torch.as_tensor(dmd.operator(2), dtype=torch.float32)
    assert torch.equal(hybrid.operator, expected)


def test_hybrid_repr_names_settings(square_toy):
    scaled, trajectories = square_toy
    dmd = DMD().fit_trajectories(trajectories, 1)
    text = repr(KoopmanHybrid(scaled, dmd, 1))
    expected = (
        f"layer=1, delay=1, rank={dmd.rank_}, nonlinear_layers_run=1, linear_steps=3"
    )
    assert expected in text


# Rejected settings


def test_hybrid_rejects_dmd_of_other_delay(square_toy):
    scaled, trajectories = square_toy
    dmd = DMD().fit_trajectories(trajectories, 1)
    with pytest.raises(
        ValueError, match="fitted with delay 1, but the hybrid uses delay 2"
    ):
        KoopmanHybrid(scaled, dmd, 2)


def test_hybrid_rejects_dmd_of_other_trajectory_length(square_toy):
    scaled, trajectories = square_toy
    longer = ScaledMLP(scaled.original, 1, N_INSERTED + 2, init_noise=0.0)
    dmd = DMD().fit_trajectories(trajectories, 1)
    with pytest.raises(ValueError, match="trajectories of 5 states"):
        KoopmanHybrid(longer, dmd, 1)


def test_hybrid_rejects_dmd_of_other_constant(square_toy):
    scaled, trajectories = square_toy
    dmd = DMD().fit_trajectories(trajectories, 1, constant=True)
    with pytest.raises(ValueError, match="constant=True"):
        KoopmanHybrid(scaled, dmd, 1)


def test_hybrid_rejects_operator_of_other_size(square_toy):
    # A plain fit records no delay, so only the operator's size can show the mismatch.
    scaled, trajectories = square_toy
    states = torch.as_tensor(trajectories[0]).T
    dmd = DMD().fit(states[:, :-1], states[:, 1:])
    with pytest.raises(ValueError, match=r"needs windows of 8 entries"):
        KoopmanHybrid(scaled, dmd, 1)


@pytest.mark.parametrize("delay", [-1, N_INSERTED + 1])
def test_hybrid_rejects_delay_out_of_range(square_toy, delay):
    scaled, trajectories = square_toy
    dmd = DMD().fit_trajectories(trajectories, 1)
    with pytest.raises(ValueError, match=f"delay {delay} is out of range"):
        KoopmanHybrid(scaled, dmd, delay)


def test_hybrid_rejects_unfitted_dmd(square_toy):
    scaled, _ = square_toy
    with pytest.raises(NotFittedError):
        KoopmanHybrid(scaled, DMD(), 1)


def test_hybrid_rejects_plain_mlp(square_toy):
    scaled, trajectories = square_toy
    dmd = DMD().fit_trajectories(trajectories, 1)
    with pytest.raises(TypeError, match="ScaledMLP"):
        KoopmanHybrid(scaled.original, dmd, 1)


# Least-squares baseline and replace_layer


def test_least_squares_recovers_affine_layer():
    # Five inputs give s_0 a full 4-dimensional affine span, so the fit is unique.
    original = positive_network((5, 4, 3, 2), seed=3)
    inputs = positive_inputs(200, 5, seed=4)
    fitted = fit_least_squares_layer(original, 1, inputs)
    # Fitted in float64 on float32 activations, and the data are well conditioned.
    torch.testing.assert_close(
        fitted.weight.detach(), original.layers[1].weight.detach(), **FLOAT32_TOLERANCE
    )
    torch.testing.assert_close(
        fitted.bias.detach(), original.layers[1].bias.detach(), **FLOAT32_TOLERANCE
    )


def test_least_squares_baseline_matches_affine_network():
    # Three inputs span only a 3-dimensional part of s_0's space, so the weights are
    # not unique but the predictions on the data's span are.
    original = positive_network((3, 4, 3, 2), seed=3)
    fitted = fit_least_squares_layer(original, 1, positive_inputs(200, 3, seed=4))
    baseline = replace_layer(original, 1, fitted)
    x = positive_inputs(20, 3, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(baseline(x), original(x), **FLOAT32_TOLERANCE)


def test_least_squares_layer_shapes():
    original = positive_network((5, 4, 3, 2), seed=3)
    fitted = fit_least_squares_layer(original, 1, positive_inputs(20, 5, seed=4))
    assert (fitted.in_features, fitted.out_features) == (4, 3)


def test_least_squares_rejects_wrong_input_width():
    original = positive_network((5, 4, 3, 2), seed=3)
    with pytest.raises(ValueError, match=r"shape \(n_samples, 5\)"):
        fit_least_squares_layer(original, 1, torch.zeros(4, 3))


def test_least_squares_rejects_output_layer():
    original = positive_network((5, 4, 3, 2), seed=3)
    with pytest.raises(ValueError, match="output layer"):
        fit_least_squares_layer(original, 2, torch.zeros(4, 5))


def test_least_squares_layer_rejects_bias_shape():
    with pytest.raises(ValueError, match=r"bias must have shape \(3,\)"):
        LeastSquaresLayer(torch.zeros(3, 4), torch.zeros(4))


def test_replace_layer_with_same_layer_is_identity():
    original = MLP((3, 5, 4, 2), generator=torch.Generator().manual_seed(0))
    same = nn.Sequential(original.layers[1], nn.ReLU())
    x = torch.randn(10, 3, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(replace_layer(original, 1, same)(x), original(x))


def test_replace_layer_adds_no_relu():
    original = MLP((3, 5, 4, 2), generator=torch.Generator().manual_seed(0))
    negative = LeastSquaresLayer(torch.zeros(4, 5), -torch.ones(4))
    x = torch.randn(3, 3)
    with torch.no_grad():
        expected = original.layers[2](-torch.ones(3, 4))
        assert torch.equal(replace_layer(original, 1, negative)(x), expected)


def test_replace_layer_rejects_mismatched_least_squares_layer():
    original = MLP((3, 5, 4, 2))
    wrong = LeastSquaresLayer(torch.zeros(4, 3), torch.zeros(4))
    with pytest.raises(ValueError, match="maps 3 to 4 features"):
        replace_layer(original, 1, wrong)


def test_replace_layer_rejects_non_module():
    with pytest.raises(TypeError, match="nn.Module"):
        replace_layer(MLP((3, 5, 4, 2)), 1, lambda x: x)
