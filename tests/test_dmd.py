"""Tests for DMD and its rank policy against independently known answers."""

from __future__ import annotations

import doctest
import json
import warnings

import numpy as np
import pydmd
import pytest
import torch

from koopman_hybrid import dmd as dmd_module
from koopman_hybrid.delay import snapshot_pairs
from koopman_hybrid.dmd import (
    DMD,
    NotFittedError,
    RankPolicy,
    RankWarning,
    UnstableOperatorWarning,
)

# CUDA joins the device tests only where a GPU is present.
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def simulate(A: np.ndarray, initial_states: np.ndarray, n_states: int) -> np.ndarray:
    """Return trajectories of shape (N, n_states, d) of s_{t+1} = A s_t."""
    states = [np.asarray(initial_states, dtype=np.float64)]
    for _ in range(n_states - 1):
        states.append(states[-1] @ A.T)
    return np.stack(states, axis=1)


def matrix_with_eigenvalues(blocks: list, seed: int) -> np.ndarray:
    """Return P D P^-1 for a real block-diagonal D and a random well-conditioned P.

    A real entry of ``blocks`` is an eigenvalue, and a complex entry a + bi adds the
    block [[a, -b], [b, a]], whose eigenvalues are a +- bi.
    """
    size = sum(1 if np.isreal(value) else 2 for value in blocks)
    D = np.zeros((size, size))
    index = 0
    for value in blocks:
        if np.isreal(value):
            D[index, index] = np.real(value)
            index += 1
        else:
            a, b = value.real, value.imag
            D[index : index + 2, index : index + 2] = [[a, -b], [b, a]]
            index += 2
    rng = np.random.default_rng(seed)
    P = np.eye(size) + 0.3 * rng.standard_normal((size, size))
    return P @ D @ np.linalg.inv(P)


def low_rank_matrix(singular_values, shape: tuple[int, int], seed: int) -> np.ndarray:
    """Return U diag(s) V^T with random orthonormal U and V and the given s."""
    rng = np.random.default_rng(seed)
    r = len(singular_values)
    U, _ = np.linalg.qr(rng.standard_normal((shape[0], r)))
    V, _ = np.linalg.qr(rng.standard_normal((shape[1], r)))
    return U @ np.diag(singular_values) @ V.T


# Known eigenvalues, listed in the documented order: descending modulus, then
# descending real part, then descending imaginary part.
KNOWN_EIGENVALUES = np.array(
    [0.95, 0.6 + 0.3j, 0.6 - 0.3j, 0.2 + 0.5j, 0.2 - 0.5j, -0.4]
)


@pytest.fixture(scope="module")
def known_system() -> tuple[np.ndarray, np.ndarray]:
    """Trajectories of a 6 x 6 system with KNOWN_EIGENVALUES, and the matrix."""
    A = matrix_with_eigenvalues([0.95, 0.6 + 0.3j, 0.2 + 0.5j, -0.4], seed=1)
    rng = np.random.default_rng(2)
    trajectories = simulate(A, rng.standard_normal((20, 6)), n_states=10)
    return trajectories, A


# Known systems -----------------------------------------------------------------


def test_known_eigenvalues_recovered(known_system):
    trajectories, _ = known_system

    model = DMD().fit_trajectories(trajectories, delay=0)

    # Exact data in float64: the eigenvalues pass through one SVD and one eig of a
    # 6 x 6 matrix, so round-off stays far below 1e-10.
    assert model.rank_ == 6
    np.testing.assert_allclose(
        model.eigenvalues_, KNOWN_EIGENVALUES, rtol=0, atol=1e-10
    )


def test_known_operator_recovered(known_system):
    trajectories, A = known_system

    model = DMD().fit_trajectories(trajectories, delay=0)

    np.testing.assert_allclose(model.operator(1), A, rtol=0, atol=1e-10)


def test_modes_are_eigenvectors_of_operator(known_system):
    trajectories, A = known_system

    model = DMD().fit_trajectories(trajectories, delay=0)

    # A Phi = Phi Lambda for exact modes of an exactly linear system.
    residual = A @ model.modes_ - model.modes_ * model.eigenvalues_
    np.testing.assert_allclose(residual, 0, atol=1e-10)


def test_amplitudes_reconstruct_first_snapshot(known_system):
    trajectories, _ = known_system

    model = DMD().fit_trajectories(trajectories, delay=0)

    # Six independent modes span R^6, so modes b = x_0 holds exactly.
    np.testing.assert_allclose(
        model.modes_ @ model.amplitudes_, trajectories[0, 0], rtol=0, atol=1e-10
    )


@pytest.mark.parametrize("exact", [True, False])
def test_modes_unit_norm_fixed_phase(known_system, exact):
    trajectories, _ = known_system

    model = DMD(exact=exact).fit_trajectories(trajectories, delay=0)

    modes = model.modes_
    reference = modes[np.argmax(np.abs(modes), axis=0), np.arange(modes.shape[1])]
    np.testing.assert_allclose(np.linalg.norm(modes, axis=0), 1.0, rtol=1e-12)
    np.testing.assert_allclose(reference.imag, 0.0, atol=1e-12)
    assert np.all(reference.real > 0)


def test_projected_and_exact_modes_agree_on_full_rank(known_system):
    trajectories, _ = known_system

    exact = DMD(exact=True).fit_trajectories(trajectories, delay=0)
    projected = DMD(exact=False).fit_trajectories(trajectories, delay=0)

    # With full rank and Y = A X, span(Y) = span(X), so both mode sets are the
    # eigenvectors of A and agree after the same normalisation.
    np.testing.assert_allclose(exact.modes_, projected.modes_, atol=1e-10)


def test_delay_window_second_order_recurrence():
    # s_{t+2} = 0.4 s_{t+1} + 0.45 s_t has characteristic roots 0.9 and -0.5, so the
    # windows [s_t; s_{t+1}] evolve with those eigenvalues.
    rng = np.random.default_rng(3)
    n_trajectories, n_states = 5, 8
    trajectories = np.zeros((n_trajectories, n_states, 1))
    trajectories[:, :2, 0] = rng.standard_normal((n_trajectories, 2))
    for t in range(2, n_states):
        trajectories[:, t] = (
            0.4 * trajectories[:, t - 1] + 0.45 * trajectories[:, t - 2]
        )

    model = DMD().fit_trajectories(trajectories, delay=1)

    np.testing.assert_allclose(model.eigenvalues_, [0.9, -0.5], rtol=0, atol=1e-10)


def test_constant_observable_fits_affine_map():
    A = np.array([[0.5, 0.1], [0.0, 0.3]])
    offset = np.array([1.0, -2.0])
    rng = np.random.default_rng(4)
    states = [rng.standard_normal((6, 2))]
    for _ in range(5):
        states.append(states[-1] @ A.T + offset)
    trajectories = np.stack(states, axis=1)

    model = DMD().fit_trajectories(trajectories, delay=0, constant=True)

    # On [s; 1] the affine map is the block matrix [[A, offset], [0, 1]].
    expected = np.block([[A, offset[:, None]], [np.zeros((1, 2)), np.ones((1, 1))]])
    np.testing.assert_allclose(model.operator(1), expected, rtol=0, atol=1e-10)


# Separate trajectories -----------------------------------------------------------


@pytest.fixture(scope="module")
def two_trajectories() -> np.ndarray:
    A = np.diag([0.9, 0.5])
    return simulate(A, np.array([[1.0, 0.0], [0.0, 1.0]]), n_states=5)


def test_separate_trajectories_pair_count(two_trajectories):
    model = DMD().fit_trajectories(two_trajectories, delay=0)

    assert model.n_snapshot_pairs_ == 8


def test_separate_trajectories_operator(two_trajectories):
    model = DMD().fit_trajectories(two_trajectories, delay=0)

    # Both trajectories are exact powers of A, so only round-off separates them.
    np.testing.assert_allclose(model.operator(1), np.diag([0.9, 0.5]), atol=1e-12)


def test_separate_trajectories_eigenvalues(two_trajectories):
    model = DMD().fit_trajectories(two_trajectories, delay=0)

    np.testing.assert_allclose(model.eigenvalues_, [0.9, 0.5], rtol=0, atol=1e-12)


def test_joined_series_gives_wrong_eigenvalue(two_trajectories):
    joined = np.concatenate(list(two_trajectories))
    X, Y = joined[:-1].T, joined[1:].T
    least_squares = np.linalg.lstsq(X.T, Y.T, rcond=None)[0].T
    expected = np.sort(np.linalg.eigvals(least_squares).real)[::-1]

    model = DMD().fit(joined.T)

    # The pair that jumps from the end of one trajectory to the start of the other
    # pulls the leading eigenvalue from 0.9 down to about 0.787.
    np.testing.assert_allclose(model.eigenvalues_.real, expected, rtol=1e-10)
    assert abs(model.eigenvalues_[0] - 0.787) < 1e-3
    assert abs(model.eigenvalues_[0] - 0.9) > 0.1


def test_trajectories_keep_input_tolerance():
    trajectories = np.random.default_rng(34).standard_normal((6, 5, 3))

    model = DMD().fit_trajectories(trajectories.astype(np.float32), delay=1)

    # The trajectories are converted to float64 before the snapshot pairs are
    # built, but the tolerance must still use the float32 epsilon: X is 6 x 18, so
    # tau = s_1 * 18 * eps_32.
    expected = model.singular_values_[0] * 18 * np.finfo(np.float32).eps
    assert model.rank_tolerance_ == pytest.approx(expected, rel=1e-12)
    assert model.input_dtype_ == "float32"


def test_trajectories_with_zero_x_rejected():
    # Only the last state is non-zero, so every X column (h = 0) is zero.
    trajectories = np.zeros((3, 4, 2))
    trajectories[:, -1] = 1.0

    with pytest.raises(ValueError, match=r"X \(shape 2 x 9\) is all zero"):
        DMD().fit_trajectories(trajectories, delay=0)


def test_many_trajectories_pair_count():
    rng = np.random.default_rng(5)
    trajectories = rng.standard_normal((3000, 12, 4)).astype(np.float32)

    model = DMD().fit_trajectories(trajectories, delay=2)

    assert model.n_snapshot_pairs_ == 3000 * (12 - 2 - 1)
    assert model.n_features_ == 3 * 4
    assert model.summary()["n_trajectories"] == 3000


# Operator and rollout -----------------------------------------------------------


@pytest.fixture(scope="module")
def triangular_model() -> DMD:
    A = np.array([[0.9, 0.2], [0.0, 0.8]])
    trajectories = simulate(A, np.array([[1.0, 1.0]]), n_states=10)
    return DMD().fit_trajectories(trajectories, delay=0)


def test_rollout_three_steps(triangular_model):
    predictions = triangular_model.predict(np.array([1.0, 1.0]), steps=3)

    # Hand-computed powers of A applied to (1, 1).
    expected = np.array([[1.1, 0.8], [1.15, 0.64], [1.163, 0.512]])
    np.testing.assert_allclose(predictions, expected, rtol=0, atol=1e-10)


def test_rollout_matches_operator_power(triangular_model):
    x = np.array([0.3, -2.0])

    predictions = triangular_model.predict(x, steps=4)

    np.testing.assert_allclose(
        predictions[3], triangular_model.operator(4) @ x, rtol=1e-12
    )


def test_operator_steps_are_powers(triangular_model):
    one_step = triangular_model.operator(1)

    # atol covers the zero entry, which comes out as round-off of about 1e-15.
    np.testing.assert_allclose(
        triangular_model.operator(5),
        np.linalg.matrix_power(one_step, 5),
        rtol=1e-12,
        atol=1e-14,
    )


def test_predict_columns_shape(triangular_model):
    x = np.array([[1.0, 0.0, 2.0], [1.0, 1.0, 0.0]])

    predictions = triangular_model.predict(x, steps=2)

    assert predictions.shape == (2, 2, 3)
    np.testing.assert_allclose(
        predictions[:, :, 0], triangular_model.predict(x[:, 0], steps=2), rtol=1e-14
    )


def test_predict_rejects_wrong_width(triangular_model):
    with pytest.raises(ValueError, match=r"x must have shape \(2,\)"):
        triangular_model.predict(np.ones(3))


@pytest.mark.parametrize("steps", [0, -1])
def test_operator_rejects_bad_steps(triangular_model, steps):
    with pytest.raises(ValueError, match="steps must be >= 1"):
        triangular_model.operator(steps)


def test_operator_rejects_float_steps(triangular_model):
    with pytest.raises(TypeError, match="steps must be an int"):
        triangular_model.predict(np.ones(2), steps=2.0)


def test_low_rank_data_reconstructed():
    rng = np.random.default_rng(6)
    X = low_rank_matrix([5.0, 3.0, 1.0], (8, 30), seed=7)
    A = rng.standard_normal((8, 8))
    Y = A @ X

    model = DMD().fit(X, Y)

    # Y = A X exactly, and Y lies in A span(X), which the exact form keeps.
    assert model.rank_ == 3
    relative_error = np.linalg.norm(model.operator(1) @ X - Y) / np.linalg.norm(Y)
    assert relative_error < 1e-10


def test_exact_form_keeps_state_outside_span():
    # The third row of X is zero, like a padded final state that appears only in Y.
    rng = np.random.default_rng(8)
    X = np.vstack([rng.standard_normal((2, 10)), np.zeros((1, 10))])
    M = np.array([[0.5, 0.1, 0.0], [0.2, 0.4, 0.0], [0.3, -0.2, 0.0]])
    Y = M @ X

    model = DMD().fit(X, Y)

    # The projected form U A_tilde U^T would map every column onto span(X), whose
    # third row is zero, so it could not give the third row of Y.
    np.testing.assert_allclose(model.operator(1) @ X, Y, rtol=0, atol=1e-12)
    np.testing.assert_allclose(model.predict(X[:, 0])[0], Y[:, 0], atol=1e-12)


# Rank policy -----------------------------------------------------------------------


def test_rank_clamped_above_min_dimension():
    X = low_rank_matrix([6.0, 5.0, 4.0, 3.0, 2.0, 1.0], (6, 20), seed=9)

    with pytest.warns(RankWarning, match=r"requested rank 10 exceeds min\(m, n\) = 6"):
        model = DMD(rank=10).fit(X, 0.5 * X)

    assert model.rank_ == 6
    assert len(model.warnings_) == 1
    assert "Using rank 6" in model.warnings_[0]


def test_rank_clamped_to_numerical_rank():
    X = low_rank_matrix([3.0, 2.0, 1.0], (8, 20), seed=10)

    with pytest.warns(RankWarning, match="exceeds the numerical rank"):
        model = DMD(rank=RankPolicy.fixed(5)).fit(X, X)

    assert model.rank_ == 3
    assert model.summary()["warnings"] == model.warnings_


def test_rank_warning_points_at_caller():
    X = low_rank_matrix([3.0, 2.0, 1.0], (8, 20), seed=10)

    with pytest.warns(RankWarning) as record:
        DMD(rank=5).fit(X, X)

    assert record[0].filename == __file__


def test_fixed_rank_below_numerical_rank():
    X = low_rank_matrix([6.0, 5.0, 4.0, 3.0], (8, 20), seed=11)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = DMD(rank=2).fit(X, X)

    assert model.rank_ == 2
    assert model.warnings_ == []


@pytest.mark.parametrize(("fraction", "expected_rank"), [(0.5, 1), (0.9, 2), (0.95, 3)])
def test_energy_rank(fraction, expected_rank):
    # Squared singular values 16, 4, 1, 0.25 (total 21.25): cumulative fractions
    # 0.753, 0.941, 0.988, 1.
    X = low_rank_matrix([4.0, 2.0, 1.0, 0.5], (6, 10), seed=12)

    model = DMD(rank=RankPolicy.energy(fraction)).fit(X, X)

    assert model.rank_ == expected_rank


def test_energy_fraction_one_keeps_numerical_rank():
    X = low_rank_matrix([4.0, 2.0, 1.0, 0.5], (6, 10), seed=12)

    model = DMD(rank="energy:1").fit(X, X)

    assert model.rank_ <= 4


def test_svht_recovers_true_rank():
    rng = np.random.default_rng(13)
    signal = low_rank_matrix([40.0, 35.0, 30.0, 25.0, 20.0], (100, 300), seed=14)
    # The largest noise singular value is about 0.05 * (sqrt(300) + sqrt(100)) = 1.4,
    # far below the smallest signal value 20.
    X = signal + 0.05 * rng.standard_normal((100, 300))

    model = DMD(rank="svht").fit(X, X)

    assert model.rank_ == 5


def test_svht_threshold_formula():
    rng = np.random.default_rng(15)
    X = low_rank_matrix([30.0, 20.0], (40, 90), seed=16)
    X = X + 0.1 * rng.standard_normal((40, 90))
    s = np.linalg.svd(X, compute_uv=False)
    beta = 40 / 90
    omega = 0.56 * beta**3 - 0.95 * beta**2 + 1.82 * beta + 1.43
    expected_rank = int(np.sum(s > omega * np.median(s)))

    model = DMD(rank=RankPolicy.svht()).fit(X, X)

    assert model.rank_ == expected_rank


def test_svht_keeping_none_falls_back_to_one():
    # All singular values of an orthogonal matrix equal 1, below omega(1) * 1 = 2.86.
    Q, _ = np.linalg.qr(np.random.default_rng(17).standard_normal((10, 10)))

    with pytest.warns(RankWarning, match="keeps none. Using rank 1"):
        model = DMD(rank="svht").fit(Q, Q)

    assert model.rank_ == 1
    assert len(model.warnings_) == 1
    assert model.operator(1).shape == (10, 10)


def test_tolerance_drops_exact_zeros():
    X = low_rank_matrix([3.0, 2.0, 1.0], (8, 20), seed=18)

    model = DMD(rank="tolerance").fit(X, X)

    assert model.rank_ == 3
    assert model.singular_values_[3] < model.rank_tolerance_


def test_tolerance_uses_float64_eps():
    X = low_rank_matrix([3.0, 2.0, 1.0], (8, 20), seed=18)

    model = DMD().fit(X, X)

    expected = model.singular_values_[0] * 20 * np.finfo(np.float64).eps
    assert model.rank_tolerance_ == pytest.approx(expected, rel=1e-12)


def test_float32_input_gets_float32_tolerance():
    X = low_rank_matrix([1.0, 0.1, 1e-7], (12, 20), seed=19).astype(np.float32)

    model = DMD().fit(X, X)

    # s_1 * max(m, n) * eps_32 = 20 * 1.19e-7 = 2.4e-6 cuts 1e-7 and the float32
    # round-off, but keeps 0.1.
    expected = model.singular_values_[0] * 20 * np.finfo(np.float32).eps
    assert model.rank_tolerance_ == pytest.approx(expected, rel=1e-12)
    assert model.rank_ == 2
    assert model.eigenvalues_.dtype == np.complex128


def test_float64_copy_of_float32_data_keeps_more():
    X = low_rank_matrix([1.0, 0.1, 1e-7], (12, 20), seed=19).astype(np.float32)

    model = DMD().fit(X.astype(np.float64), X.astype(np.float64))

    # As float64, the float32 round-off counts as signal.
    assert model.rank_ > 2


def test_longdouble_input_gets_float64_tolerance():
    X = low_rank_matrix([3.0, 2.0, 1.0], (8, 20), seed=18).astype(np.longdouble)

    model = DMD().fit(X, X)

    # The arithmetic runs in float64, so a wider input dtype cannot lower eps.
    expected = model.singular_values_[0] * 20 * np.finfo(np.float64).eps
    assert model.rank_tolerance_ == pytest.approx(expected, rel=1e-12)


def test_float16_many_snapshots_fall_back_to_one():
    # max(m, n) * eps_16 = 3000 * 9.8e-4 > 1, so the tolerance exceeds s_1.
    X = np.random.default_rng(29).standard_normal((4, 3000)).astype(np.float16)

    with pytest.warns(RankWarning, match="keeps none. Using rank 1"):
        model = DMD().fit(X, X)

    assert model.rank_ == 1
    assert np.all(np.isfinite(model.operator(1)))


def test_all_zero_snapshots_rejected():
    with pytest.raises(ValueError, match="is all zero"):
        DMD().fit(np.zeros((4, 6)), np.zeros((4, 6)))


def test_all_zero_trajectories_rejected():
    with pytest.raises(ValueError, match="dead ReLU layer"):
        DMD().fit_trajectories(np.zeros((3, 5, 4), dtype=np.float32), delay=1)


def test_nan_trajectory_rejected():
    trajectories = np.ones((3, 5, 4))
    trajectories[2, 1, 3] = np.nan

    with pytest.raises(ValueError, match=r"\(input 2, state 1, unit 3\)"):
        DMD().fit_trajectories(trajectories, delay=0)


def test_nan_snapshot_rejected():
    X = np.ones((4, 6))
    X[1, 4] = np.inf

    with pytest.raises(ValueError, match="X contains inf at row 1, column 4"):
        DMD().fit(X, np.ones((4, 6)))


def test_constant_states_give_eigenvalue_one():
    state = np.array([0.5, -1.0, 2.0, 0.25])
    trajectories = np.tile(state, (3, 5, 1))

    model = DMD().fit_trajectories(trajectories, delay=0)

    assert model.rank_ == 1
    np.testing.assert_allclose(model.eigenvalues_, [1.0], rtol=0, atol=1e-12)
    assert model.n_unstable_ == 0


def test_constant_states_give_finite_results():
    state = np.array([0.5, -1.0, 2.0, 0.25])
    trajectories = np.tile(state, (3, 5, 1))

    model = DMD().fit_trajectories(trajectories, delay=1)

    assert np.all(np.isfinite(model.modes_))
    assert np.all(np.isfinite(model.amplitudes_))
    assert np.all(np.isfinite(model.operator(3)))


# Stability ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def unstable_model() -> DMD:
    A = np.diag([1.2, 0.5])
    trajectories = simulate(A, np.array([[1.0, 1.0], [1.0, -2.0]]), n_states=6)
    return DMD().fit_trajectories(trajectories, delay=0)


def test_unstable_spectral_radius(unstable_model):
    assert unstable_model.spectral_radius_ == pytest.approx(1.2, rel=1e-12)


def test_unstable_count(unstable_model):
    assert unstable_model.n_unstable_ == 1


def test_unstable_multistep_predict_warns(unstable_model):
    with pytest.warns(UnstableOperatorWarning, match=r"spectral radius is 1\.2: 1 "):
        unstable_model.predict(np.array([1.0, 1.0]), steps=3)


def test_unstable_one_step_predict_is_quiet(unstable_model):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prediction = unstable_model.predict(np.array([1.0, 1.0]), steps=1)

    np.testing.assert_allclose(prediction[0], [1.2, 0.5], rtol=1e-12)


def test_summary_is_json_serialisable(unstable_model):
    summary = unstable_model.summary()

    decoded = json.loads(json.dumps(summary))
    assert decoded["rank"] == 2
    assert decoded["rank_policy"] == {"kind": "tolerance"}
    assert decoded["n_unstable"] == 1
    assert decoded["spectral_radius"] == pytest.approx(1.2, rel=1e-12)
    assert decoded["warnings"] == []
    assert decoded["delay"] == 0


# Determinism -------------------------------------------------------------------------


def test_refit_gives_identical_arrays(known_system):
    trajectories, _ = known_system

    first = DMD().fit_trajectories(trajectories, delay=0)
    second = DMD().fit_trajectories(trajectories, delay=0)

    np.testing.assert_array_equal(first.eigenvalues_, second.eigenvalues_)
    np.testing.assert_array_equal(first.modes_, second.modes_)


def test_permuted_columns_keep_order(known_system):
    trajectories, _ = known_system
    X, Y = snapshot_pairs(trajectories, 0)
    permutation = np.random.default_rng(20).permutation(X.shape[1])

    original = DMD().fit(X, Y)
    permuted = DMD().fit(X[:, permutation], Y[:, permutation])

    # Permuting snapshot pairs changes only round-off in the decompositions.
    np.testing.assert_allclose(permuted.eigenvalues_, original.eigenvalues_, atol=1e-12)
    np.testing.assert_allclose(permuted.modes_, original.modes_, atol=1e-10)


def test_equal_moduli_order():
    # Eigenvalues 0.5, -0.5, +-0.5i share one modulus, so the real part and then the
    # imaginary part decide: 0.5, 0.5i, -0.5i, -0.5.
    A = matrix_with_eigenvalues([0.5, -0.5, 0.5j], seed=21)
    rng = np.random.default_rng(22)
    trajectories = simulate(A, rng.standard_normal((8, 4)), n_states=6)

    model = DMD().fit_trajectories(trajectories, delay=0)

    np.testing.assert_allclose(
        model.eigenvalues_, [0.5, 0.5j, -0.5j, -0.5], rtol=0, atol=1e-10
    )


# SVD routes ------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(40, 120), (120, 40)])
def test_gram_matches_direct(shape):
    # Singular values between about 5 and 15, so the Gram matrix has a condition
    # number near 10 and keeps about 14 correct digits.
    rng = np.random.default_rng(23)
    X = rng.standard_normal(shape) + 0.5
    Y = rng.standard_normal(shape)

    direct = DMD(rank=10, svd_method="direct").fit(X, Y)
    gram = DMD(rank=10, svd_method="gram").fit(X, Y)

    assert gram.svd_method_ == "gram"
    np.testing.assert_allclose(
        gram.singular_values_, direct.singular_values_, rtol=1e-9
    )
    np.testing.assert_allclose(gram.eigenvalues_, direct.eigenvalues_, atol=1e-9)
    np.testing.assert_allclose(gram.operator(2), direct.operator(2), atol=1e-9)


def test_gram_rank_of_low_rank_data():
    X = low_rank_matrix([3.0, 2.0, 1.0], (60, 200), seed=24)

    model = DMD(svd_method="gram").fit(X, X)

    assert model.rank_ == 3


@pytest.mark.parametrize(
    ("method", "shape", "expected"),
    [
        ("auto", (16, 1000), "direct"),
        ("auto", (50, 1000), "gram"),
        ("auto", (1000, 50), "gram"),
        ("direct", (600, 600), "direct"),
        ("gram", (20, 30), "gram"),
    ],
)
def test_svd_method_resolution(method, shape, expected):
    assert dmd_module._resolve_svd_method(method, shape) == expected


@pytest.fixture
def small_gram_threshold(monkeypatch):
    """Let svd_method="auto" take the Gram route from 1000 entries on."""
    monkeypatch.setattr(dmd_module, "GRAM_MIN_ENTRIES", 1000)


def test_auto_keeps_accurate_gram(small_gram_threshold):
    X = np.random.default_rng(25).standard_normal((40, 60))

    model = DMD(rank=3).fit(X, X)

    assert model.svd_method_ == "gram"


def test_auto_redoes_gram_when_floor_cuts_rank(small_gram_threshold):
    # The Gram floor sqrt(40 eps_64) = 9.4e-8 hides s_3 = 1e-9, which lies far above
    # the float64 tolerance 60 eps_64 = 1.3e-14.
    X = low_rank_matrix([1.0, 0.5, 1e-9], (40, 60), seed=30)

    gram = DMD(svd_method="gram").fit(X, X)
    auto = DMD().fit(X, X)

    assert gram.rank_ == 2
    assert auto.rank_ == 3
    assert auto.svd_method_ == "direct"


def test_auto_redoes_gram_below_min_ratio(small_gram_threshold):
    # Rank 2 keeps s_2 = 1e-5 s_1, below GRAM_MIN_RATIO = 1e-3, where the squared
    # condition number leaves only about 6 digits in s_2.
    X = low_rank_matrix([1.0, 1e-5, 1e-6], (40, 60), seed=31)

    model = DMD(rank=2).fit(X, X)

    assert model.svd_method_ == "direct"
    np.testing.assert_allclose(model.singular_values_[:3], [1.0, 1e-5, 1e-6], rtol=1e-8)


@pytest.mark.parametrize("size", [2, 5, 150])
def test_tridiagonal_eigen_matches_eigh(size):
    # 150 spans three blocks of REFLECTOR_BLOCK = 64 reflectors.
    rng = np.random.default_rng(32)
    A = rng.standard_normal((size, size + 3))
    G = A @ A.T
    expected_values, expected_vectors = np.linalg.eigh(G)
    r = min(size, 4)

    solver = dmd_module._TridiagonalEigen(np.asfortranarray(G))
    vectors = solver.top_eigenvectors(r)

    # Both solvers are backward stable, so eigenvalues agree to a small multiple of
    # eps ||G||, and eigenvectors to about eps ||G|| / gap, where the gaps between the
    # top eigenvalues of these random G are above 1e-3 ||G||.
    scale = expected_values[-1]
    np.testing.assert_allclose(
        solver.eigenvalues, expected_values[::-1], rtol=0, atol=1e-12 * scale
    )
    # Eigenvectors agree up to sign.
    overlaps = np.abs(np.sum(vectors * expected_vectors[:, ::-1][:, :r], axis=0))
    np.testing.assert_allclose(overlaps, 1.0, rtol=0, atol=1e-10)


def test_tridiagonal_eigen_survives_dstemr_failure(monkeypatch):
    rng = np.random.default_rng(35)
    A = rng.standard_normal((30, 33))
    G = A @ A.T
    expected_vectors = np.linalg.eigh(G)[1][:, ::-1][:, :3]

    def failing_dstemr(*args, **kwargs):
        return 0, None, None, 1

    monkeypatch.setattr(dmd_module.lapack, "dstemr", failing_dstemr)
    vectors = dmd_module._TridiagonalEigen(np.asfortranarray(G)).top_eigenvectors(3)

    overlaps = np.abs(np.sum(vectors * expected_vectors, axis=0))
    np.testing.assert_allclose(overlaps, 1.0, rtol=0, atol=1e-10)


def test_gram_route_keeps_torch_kind():
    rng = np.random.default_rng(33)
    X = rng.standard_normal((40, 120)).astype(np.float32)
    Y = rng.standard_normal((40, 120)).astype(np.float32)

    from_torch = DMD(rank=10, svd_method="gram").fit(
        torch.from_numpy(X), torch.from_numpy(Y)
    )
    from_numpy = DMD(rank=10, svd_method="gram").fit(X, Y)

    assert isinstance(from_torch.eigenvalues_, torch.Tensor)
    assert from_torch.modes_.dtype == torch.complex128
    np.testing.assert_allclose(
        from_torch.eigenvalues_.numpy(), from_numpy.eigenvalues_, rtol=0, atol=1e-14
    )


# Agreement with PyDMD ----------------------------------------------------------------


def test_eigenvalues_match_pydmd():
    rng = np.random.default_rng(26)
    A = matrix_with_eigenvalues([0.9, 0.7 + 0.2j, 0.3, -0.6], seed=27)
    trajectories = simulate(A, rng.standard_normal((4, 5)), n_states=12)
    X, Y = snapshot_pairs(trajectories, 0)
    X = X + 1e-3 * rng.standard_normal(X.shape)
    Y = Y + 1e-3 * rng.standard_normal(Y.shape)

    reference = pydmd.DMD(svd_rank=4, exact=True).fit(X, Y)
    model = DMD(rank=4, exact=True).fit(X, Y)

    # Both truncate the same SVD to rank 4, so only round-off separates them. numpy
    # sorts complex numbers by real part, then imaginary part.
    np.testing.assert_allclose(
        np.sort(model.eigenvalues_), np.sort(reference.eigs), rtol=0, atol=1e-8
    )


# Array kinds and devices -----------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_torch_in_torch_out(known_system, device):
    trajectories, _ = known_system
    tensor = torch.from_numpy(trajectories).to(device=device, dtype=torch.float32)

    model = DMD().fit_trajectories(tensor, delay=0)

    assert isinstance(model.eigenvalues_, torch.Tensor)
    assert model.eigenvalues_.device.type == device
    assert model.eigenvalues_.dtype == torch.complex128
    assert model.modes_.device.type == device
    assert model.singular_values_.dtype == torch.float64
    assert model.operator(2).dtype == torch.float64
    assert model.operator(2).device.type == device


@pytest.mark.parametrize("device", DEVICES)
def test_torch_predict_keeps_kind(known_system, device):
    trajectories, _ = known_system
    model = DMD().fit_trajectories(torch.from_numpy(trajectories).to(device), delay=0)

    prediction = model.predict(torch.ones(6, device=device), steps=2)

    assert isinstance(prediction, torch.Tensor)
    assert prediction.device.type == device
    assert prediction.shape == (2, 6)


def test_torch_matches_numpy(known_system):
    trajectories, _ = known_system

    from_torch = DMD().fit_trajectories(torch.from_numpy(trajectories), delay=0)
    from_numpy = DMD().fit_trajectories(trajectories, delay=0)

    np.testing.assert_allclose(
        from_torch.eigenvalues_.numpy(), from_numpy.eigenvalues_, rtol=1e-14
    )


def test_numpy_in_numpy_out(known_system):
    trajectories, _ = known_system

    model = DMD().fit_trajectories(trajectories.astype(np.float32), delay=0)

    assert isinstance(model.eigenvalues_, np.ndarray)
    assert isinstance(model.modes_, np.ndarray)
    assert isinstance(model.operator(1), np.ndarray)
    assert model.operator(1).dtype == np.float64
    assert isinstance(model.predict(np.ones(6)), np.ndarray)


# Input validation and use before fit ---------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda model: model.operator(1),
        lambda model: model.predict(np.ones(2)),
        lambda model: model.summary(),
    ],
    ids=["operator", "predict", "summary"],
)
def test_use_before_fit_raises(call):
    with pytest.raises(NotFittedError, match=r"Call fit\(X, Y\)"):
        call(DMD())


def test_not_fitted_error_is_runtime_error():
    assert issubclass(NotFittedError, RuntimeError)


def test_fit_single_series_matches_pairs():
    rng = np.random.default_rng(28)
    series = rng.standard_normal((3, 9))

    from_series = DMD().fit(series)
    from_pairs = DMD().fit(series[:, :-1], series[:, 1:])

    np.testing.assert_array_equal(from_series.eigenvalues_, from_pairs.eigenvalues_)


def test_fit_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        DMD().fit(np.ones((3, 4)), np.ones((3, 5)))


def test_fit_rejects_1d():
    with pytest.raises(ValueError, match="must be 2-D"):
        DMD().fit(np.ones(4), np.ones(4))


def test_fit_rejects_mixed_kinds():
    with pytest.raises(TypeError, match="both be numpy arrays or both be torch"):
        DMD().fit(np.ones((3, 4)), torch.ones((3, 4)))


def test_fit_rejects_strings():
    with pytest.raises(TypeError, match="X must be numeric"):
        DMD().fit(np.array([["a", "b"]]), np.array([["a", "b"]]))


def test_dmd_rejects_float_rank():
    with pytest.raises(TypeError, match=r"energy:0\.99"):
        DMD(rank=0.99)


def test_dmd_rejects_unknown_svd_method():
    with pytest.raises(ValueError, match="invalid svd_method 'qr'"):
        DMD(svd_method="qr")


def test_dmd_repr_lists_non_defaults():
    assert repr(DMD(rank="svht", exact=False)) == "DMD(rank='svht', exact=False)"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12", RankPolicy.fixed(12)),
        (" Energy:0.999 ", RankPolicy.energy(0.999)),
        ("svht", RankPolicy.svht()),
        ("tolerance", RankPolicy.tolerance()),
    ],
)
def test_rank_policy_parse(text, expected):
    assert RankPolicy.parse(text) == expected


@pytest.mark.parametrize("text", ["", "0", "-3", "energy:", "energy:2", "12.5", "auto"])
def test_rank_policy_parse_rejects(text):
    with pytest.raises(ValueError):
        RankPolicy.parse(text)


@pytest.mark.parametrize(
    "policy",
    [
        RankPolicy.fixed(7),
        RankPolicy.energy(0.99),
        RankPolicy.svht(),
        RankPolicy.tolerance(),
    ],
)
def test_rank_policy_round_trips(policy):
    assert RankPolicy.from_json(json.loads(json.dumps(policy.to_json()))) == policy
    assert RankPolicy.parse(str(policy)) == policy


def test_rank_policy_requested_rank():
    assert RankPolicy.fixed(7).requested_rank == 7
    assert RankPolicy.svht().requested_rank is None


def test_rank_policy_rejects_bool():
    with pytest.raises(TypeError, match="must be an int"):
        RankPolicy.fixed(True)


def test_docstring_examples_run():
    results = doctest.testmod(dmd_module)

    assert results.attempted >= 3
    assert results.failed == 0
