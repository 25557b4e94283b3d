"""Benchmark cases: synthetic trajectories, the rank rule and eigenvalue comparison.

The trajectories stand in for the states that ``collect_trajectories`` records from a
scaled network: a trajectory of T = n + 2 states of width d, where each state follows
from the previous one through a ReLU layer s_{t+1} = relu(W s_t + b) with W close to
the identity. The inputs s_0 are non-negative, as ReLU outputs are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

# The full grid: layer widths d, delays h and numbers of trajectories N.
WIDTHS = (8, 64, 256)
DELAYS = (1, 5, 10)
N_TRAJECTORIES = (100, 1000, 3000)
# A smoke run that finishes in about a minute.
QUICK_WIDTHS = (8, 64)
QUICK_DELAYS = (1, 5)
QUICK_N_TRAJECTORIES = (100,)

# n inserted layers give T = n + 2 states per trajectory.
N_INSERTED_LAYERS = 10
N_STATES = N_INSERTED_LAYERS + 2

# The rank of every fit is the numerical rank of X at float32 precision, capped here.
# The cap keeps the largest reduced operators at a size where the three libraries'
# eigenvalues are still comparable, because above it the singular values fall
# below 1e-2 s_1 and the eigenvalues of A_tilde become sensitive to round-off.
RANK_CAP = 100

# The random map s_{t+1} = relu(W s_t + b): W = IDENTITY_WEIGHT I + noise with entry
# standard deviation COUPLING / sqrt(d), and b with entry standard deviation
# BIAS_SCALE. About a third to two fifths of the units are zero in the last state.
IDENTITY_WEIGHT = 0.9
COUPLING = 0.3
BIAS_SCALE = 0.05
SEED = 20240901


@dataclass(frozen=True)
class Case:
    """One benchmark case: layer width d, delay h and number of trajectories N."""

    d: int
    h: int
    N: int

    @property
    def n_features(self) -> int:
        """Rows of X: (h + 1) * d."""
        return (self.h + 1) * self.d

    @property
    def n_pairs(self) -> int:
        """Columns of X: N * (T - h - 1) snapshot pairs, none across trajectories."""
        return self.N * (N_STATES - self.h - 1)

    def label(self) -> str:
        return f"d={self.d} h={self.h} N={self.N}"


def grid(quick: bool) -> list[Case]:
    """Return the cases in the order they run: by width, then N, then delay."""
    widths = QUICK_WIDTHS if quick else WIDTHS
    delays = QUICK_DELAYS if quick else DELAYS
    counts = QUICK_N_TRAJECTORIES if quick else N_TRAJECTORIES
    return [Case(d, h, N) for d in widths for N in counts for h in delays]


def make_trajectories(d: int, n_trajectories: int) -> np.ndarray:
    """Run a seeded random ReLU layer stack on non-negative inputs.

    The map (W, b) depends on d only, and the inputs on d and N, so every N sees the
    same layer stack.

    Returns
    -------
    array of shape (n_trajectories, N_STATES, d), float32
        States s_0, ..., s_{T-1} of each trajectory.
    """
    map_rng = np.random.default_rng([SEED, d])
    W = IDENTITY_WEIGHT * np.eye(d) + COUPLING / np.sqrt(d) * map_rng.standard_normal(
        (d, d)
    )
    b = BIAS_SCALE * map_rng.standard_normal(d)

    input_rng = np.random.default_rng([SEED, d, n_trajectories])
    state = input_rng.uniform(0.0, 1.0, size=(n_trajectories, d))
    trajectories = np.empty((n_trajectories, N_STATES, d), dtype=np.float32)
    trajectories[:, 0] = state
    for t in range(1, N_STATES):
        state = np.maximum(state @ W.T + b, 0.0)
        trajectories[:, t] = state
    return trajectories


def benchmark_rank(X32: np.ndarray) -> tuple[int, int]:
    """Return (r, k): the benchmark rank r = min(k, RANK_CAP) and the numerical rank k.

    k counts the singular values of X above s_1 * max(m, n) * eps_32, the rule of
    ``RankPolicy.tolerance()`` for float32 input. The singular values come from a
    float64 SVD of the float32 matrix.
    """
    m, n = X32.shape
    s = np.linalg.svd(X32.astype(np.float64), compute_uv=False)
    tolerance = s[0] * max(m, n) * float(np.finfo(np.float32).eps)
    numerical_rank = int(np.count_nonzero(s > tolerance))
    return min(numerical_rank, RANK_CAP), numerical_rank


def max_eigenvalue_rel_diff(reference: np.ndarray, other: np.ndarray) -> float:
    """Return max |lambda_i - mu_pi(i)| / max |lambda| over a nearest-pair matching.

    The permutation pi minimises the sum of |lambda_i - mu_pi(i)| (Hungarian
    algorithm), so the result does not depend on the order in which each library
    lists its eigenvalues. Both arrays must have the same length.
    """
    reference = np.asarray(reference, dtype=np.complex128)
    other = np.asarray(other, dtype=np.complex128)
    if reference.shape != other.shape:
        raise ValueError(
            f"eigenvalue arrays differ in length: {reference.shape} and {other.shape}."
        )
    distance = np.abs(reference[:, None] - other[None, :])
    rows, columns = linear_sum_assignment(distance)
    scale = float(np.abs(reference).max())
    return float(distance[rows, columns].max() / scale)


def spurious_pairs_formula(case: Case) -> int:
    """Count the snapshot pairs of the joined series that mix two trajectories.

    Joining the N trajectories into one series of N T states gives N T - h - 1 pairs
    of consecutive delay windows, and N (T - h - 1) of them lie inside one
    trajectory, so (N - 1)(h + 1) cross a boundary.
    """
    return (case.N - 1) * (case.h + 1)


def spurious_pairs_counted(case: Case) -> int:
    """Count the same pairs one by one, as an independent check of the formula.

    The pair that starts at state i of the joined series spans states i to
    i + h + 1, so it mixes trajectories when those two states belong to different
    ones.
    """
    n_series = case.N * N_STATES
    n_pairs = n_series - case.h - 1
    owner = np.arange(n_series) // N_STATES
    return int(np.count_nonzero(owner[:n_pairs] != owner[case.h + 1 :]))


def joined_pairs(case: Case) -> int:
    """Return the number of snapshot pairs in the joined series, N T - h - 1."""
    return case.N * N_STATES - case.h - 1
