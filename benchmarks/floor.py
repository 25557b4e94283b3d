"""The floor: the thin SVD's operation count at this machine's matrix-multiply rate.

Operation counts for a matrix with M >= k rows and columns, as tabulated by Golub and
Van Loan, Matrix Computations, 3rd ed. (Johns Hopkins University Press, 1996),
section 5.4.5 (SVD operation counts, R-SVD column; 1 flop = one floating-point
operation):

- Sigma, U_1 (thin) and V: 6 M k^2 + 20 k^3.
- Sigma, U (full) and V: 4 M^2 k + 22 k^3.

DMD on X of shape (m, n) needs U_r, Sigma_r and V_r, which the thin SVD of X (or of
X^T when m < n) gives, so the floor uses the first count with M = max(m, n) and
k = min(m, n). The Gram route forms the k x k Gram matrix (k^2 M flops when symmetry
is used, 2 k^2 M as a general product) and eigendecomposes it, which costs at least
the 4/3 k^3 of the tridiagonal reduction (same book, section 8.3), so its floor is
k^2 M + 4/3 k^3.
"""

from __future__ import annotations

import time

import numpy as np
import torch

MATMUL_REPEATS = 3


def thin_svd_flops(m: int, n: int) -> float:
    """Return 6 M k^2 + 20 k^3 for the thin R-SVD of an m x n matrix."""
    large, small = max(m, n), min(m, n)
    return 6.0 * large * small**2 + 20.0 * small**3


def full_svd_flops(m: int, n: int) -> float:
    """Return 4 M^2 k + 22 k^3 for the R-SVD with the full U."""
    large, small = max(m, n), min(m, n)
    return 4.0 * large**2 * small + 22.0 * small**3


def gram_flops(m: int, n: int) -> float:
    """Return k^2 M + 4/3 k^3, a lower bound for the Gram route."""
    large, small = max(m, n), min(m, n)
    return float(small) ** 2 * large + 4.0 / 3.0 * float(small) ** 3


def _best_matmul_seconds(left, right) -> float:
    best = float("inf")
    for _ in range(MATMUL_REPEATS):
        started = time.perf_counter()
        left @ right
        best = min(best, time.perf_counter() - started)
    return best


def measure(m: int, n: int) -> dict:
    """Time a float64 (k x M) @ (M x k) product in numpy and torch and derive floors.

    The faster library's rate sets the floor, so the floor is the shorter of the two.
    """
    large, small = max(m, n), min(m, n)
    rng = np.random.default_rng(0)
    left = rng.standard_normal((small, large))
    right = np.ascontiguousarray(left.T)
    flops = 2.0 * small * small * large

    numpy_seconds = _best_matmul_seconds(left, right)
    torch_seconds = _best_matmul_seconds(
        torch.from_numpy(left), torch.from_numpy(right)
    )
    numpy_rate = flops / numpy_seconds
    torch_rate = flops / torch_seconds
    rate = max(numpy_rate, torch_rate)
    return {
        "m": m,
        "n": n,
        "matmul_shape": [small, large, small],
        "numpy_gflops_per_s": numpy_rate / 1e9,
        "torch_gflops_per_s": torch_rate / 1e9,
        "rate_gflops_per_s": rate / 1e9,
        "thin_svd_flops": thin_svd_flops(m, n),
        "full_svd_flops": full_svd_flops(m, n),
        "gram_flops": gram_flops(m, n),
        "thin_svd_floor_seconds": thin_svd_flops(m, n) / rate,
        "gram_floor_seconds": gram_flops(m, n) / rate,
    }
