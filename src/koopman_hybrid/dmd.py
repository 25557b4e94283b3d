"""Dynamic mode decomposition (DMD) with an explicit rank policy.

DMD fits a linear map Y ~ A X between snapshot matrices whose columns are snapshot
pairs (x_k, y_k). With the rank-r truncated SVD X ~ U S V^H (written ``U, s, Vh``),
the reduced operator is A_tilde = U^H Y V S^-1, of shape (r, r). Its eigenvalues are
the DMD eigenvalues, and with A_tilde W = W Lambda the exact modes are Y V S^-1 W and
the projected modes are U W.

All arithmetic runs in float64 (complex128 for complex data): in torch on the
input's device, and in scipy's LAPACK for the Gram route on the CPU. Numpy input
gives numpy output, and a torch tensor gives tensors on the same device. Fitted
arrays therefore have dtype float64 or complex128 whatever the input dtype, but the
rank tolerance follows the input's precision.

References
----------
J. H. Tu, C. W. Rowley, D. M. Luchtenburg, S. L. Brunton and J. N. Kutz, "On dynamic
mode decomposition: theory and applications", Journal of Computational Dynamics 1(2),
391-421, 2014 (exact and projected DMD).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from scipy.linalg import blas, lapack

from koopman_hybrid.delay import check_trajectories, snapshot_pairs

__all__ = [
    "DMD",
    "NotFittedError",
    "RankPolicy",
    "RankWarning",
    "UnstableOperatorWarning",
]

# An eigenvalue counts as unstable when |lambda| > 1 + UNSTABLE_TOLERANCE. The margin
# keeps eigenvalues that equal 1 up to round-off (a constant observable, constant
# states) out of the count, and it is far below any growth visible over the few
# dozen steps that a layer replacement rolls out.
UNSTABLE_TOLERANCE = 1e-8

# svd_method="auto" tries the Gram route when X has at least GRAM_MIN_ENTRIES
# entries. Timed with one thread on a shared 2-core machine (torch 2.13 with MKL for
# the SVD, scipy 1.17 with OpenBLAS for the Gram route, rank 20), a direct SVD and
# the Gram route took 1.2 ms and 2.6 ms for 16 x 1000, 15 ms and 7 ms for 88 x 1000,
# 0.28 s and 0.06 s for 128 x 10000, and 1.8 s and 0.14 s for 384 x 6000. The Gram
# route squares the condition number, so "auto" keeps its result only when the
# smallest kept singular value s_r is at least GRAM_MIN_RATIO * s_1. The eigenvalues
# of the Gram matrix carry absolute errors of a few eps_64 * s_1^2, so s_r then keeps
# a relative error near 1e-10 or below. On benchmark data with s_r = 1.5e-4 s_1, the
# Gram route's DMD eigenvalues differed from a direct SVD's by 1e-7 relative.
GRAM_MIN_ENTRIES = 50_000
GRAM_MIN_RATIO = 1e-3

# Householder reflectors of the tridiagonal reduction are applied this many at a
# time, as matrix products (the compact WY form).
REFLECTOR_BLOCK = 64

# Eigenvalues are sorted after rounding to this many digits relative to the spectral
# radius, so round-off differences between machines do not reorder near-ties.
ORDER_DIGITS = 12

# The entry that fixes a vector's phase is the first one whose magnitude, relative to
# the largest, equals the maximum after rounding to this many digits.
PHASE_DIGITS = 10

_FLOAT64_EPS = float(np.finfo(np.float64).eps)
_SVD_METHODS = ("auto", "direct", "gram")


class NotFittedError(RuntimeError):
    """Error raised when a method that needs a fitted DMD runs before ``fit``.

    It subclasses RuntimeError because the call is valid, but the object is not yet in
    the state the call needs.
    """


class RankWarning(UserWarning):
    """Warning that the rank used differs from the rank the policy requested."""


class UnstableOperatorWarning(RuntimeWarning):
    """Warning that a multi-step rollout uses an operator with some |lambda| > 1."""


@dataclass(frozen=True)
class RankPolicy:
    """Rule that picks the truncation rank r from the singular values of X.

    Let X have shape (m, n), singular values s_1 >= s_2 >= ... >= s_p with
    p = min(m, n), and eps the machine epsilon of the input's dtype (float32 data
    gets the float32 epsilon even though the arithmetic is float64, and integer data
    gets the float64 epsilon).

    Numerical rank
        k = the number of s_i > tau_num, with tau_num = s_1 * max(m, n) * eps. With
        the Gram route (see ``DMD``), singular values below s_1 * sqrt(q * eps_64)
        are set to zero and tau_num is at least that floor, where q is the order of
        the Gram matrix and eps_64 the float64 epsilon. Forming the Gram matrix
        squares the condition number, so smaller singular values carry no correct
        digits.

    Policies
        ``fixed(r)``: the integer rank r.
        ``energy(fraction)``: the smallest r with
        s_1^2 + ... + s_r^2 >= fraction * (s_1^2 + ... + s_p^2).
        ``svht()``: the optimal hard threshold of Gavish and Donoho for unknown noise:
        keep s_i > omega(beta) * median(s), with beta = min(m, n) / max(m, n) and
        omega(beta) ~ 0.56 beta^3 - 0.95 beta^2 + 1.82 beta + 1.43.
        ``tolerance()``: r = k, every singular value above the numerical tolerance.

    Every policy is capped at the numerical rank k, because dividing by a singular
    value at round-off level amplifies noise. A rank above k (a fixed rank above
    min(m, n) or above k, or an energy fraction that needs more than k values) is
    clamped to k with a ``RankWarning``, and the message is also recorded in
    ``DMD.warnings_``. Clamping, rather than raising, lets one setting run over
    layers of different widths. When SVHT keeps no singular value, r falls back to 1
    with a recorded ``RankWarning``, so the operator is never empty. An all-zero X
    has no rank and ``DMD.fit`` raises ValueError.

    Parameters
    ----------
    kind : {"fixed", "energy", "svht", "tolerance"}
        The policy. Build instances with the constructors, not directly.
    rank : int or None
        The requested rank, for ``kind="fixed"`` only.
    fraction : float or None
        The energy fraction in (0, 1], for ``kind="energy"`` only.

    References
    ----------
    M. Gavish and D. L. Donoho, "The optimal hard threshold for singular values is
    4/sqrt(3)", IEEE Transactions on Information Theory, 2014. For a square matrix
    omega(1) ~ 2.858, so the threshold is about 2.858 times the median.
    """

    kind: str
    rank: int | None = None
    fraction: float | None = None

    def __post_init__(self) -> None:
        if self.kind == "fixed":
            rank = self.rank
            if isinstance(rank, (bool, np.bool_)) or not isinstance(
                rank, (int, np.integer)
            ):
                raise TypeError(f"a fixed rank must be an int, got {rank!r}.")
            if rank < 1:
                raise ValueError(f"a fixed rank must be >= 1, got {rank}.")
            if self.fraction is not None:
                raise ValueError("a fixed rank policy takes no energy fraction.")
        elif self.kind == "energy":
            fraction = self.fraction
            if isinstance(fraction, (bool, np.bool_)) or not isinstance(
                fraction, (int, float, np.integer, np.floating)
            ):
                raise TypeError(
                    f"the energy fraction must be a float, got {fraction!r}."
                )
            if not 0 < fraction <= 1:
                raise ValueError(
                    f"the energy fraction must be in (0, 1], got {fraction}."
                )
            if self.rank is not None:
                raise ValueError("an energy rank policy takes no integer rank.")
        elif self.kind in ("svht", "tolerance"):
            if self.rank is not None or self.fraction is not None:
                raise ValueError(f"the {self.kind} rank policy takes no parameter.")
        else:
            raise ValueError(
                f"unknown rank policy kind {self.kind!r}. Use RankPolicy.fixed, "
                "RankPolicy.energy, RankPolicy.svht or RankPolicy.tolerance."
            )

    @classmethod
    def fixed(cls, rank: int) -> RankPolicy:
        """Build the policy that keeps ``rank`` singular values (at most k)."""
        return cls("fixed", rank=rank)

    @classmethod
    def energy(cls, fraction: float) -> RankPolicy:
        """Build the policy that keeps a fraction of the squared singular values."""
        if isinstance(fraction, (int, np.integer)) and not isinstance(fraction, bool):
            fraction = float(fraction)
        return cls("energy", fraction=fraction)

    @classmethod
    def svht(cls) -> RankPolicy:
        """Build the Gavish-Donoho optimal hard threshold policy for unknown noise."""
        return cls("svht")

    @classmethod
    def tolerance(cls) -> RankPolicy:
        """Build the policy that keeps every singular value above the tolerance."""
        return cls("tolerance")

    @classmethod
    def parse(cls, text: str) -> RankPolicy:
        """Parse a command-line rank: "12", "energy:0.999", "svht" or "tolerance".

        Raises
        ------
        ValueError
            If the text matches none of the four forms.
        """
        if not isinstance(text, str):
            raise TypeError(f"the rank text must be a str, got {text!r}.")
        cleaned = text.strip().lower()
        accepted = (
            'Accepted forms are an integer such as "12", "energy:0.999", "svht" or '
            '"tolerance"'
        )
        if cleaned in ("svht", "tolerance"):
            return cls(cleaned)
        if cleaned.startswith("energy:"):
            value = cleaned.split(":", 1)[1]
            try:
                fraction = float(value)
            except ValueError:
                raise ValueError(
                    f"invalid energy fraction {value!r} in rank {text!r}. {accepted}."
                ) from None
            return cls.energy(fraction)
        if cleaned.isascii() and cleaned.isdigit():
            return cls.fixed(int(cleaned))
        raise ValueError(f"invalid rank {text!r}. {accepted}.")

    @classmethod
    def from_json(cls, data: dict) -> RankPolicy:
        """Build a policy from the dict that ``to_json`` returns."""
        return cls(data["kind"], rank=data.get("rank"), fraction=data.get("fraction"))

    @property
    def requested_rank(self) -> int | None:
        """The integer rank for a fixed policy, None for the automatic ones."""
        return self.rank if self.kind == "fixed" else None

    def to_json(self) -> dict:
        """Return a JSON-serialisable dict, which ``from_json`` reads back."""
        data: dict = {"kind": self.kind}
        if self.kind == "fixed":
            data["rank"] = int(self.rank)
        if self.kind == "energy":
            data["fraction"] = float(self.fraction)
        return data

    def __str__(self) -> str:
        """Return the text form that ``parse`` accepts."""
        if self.kind == "fixed":
            return str(self.rank)
        if self.kind == "energy":
            return f"energy:{self.fraction}"
        return self.kind


def _as_rank_policy(rank) -> RankPolicy:
    if isinstance(rank, RankPolicy):
        return rank
    if isinstance(rank, str):
        return RankPolicy.parse(rank)
    if isinstance(rank, (int, np.integer)) and not isinstance(rank, (bool, np.bool_)):
        return RankPolicy.fixed(int(rank))
    raise TypeError(
        f"rank must be a RankPolicy, an int or a str, got {rank!r}. For an energy "
        'fraction use RankPolicy.energy(0.99) or "energy:0.99".'
    )


def _svht_omega(beta: float) -> float:
    """Return the Gavish-Donoho polynomial approximation omega(beta)."""
    return 0.56 * beta**3 - 0.95 * beta**2 + 1.82 * beta + 1.43


@dataclass(frozen=True)
class _RankChoice:
    rank: int
    numerical_rank: int
    tolerance: float
    floor_limited: bool
    messages: tuple[str, ...]


def _select_rank(
    s: np.ndarray,
    shape: tuple[int, int],
    policy: RankPolicy,
    eps: float,
    gram_floor: float,
) -> _RankChoice:
    """Apply the rank policy to singular values ``s`` (descending) of X of ``shape``."""
    m, n = shape
    s_max = float(s[0])
    precision_tolerance = s_max * max(m, n) * eps
    tolerance = max(precision_tolerance, gram_floor)
    numerical_rank = int(np.count_nonzero(s > tolerance))
    messages = []
    if numerical_rank == 0:
        # Only a low-precision dtype with many snapshots gets here, because then
        # max(m, n) * eps >= 1.
        messages.append(
            f"the numerical tolerance {tolerance:.3g} (s_1 * max(m, n) * eps, with "
            f"eps = {eps:.3g} of the input dtype) is not below the largest singular "
            f"value {s_max:.3g}, so it keeps none. Using rank 1. Pass the data in a "
            "wider dtype such as float32 for a meaningful numerical rank."
        )
        numerical_rank = 1
        tolerance_note = (
            f"no singular value of X (shape {m} x {n}) exceeds the tolerance "
            f"{tolerance:.3g}, so the numerical rank is taken as 1"
        )
    else:
        tolerance_note = (
            f"the numerical rank of X (shape {m} x {n}) is {numerical_rank}: that "
            f"many singular values exceed the tolerance {tolerance:.3g}"
        )

    if policy.kind == "fixed":
        rank = policy.rank
        if rank > numerical_rank:
            if rank > min(m, n):
                limit = f"exceeds min(m, n) = {min(m, n)}"
            else:
                limit = "exceeds the numerical rank"
            messages.append(
                f"requested rank {rank} {limit}, because {tolerance_note}. "
                f"Using rank {numerical_rank}."
            )
            rank = numerical_rank
    elif policy.kind == "energy":
        cumulative = np.cumsum(s**2)
        needed = policy.fraction * cumulative[-1]
        rank = int(np.searchsorted(cumulative, needed, side="left")) + 1
        rank = min(rank, len(s))
        if rank > numerical_rank:
            messages.append(
                f"energy fraction {policy.fraction} needs rank {rank}, but "
                f"{tolerance_note}. Using rank {numerical_rank}."
            )
            rank = numerical_rank
    elif policy.kind == "svht":
        beta = min(m, n) / max(m, n)
        threshold = _svht_omega(beta) * float(np.median(s))
        rank = int(np.count_nonzero(s > threshold))
        if rank == 0:
            messages.append(
                f"the SVHT threshold {threshold:.3g} (omega(beta={beta:.3g}) times the "
                f"median singular value) exceeds the largest singular value "
                f"{s_max:.3g}, so it keeps none. Using rank 1."
            )
            rank = 1
        elif rank > numerical_rank:
            messages.append(
                f"the SVHT threshold keeps {rank} singular values, but "
                f"{tolerance_note}. Using rank {numerical_rank}."
            )
            rank = numerical_rank
    else:
        rank = numerical_rank

    floor_limited = gram_floor > precision_tolerance
    return _RankChoice(rank, numerical_rank, tolerance, floor_limited, tuple(messages))


def _resolve_svd_method(method: str, shape: tuple[int, int]) -> str:
    if method != "auto":
        return method
    m, n = shape
    return "gram" if m * n >= GRAM_MIN_ENTRIES else "direct"


def _gram_is_accurate(s: np.ndarray, choice: _RankChoice) -> bool:
    """Return False when svd_method="auto" must redo a Gram-route fit with an SVD.

    That is when the smallest kept singular value is below GRAM_MIN_RATIO * s_1, or
    when the Gram floor, not the input's precision, may have cut the rank.
    """
    if s[choice.rank - 1] < GRAM_MIN_RATIO * s[0]:
        return False
    return not (choice.floor_limited and choice.rank == choice.numerical_rank)


def _gram_matrix(A: np.ndarray) -> np.ndarray:
    """Return A A^T in Fortran order, its lower triangle only, with one BLAS syrk."""
    if A.flags.f_contiguous:
        return blas.dsyrk(1.0, A, lower=1)
    return blas.dsyrk(1.0, A.T, trans=1, lower=1)


class _TridiagonalEigen:
    """Eigenvalues of a real symmetric matrix and the eigenvectors of the largest.

    One Householder reduction to a tridiagonal matrix T = Q^T G Q (LAPACK dsytrd)
    serves both. All eigenvalues come from T (dsterf). The eigenvectors of the r
    largest come from T by multiple relatively robust representations (dstemr) and
    are multiplied by Q. This skips the eigenvectors that the rank policy drops. For
    a 2816 x 2816 Gram matrix on one thread, torch 2.13 (MKL) took 2.5 s for the
    eigenvalues alone and 10.3 s for the full eigendecomposition.

    Parameters
    ----------
    G : array of shape (q, q), Fortran order
        Symmetric matrix, of which only the lower triangle is read. It is overwritten.
    """

    def __init__(self, G: np.ndarray) -> None:
        q = G.shape[0]
        lwork = int(lapack.dsytrd_lwork(q, lower=1)[0])
        reflectors, d, e, tau, info = lapack.dsytrd(
            G, lower=1, lwork=lwork, overwrite_a=1
        )
        _check_lapack("dsytrd", info)
        self.reflectors = reflectors
        self.d = d
        self.e = e
        self.tau = tau
        ascending, info = lapack.dsterf(d.copy(), e.copy())
        _check_lapack("dsterf", info)
        self.eigenvalues = ascending[::-1].copy()

    def top_eigenvectors(self, r: int) -> np.ndarray:
        """Return eigenvectors of the r largest eigenvalues, largest first."""
        q = self.d.shape[0]
        # dstemr reads e(1:q-1) and uses e(q) as workspace.
        e_work = np.append(self.e, 0.0)
        found, _, Z, info = lapack.dstemr(self.d, e_work, 2, 0.0, 0.0, q - r + 1, q)
        if info != 0 or found != r:
            # dstemr reports a failure (info > 0) when it cannot split a cluster of
            # eigenvalues. The dense tridiagonal matrix then goes to eigh.
            T = np.diag(self.d) + np.diag(self.e, 1) + np.diag(self.e, -1)
            Z = np.linalg.eigh(T)[1][:, q - r :]
        else:
            Z = Z[:, :r]
        return _apply_reflectors(self.reflectors, self.tau, Z[:, ::-1])


def _check_lapack(name: str, info: int) -> None:
    if info != 0:
        raise np.linalg.LinAlgError(
            f"LAPACK {name} failed with info = {info} on the Gram matrix. Fit with "
            'svd_method="direct" instead.'
        )


def _apply_reflectors(reflectors: np.ndarray, tau: np.ndarray, Z: np.ndarray):
    """Return Q Z for Q = H_0 H_1 ... H_{q-2} as dsytrd (lower) stores it.

    H_j = I - tau_j v_j v_j^T, where v_j is zero above row j + 1, one in row j + 1,
    and reflectors[j + 2:, j] below. A block of reflectors H_start ... H_(stop-1)
    equals I - V T V^T with T upper triangular, built column by column as LAPACK's
    dlarft documents for DIRECT = 'F' and STOREV = 'C', so each block is applied
    with three matrix products.
    """
    result = np.array(Z, order="C")
    n_reflectors = reflectors.shape[0] - 1
    for start in reversed(range(0, n_reflectors, REFLECTOR_BLOCK)):
        stop = min(start + REFLECTOR_BLOCK, n_reflectors)
        size = stop - start
        V = np.tril(reflectors[start + 1 :, start:stop], -1)
        V[np.arange(size), np.arange(size)] = 1.0
        overlaps = V.T @ V
        T = np.zeros((size, size))
        for i in range(size):
            T[i, i] = tau[start + i]
            T[:i, i] = -tau[start + i] * (T[:i, :i] @ overlaps[:i, i])
        rows = result[start + 1 :]
        rows -= V @ (T @ (V.T @ rows))
    return result


class _Decomposition:
    """SVD of X: all singular values at once, the vectors of the top r on request.

    The Gram route eigendecomposes the smaller of X^H X and X X^H and computes the
    other factor only for the r kept singular values. For real data on the CPU it
    computes eigenvectors only for those r (``_TridiagonalEigen``).
    """

    def __init__(self, X: torch.Tensor, method: str) -> None:
        self.X = X
        self.method = method
        m, n = X.shape
        if method == "direct":
            self.U, self.s, self.Vh = torch.linalg.svd(X, full_matrices=False)
            self.floor_factor = 0.0
            return

        self.tall = m >= n
        self.floor_factor = math.sqrt(min(m, n) * _FLOAT64_EPS)
        self.tridiagonal = None
        # scipy's LAPACK wrappers reject the empty off-diagonal of a 1 x 1 matrix.
        if X.device.type == "cpu" and not X.is_complex() and min(m, n) > 1:
            A = X.numpy()
            self.tridiagonal = _TridiagonalEigen(_gram_matrix(A.T if self.tall else A))
            eigenvalues = torch.from_numpy(self.tridiagonal.eigenvalues)
        else:
            gram = X.mH @ X if self.tall else X @ X.mH
            eigenvalues, eigenvectors = torch.linalg.eigh(gram)
            # eigh sorts ascending.
            eigenvalues = eigenvalues.flip(0)
            self.eigenvectors = eigenvectors.flip(1)
        # Round-off can make the smallest eigenvalues negative.
        self.s = eigenvalues.clamp(min=0).sqrt()
        self.s[self.s < self.floor_factor * self.s[0]] = 0

    def _top_eigenvectors(self, r: int) -> torch.Tensor:
        if self.tridiagonal is not None:
            return torch.from_numpy(self.tridiagonal.top_eigenvectors(r))
        return self.eigenvectors[:, :r]

    def truncate(self, r: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return U_r (m, r), s_r (r,) and V_r S_r^-1 (n, r)."""
        s_r = self.s[:r]
        if self.method == "direct":
            return self.U[:, :r], s_r, self.Vh[:r].mH / s_r
        if self.tall:
            V_r = self._top_eigenvectors(r)
            U_r = (self.X @ V_r) / s_r
            return U_r, s_r, V_r / s_r
        U_r = self._top_eigenvectors(r)
        # V_r = X^H U_r S_r^-1, so V_r S_r^-1 = X^H U_r S_r^-2.
        return U_r, s_r, self.X.mH @ (U_r / s_r**2)


def _eigenvalue_order(eigenvalues: torch.Tensor) -> torch.Tensor:
    """Return the permutation that sorts eigenvalues in the documented order."""
    values = eigenvalues.detach().cpu().numpy()
    scale = float(np.abs(values).max())
    if scale == 0:
        scale = 1.0
    modulus = np.round(np.abs(values) / scale, ORDER_DIGITS)
    real = np.round(values.real / scale, ORDER_DIGITS)
    imag = np.round(values.imag / scale, ORDER_DIGITS)
    # lexsort sorts by the last key first. It is stable, so exact ties keep their order.
    order = np.lexsort((-imag, -real, -modulus))
    return torch.from_numpy(order).to(eigenvalues.device)


def _normalising_scales(vectors: torch.Tensor) -> torch.Tensor:
    """Return per-column factors that give unit 2-norm and a fixed phase.

    After scaling, the reference entry of each column is real and positive. The
    reference entry is the first one of maximal magnitude after rounding, so the
    phase does not depend on the eigensolver. Zero columns get the factor 1.
    """
    norms = torch.linalg.vector_norm(vectors, dim=0)
    magnitudes = vectors.abs()
    largest = magnitudes.max(dim=0).values
    safe_largest = torch.where(largest > 0, largest, torch.ones_like(largest))
    rounded = torch.round(magnitudes / safe_largest, decimals=PHASE_DIGITS)
    reference_rows = torch.argmax(rounded, dim=0)
    columns = torch.arange(vectors.shape[1], device=vectors.device)
    reference = vectors[reference_rows, columns]
    nonzero = norms > 0
    phase = torch.where(
        nonzero, reference.conj() / reference.abs().clamp(min=1e-300), 1.0
    )
    return torch.where(nonzero, phase / norms.clamp(min=1e-300), 1.0)


def _multiply_by_complex(matrix: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Multiply a real or complex matrix by a complex one.

    A real matrix is multiplied with the real and imaginary parts separately, which
    takes half the floating-point operations of a complex product.
    """
    if matrix.is_complex():
        return matrix @ other
    return torch.complex(matrix @ other.real, matrix @ other.imag)


def _least_squares(matrix: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Solve min ||matrix c - rhs|| for a matrix that may be rank-deficient."""
    if matrix.device.type == "cpu":
        # gelsy (QR with column pivoting) handles rank-deficient matrices.
        return torch.linalg.lstsq(matrix, rhs, driver="gelsy").solution
    # On CUDA, torch offers only the gels driver, which needs full column rank.
    return torch.linalg.pinv(matrix) @ rhs


def _amplitudes(
    basis: torch.Tensor, coefficients: torch.Tensor, first_snapshot: torch.Tensor
) -> torch.Tensor:
    """Solve modes b = x_0 in the least-squares sense, with modes = basis coefficients.

    With c = coefficients b, the problem becomes min ||basis c - x_0|| followed by the
    square system coefficients b = c. This avoids a least-squares solve on the complex
    (n_features, r) modes, which is an order of magnitude slower.
    """
    reduced = _least_squares(basis, first_snapshot.to(basis.dtype)[:, None])
    reduced = reduced.to(coefficients.dtype)
    try:
        return torch.linalg.solve(coefficients, reduced)[:, 0]
    except torch.linalg.LinAlgError:
        # A_tilde is defective, so its eigenvectors are linearly dependent.
        return (torch.linalg.pinv(coefficients) @ reduced)[:, 0]


def _input_eps(dtype) -> float:
    """Return the machine epsilon of the input's precision.

    Integers get the float64 epsilon, and so do wider floats such as float128,
    because the arithmetic runs in float64.
    """
    if isinstance(dtype, torch.dtype):
        if dtype.is_floating_point or dtype.is_complex:
            return max(float(torch.finfo(dtype).eps), _FLOAT64_EPS)
        return _FLOAT64_EPS
    if np.issubdtype(dtype, np.inexact):
        return max(float(np.finfo(dtype).eps), _FLOAT64_EPS)
    return _FLOAT64_EPS


def _first_nonfinite(matrix: torch.Tensor) -> tuple[int, int] | None:
    finite = torch.isfinite(matrix)
    if bool(finite.all()):
        return None
    row, column = torch.nonzero(~finite)[0].tolist()
    return row, column


def _as_float64(name: str, array) -> tuple[torch.Tensor, float, str]:
    """Convert an array or tensor to a float64 or complex128 tensor on its device.

    Also returns the machine epsilon and the name of the input's dtype. Input that is
    already float64 or complex128 is not copied.
    """
    if isinstance(array, torch.Tensor):
        if array.dtype == torch.bool:
            raise TypeError(f"{name} must be numeric, got dtype torch.bool.")
        eps = _input_eps(array.dtype)
        target = torch.complex128 if array.is_complex() else torch.float64
        tensor = array.detach().to(dtype=target)
        dtype_name = str(array.dtype).removeprefix("torch.")
    else:
        array = np.asarray(array)
        if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.number):
            raise TypeError(f"{name} must be numeric, got dtype {array.dtype}.")
        eps = _input_eps(array.dtype)
        target = np.complex128 if np.iscomplexobj(array) else np.float64
        tensor = torch.from_numpy(np.asarray(array, dtype=target))
        dtype_name = str(array.dtype)
    return tensor, eps, dtype_name


def _to_tensor(name: str, array) -> tuple[torch.Tensor, float, str]:
    """Convert a 2-D array as ``_as_float64`` does, and check that it is 2-D."""
    tensor, eps, dtype_name = _as_float64(name, array)
    if tensor.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D with shape (n_features, n_snapshots), got shape "
            f"{tuple(tensor.shape)}. Snapshots are columns."
        )
    return tensor, eps, dtype_name


def _validated_pairs(X, Y) -> tuple[torch.Tensor, torch.Tensor, float, str]:
    """Check X and Y and convert them to float64 or complex128 tensors.

    Also returns the machine epsilon and the dtype name of X. Y = None splits X, a
    single time series, into consecutive pairs.
    """
    if Y is not None and isinstance(X, torch.Tensor) != isinstance(Y, torch.Tensor):
        raise TypeError(
            "X and Y must both be numpy arrays or both be torch tensors, got "
            f"{type(X).__name__} and {type(Y).__name__}."
        )

    X_tensor, eps, dtype_name = _to_tensor("X", X)
    if Y is None:
        if X_tensor.shape[1] < 2:
            raise ValueError(
                "a single time series X needs at least 2 columns (snapshots) to "
                f"form one snapshot pair, got shape {tuple(X_tensor.shape)}."
            )
        Y_tensor = X_tensor[:, 1:]
        X_tensor = X_tensor[:, :-1]
    else:
        Y_tensor, _, _ = _to_tensor("Y", Y)

    if X_tensor.shape != Y_tensor.shape:
        raise ValueError(
            f"X and Y must have the same shape, got {tuple(X_tensor.shape)} and "
            f"{tuple(Y_tensor.shape)}."
        )
    if X_tensor.device != Y_tensor.device:
        raise ValueError(
            f"X and Y must be on the same device, got {X_tensor.device} and "
            f"{Y_tensor.device}."
        )
    m, n = X_tensor.shape
    if m == 0 or n == 0:
        raise ValueError(f"X must not be empty, got shape {(m, n)}.")

    for name, matrix in (("X", X_tensor), ("Y", Y_tensor)):
        bad = _first_nonfinite(matrix)
        if bad is not None:
            row, column = bad
            raise ValueError(
                f"{name} contains {matrix[row, column].item()} at row {row}, "
                f"column {column}. Remove or repair non-finite snapshots first."
            )
    if X_tensor.is_complex() != Y_tensor.is_complex():
        X_tensor = X_tensor.to(torch.complex128)
        Y_tensor = Y_tensor.to(torch.complex128)
    return X_tensor, Y_tensor, eps, dtype_name


class DMD:
    """Dynamic mode decomposition fitted with an explicit rank policy.

    Parameters
    ----------
    rank : RankPolicy, int or str, default "tolerance"
        How the truncation rank is chosen: an int is ``RankPolicy.fixed``, and a str is
        read by ``RankPolicy.parse``. ``RankPolicy`` documents every policy, the
        numerical tolerance and when the rank is clamped.
    exact : bool, default True
        If True, ``modes_`` are the exact DMD modes Y V S^-1 W, otherwise the
        projected modes U W. The choice sets ``modes_`` and ``amplitudes_`` only.
        ``operator`` and ``predict`` always use the exact-DMD form, because the
        projected form keeps only the part of Y inside span(U).
    svd_method : {"auto", "direct", "gram"}, default "auto"
        "direct" runs a thin SVD of X. "gram" eigendecomposes the smaller of X^H X
        and X X^H. For real data on the CPU it reduces that matrix to tridiagonal
        form once and computes eigenvectors only for the r kept singular values.
        It squares the condition number, so singular values below
        s_1 * sqrt(q * eps_64), with q the order of the Gram matrix, are set to zero
        and count as numerically zero. "auto" takes "gram" when X has at least
        50,000 entries, and redoes the fit with "direct" when the smallest kept
        singular value is below 1e-3 * s_1 or when the Gram floor, not the input's
        precision, may have cut the rank, so the kept singular values keep about 10
        significant digits. Timed with one thread (torch 2.13 with MKL for "direct",
        scipy 1.17 with OpenBLAS for "gram") at rank 20 on a shared 2-core machine,
        "direct" and "gram" took 0.28 s and 0.06 s for 128 x 10000, 1.1 s and
        0.28 s for 1000 x 1000, and 95 s and 4.0 s for 1536 x 18000.

    Attributes
    ----------
    rank_ : int
        Truncation rank r used by the fit.
    singular_values_ : array of shape (min(m, n),)
        All singular values of X, descending (float64).
    rank_tolerance_ : float
        The numerical tolerance tau_num of ``RankPolicy``.
    svd_method_ : str
        "direct" or "gram", as resolved from ``svd_method``.
    eigenvalues_ : array of shape (r,)
        DMD eigenvalues (complex128), sorted by descending modulus, then descending
        real part, then descending imaginary part. The sort compares the values
        rounded to 12 digits relative to the spectral radius, so round-off does not
        reorder near-ties. A conjugate pair therefore lists +imag first.
    modes_ : array of shape (n_features, r)
        DMD modes in the order of ``eigenvalues_`` (complex128). Each column has unit
        2-norm and its largest entry (the first of equal ones) is real and positive.
        An exact mode of a zero eigenvalue can be the zero vector.
    amplitudes_ : array of shape (r,)
        Least-squares solution b of modes_ b = x_0, where x_0 is the first column of X.
        It is inaccurate when A_tilde is defective or nearly so, because the modes are
        then nearly linearly dependent.
    spectral_radius_ : float
        max |eigenvalues_|.
    n_unstable_ : int
        Number of eigenvalues with |lambda| > 1 + 1e-8 (``UNSTABLE_TOLERANCE``).
    warnings_ : list of str
        Messages of the ``RankWarning`` warnings issued by the fit: a clamped rank or
        the fallback to rank 1. Instability is reported by ``spectral_radius_`` and
        ``n_unstable_``, and ``predict`` warns about it.
    n_features_ : int
        Rows m of X.
    n_snapshot_pairs_ : int
        Columns n of X.

    Notes
    -----
    With X ~ U_r S_r V_r^H, B = Y V_r S_r^-1 and A_tilde = U_r^H B, the k-step
    operator is B A_tilde^(k-1) U_r^H. For k = 1 this is Y X^+ restricted to the
    rank-r subspace of X. Unlike U_r A_tilde^k U_r^H, it keeps the components of Y
    outside span(X), such as a padded final state that never appears in X.

    Examples
    --------
    >>> import numpy as np
    >>> A = np.array([[0.9, 0.2], [0.0, 0.8]])
    >>> X = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> dmd = DMD().fit(X, A @ X)
    >>> dmd.eigenvalues_.real.round(6)
    array([0.9, 0.8])
    >>> dmd.predict(np.array([1.0, 1.0]), steps=2).round(6)
    array([[1.1 , 0.8 ],
           [1.15, 0.64]])
    """

    def __init__(self, rank="tolerance", exact: bool = True, svd_method: str = "auto"):
        if not isinstance(exact, (bool, np.bool_)):
            raise TypeError(f"exact must be a bool, got {exact!r}.")
        if svd_method not in _SVD_METHODS:
            raise ValueError(
                f"invalid svd_method {svd_method!r}. Use one of "
                f"{', '.join(_SVD_METHODS)}."
            )
        self.rank = _as_rank_policy(rank)
        self.exact = bool(exact)
        self.svd_method = svd_method
        self._fitted = False

    def __repr__(self) -> str:
        arguments = []
        if self.rank != RankPolicy.tolerance():
            arguments.append(f"rank={str(self.rank)!r}")
        if not self.exact:
            arguments.append("exact=False")
        if self.svd_method != "auto":
            arguments.append(f"svd_method={self.svd_method!r}")
        return f"DMD({', '.join(arguments)})"

    def fit(self, X, Y=None) -> DMD:
        """Fit the DMD operator to snapshot pairs.

        Parameters
        ----------
        X : array or tensor of shape (n_features, n_snapshots)
            Snapshots x_k as columns. Numpy arrays and torch tensors on any device are
            accepted, in any real or complex numeric dtype.
        Y : array or tensor of shape (n_features, n_snapshots), optional
            The snapshots y_k that follow x_k, of the same kind as X. If None, X is one
            time series and the pairs are its consecutive columns.

        Returns
        -------
        DMD
            self, fitted.

        Raises
        ------
        TypeError
            If X or Y is not numeric, or one is a tensor and the other is not.
        ValueError
            If X or Y is not 2-D, the shapes differ, there is no snapshot pair, an entry
            is NaN or Inf, the devices differ, or X is all zero.
        """
        X_tensor, Y_tensor, eps, dtype_name = _validated_pairs(X, Y)
        output_numpy = not isinstance(X, torch.Tensor)
        return self._fit_tensors(
            X_tensor, Y_tensor, eps, dtype_name, output_numpy, stacklevel=3
        )

    def fit_trajectories(self, trajectories, delay: int, constant: bool = False) -> DMD:
        """Fit the DMD operator to the snapshot pairs of many separate trajectories.

        The trajectories are checked with ``delay.check_trajectories``, converted to
        float64 once, and turned into snapshot pairs with ``delay.snapshot_pairs``, so
        no pair crosses two trajectories and X and Y are each built once. The rank
        tolerance still follows the precision of the trajectories' dtype.

        Parameters
        ----------
        trajectories : array or tensor of shape (n_trajectories, n_states, n_features)
            States of each trajectory.
        delay : int
            Delay h, from 0 to n_states - 2. The fitted operator acts on delay
            windows of (h + 1) * n_features entries, oldest state first.
        constant : bool, default False
            If True, a row of ones is appended to every window, so the operator can
            represent an affine map. It then acts on (h + 1) * n_features + 1 entries.

        Returns
        -------
        DMD
            self, fitted.

        Raises
        ------
        ValueError
            As ``delay.check_trajectories`` and ``delay.snapshot_pairs`` describe.
        """
        check_trajectories(trajectories)
        # Converting the trajectories, not the snapshot matrices, to float64 builds X
        # and Y once each, directly in float64.
        states, eps, dtype_name = _as_float64("trajectories", trajectories)
        X, Y = snapshot_pairs(states, delay, constant=constant)
        del states
        output_numpy = not isinstance(trajectories, torch.Tensor)
        self._fit_tensors(X, Y, eps, dtype_name, output_numpy, stacklevel=3)
        self.delay_ = int(delay)
        self.constant_ = bool(constant)
        self.n_trajectories_ = int(trajectories.shape[0])
        self.n_states_ = int(trajectories.shape[1])
        return self

    def _decompose(
        self, X: torch.Tensor, method: str, eps: float
    ) -> tuple[_Decomposition, _RankChoice]:
        m, n = X.shape
        decomposition = _Decomposition(X, method)
        s_all = decomposition.s.cpu().numpy()
        gram_floor = decomposition.floor_factor * float(s_all[0])
        choice = _select_rank(s_all, (m, n), self.rank, eps, gram_floor)
        return decomposition, choice

    def _fit_tensors(
        self,
        X_tensor: torch.Tensor,
        Y_tensor: torch.Tensor,
        eps: float,
        dtype_name: str,
        output_numpy: bool,
        stacklevel: int,
    ) -> DMD:
        m, n = X_tensor.shape
        if not bool(X_tensor.any()):
            raise ValueError(
                f"X (shape {m} x {n}) is all zero, so it has no rank and DMD has "
                "nothing to fit. Check that the snapshots are not dead activations."
            )

        # Decompose X and choose the rank from all its singular values. "auto"
        # redoes a Gram-route fit with a direct SVD when the Gram matrix's precision
        # may have changed the result.
        method = _resolve_svd_method(self.svd_method, (m, n))
        decomposition, choice = self._decompose(X_tensor, method, eps)
        s_all = decomposition.s.cpu().numpy()
        if (
            self.svd_method == "auto"
            and method == "gram"
            and not _gram_is_accurate(s_all, choice)
        ):
            method = "direct"
            decomposition, choice = self._decompose(X_tensor, method, eps)
        for message in choice.messages:
            warnings.warn(message, RankWarning, stacklevel=stacklevel)
        r = choice.rank

        # Reduced operator A_tilde = U^H Y V S^-1 = U^H B.
        U_r, _, V_over_s = decomposition.truncate(r)
        B = Y_tensor @ V_over_s
        A_tilde = U_r.mH @ B

        # Eigenvalues in the documented order, eigenvectors and modes to match.
        eigenvalues, eigenvectors = torch.linalg.eig(A_tilde)
        order = _eigenvalue_order(eigenvalues)
        eigenvalues = eigenvalues[order]
        eigenvectors = eigenvectors[:, order]
        basis = B if self.exact else U_r
        raw_modes = _multiply_by_complex(basis, eigenvectors)
        scales = _normalising_scales(raw_modes)
        modes = raw_modes * scales

        # Amplitudes b: least-squares solution of modes b = x_0.
        amplitudes = _amplitudes(basis, eigenvectors * scales, X_tensor[:, 0])

        moduli = eigenvalues.abs()
        self._output_numpy = output_numpy
        self._B = B
        self._U_r = U_r
        self._A_tilde = A_tilde
        self.rank_ = int(r)
        self.singular_values_ = self._output(decomposition.s)
        self.rank_tolerance_ = float(choice.tolerance)
        self.svd_method_ = method
        self.eigenvalues_ = self._output(eigenvalues)
        self.modes_ = self._output(modes)
        self.amplitudes_ = self._output(amplitudes)
        self.spectral_radius_ = float(moduli.max())
        self.n_unstable_ = int((moduli > 1 + UNSTABLE_TOLERANCE).sum())
        self.warnings_ = list(choice.messages)
        self.n_features_ = int(m)
        self.n_snapshot_pairs_ = int(n)
        self.input_dtype_ = dtype_name
        self.delay_ = None
        self.constant_ = None
        self.n_trajectories_ = None
        self.n_states_ = None
        self._fitted = True
        return self

    def _output(self, tensor: torch.Tensor):
        if self._output_numpy:
            return tensor.cpu().numpy()
        return tensor

    def _check_fitted(self, method: str) -> None:
        if not self._fitted:
            raise NotFittedError(
                f"this DMD is not fitted yet, so {method}() has nothing to use. Call "
                "fit(X, Y) or fit_trajectories(trajectories, delay) first."
            )

    def operator(self, steps: int = 1):
        """Build the ``steps``-step linear map B A_tilde^(steps-1) U_r^H.

        Parameters
        ----------
        steps : int, default 1
            Number of steps k >= 1.

        Returns
        -------
        array or tensor of shape (n_features, n_features)
            The k-step operator, float64 (complex128 for complex data), of the same
            kind and device as the fitted data.

        Raises
        ------
        NotFittedError
            Before ``fit``.
        """
        self._check_fitted("operator")
        steps = _check_steps(steps)
        reduced = torch.linalg.matrix_power(self._A_tilde, steps - 1)
        return self._output((self._B @ reduced) @ self._U_r.mH)

    def predict(self, x, steps: int = 1):
        """Roll the fitted operator forward from ``x``, feeding back each prediction.

        Each step applies the one-step operator B U_r^H to the previous prediction,
        never to the training data, so step k equals ``operator(k) @ x``.

        Parameters
        ----------
        x : array or tensor of shape (n_features,) or (n_features, n_columns)
            Initial state, or several initial states as columns.
        steps : int, default 1
            Number of steps k >= 1.

        Returns
        -------
        array or tensor of shape (steps, *x.shape)
            Entry k - 1 is the state after k steps, float64 (complex128 for complex
            data or a complex operator), of the same kind and device as ``x``.

        Warns
        -----
        UnstableOperatorWarning
            If steps > 1 and some eigenvalue has |lambda| > 1 + 1e-8, naming the
            spectral radius and the number of such eigenvalues.

        Raises
        ------
        NotFittedError
            Before ``fit``.
        """
        self._check_fitted("predict")
        steps = _check_steps(steps)
        x_array = x if isinstance(x, torch.Tensor) else np.asarray(x)
        if x_array.ndim not in (1, 2) or x_array.shape[0] != self.n_features_:
            raise ValueError(
                f"x must have shape ({self.n_features_},) or ({self.n_features_}, "
                f"n_columns), matching the fitted n_features, got shape "
                f"{tuple(x_array.shape)}."
            )
        one_dimensional = x_array.ndim == 1
        if one_dimensional:
            x_array = x_array[:, None]
        x_tensor, _, _ = _to_tensor("x", x_array)
        if steps > 1 and self.n_unstable_ > 0:
            warnings.warn(
                f"rolling out {steps} steps with an operator whose spectral radius is "
                f"{self.spectral_radius_:.6g}: {self.n_unstable_} eigenvalue(s) have "
                "|lambda| > 1, so predictions can grow without bound. Consider a "
                "lower rank (for example RankPolicy.svht()) or a longer delay.",
                UnstableOperatorWarning,
                stacklevel=2,
            )

        output_device = x_tensor.device
        state = x_tensor.to(self._B.device)
        dtype = torch.promote_types(state.dtype, self._B.dtype)
        state = state.to(dtype)
        B = self._B.to(dtype)
        U_h = self._U_r.mH.to(dtype)
        predictions = []
        for _ in range(steps):
            state = B @ (U_h @ state)
            predictions.append(state)
        stacked = torch.stack(predictions).to(output_device)
        if one_dimensional:
            stacked = stacked[:, :, 0]
        if isinstance(x, torch.Tensor):
            return stacked
        return stacked.numpy()

    def summary(self) -> dict:
        """Return the fit's settings and diagnostics as a JSON-serialisable dict.

        Raises
        ------
        NotFittedError
            Before ``fit``.
        """
        self._check_fitted("summary")
        return {
            "rank": self.rank_,
            "rank_policy": self.rank.to_json(),
            "rank_tolerance": self.rank_tolerance_,
            "exact": self.exact,
            "svd_method": self.svd_method_,
            "input_dtype": self.input_dtype_,
            "n_features": self.n_features_,
            "n_snapshot_pairs": self.n_snapshot_pairs_,
            "n_trajectories": self.n_trajectories_,
            "delay": self.delay_,
            "constant": self.constant_,
            "spectral_radius": self.spectral_radius_,
            "n_unstable": self.n_unstable_,
            "unstable_tolerance": UNSTABLE_TOLERANCE,
            "warnings": list(self.warnings_),
        }


def _check_steps(steps) -> int:
    if isinstance(steps, (bool, np.bool_)) or not isinstance(steps, (int, np.integer)):
        raise TypeError(f"steps must be an int, got {steps!r}.")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}.")
    return int(steps)
