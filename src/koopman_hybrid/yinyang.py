"""Binary Yin-Yang data set: two interlocking classes in a disc, with the dots removed.

The geometry and class rule follow the Yin-Yang data set of Kriener, Goeltz and
Petrovici, "The Yin-Yang dataset", NICE 2022 (arXiv 2102.08211). The original has
three classes (yin, yang and the two dots). This version keeps yin and yang only and
rejects points that fall in a dot.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["OUTSIDE", "YANG", "YIN", "classify_yinyang", "make_yinyang"]

# Geometry in the unit square. The disc has radius R_BIG around (0.5, 0.5). The dots
# have radius R_SMALL around the centres of the left and right half-discs.
R_BIG = 0.5
R_SMALL = 0.1
CENTRE = (R_BIG, R_BIG)
LEFT_DOT = (0.5 * R_BIG, R_BIG)
RIGHT_DOT = (1.5 * R_BIG, R_BIG)

YIN = 0
YANG = 1
OUTSIDE = -1
"""Code from ``classify_yinyang`` for points outside the disc or inside a dot."""


def classify_yinyang(points: np.ndarray) -> np.ndarray:
    """Assign each point its Yin-Yang class, or ``OUTSIDE`` (-1).

    A point in the disc is yin (0) if it lies in the right dot's place, in the ring
    around the left dot, or in the upper half outside the right half-disc. Every
    other point in the disc is yang (1). In the notation of Kriener et al. (2022),
    with ``d_left`` and ``d_right`` the distances to the dot centres, yin means
    ``d_right <= r_small``, or ``r_small < d_left <= r_big / 2``, or
    ``y > r_big and d_right > r_big / 2``. Points in a dot (``d_left < r_small``
    or ``d_right < r_small``) and points outside the disc get ``OUTSIDE``.

    Parameters
    ----------
    points : array of shape (n_points, 2)
        Coordinates (x, y) in the unit square.

    Returns
    -------
    labels : array of shape (n_points,)
        int64 labels: ``YIN`` (0), ``YANG`` (1) or ``OUTSIDE`` (-1).

    Raises
    ------
    ValueError
        If ``points`` does not have shape (n_points, 2).

    Examples
    --------
    >>> classify_yinyang(np.array([[0.5, 0.9], [0.5, 0.1], [0.25, 0.5], [0.0, 0.0]]))
    array([ 0,  1, -1, -1])
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(
            f"points must have shape (n_points, 2), got {points.shape}. "
            "Pass one (x, y) row per point."
        )

    x = points[:, 0]
    y = points[:, 1]
    d_centre = np.hypot(x - CENTRE[0], y - CENTRE[1])
    d_left = np.hypot(x - LEFT_DOT[0], y - LEFT_DOT[1])
    d_right = np.hypot(x - RIGHT_DOT[0], y - RIGHT_DOT[1])

    is_yin = (
        (d_right <= R_SMALL)
        | ((d_left > R_SMALL) & (d_left <= 0.5 * R_BIG))
        | ((y > R_BIG) & (d_right > 0.5 * R_BIG))
    )
    labels = np.where(is_yin, YIN, YANG).astype(np.int64)

    in_dot = (d_left < R_SMALL) | (d_right < R_SMALL)
    outside_disc = d_centre > R_BIG
    labels[in_dot | outside_disc] = OUTSIDE
    return labels


def _check_non_negative_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}.")
    if value < 0:
        raise ValueError(f"{name} must be non-negative, got {value}.")
    return int(value)


def make_yinyang(n_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw a class-balanced binary Yin-Yang data set.

    Candidates are drawn uniformly in the unit square and kept if they lie in the
    disc and outside both dots (rejection sampling). Each class is filled in draw
    order until it has ``n_samples // 2`` points, and the result is shuffled.

    Parameters
    ----------
    n_samples : int
        Number of points. Must be positive and even, so that both classes get
        exactly ``n_samples // 2`` points.
    seed : int
        Non-negative seed for ``numpy.random.default_rng``. The same seed gives the
        same points and labels in the same order.

    Returns
    -------
    points : array of shape (n_samples, 2)
        float32 coordinates (x, y).
    labels : array of shape (n_samples,)
        int64 labels, ``YIN`` (0) or ``YANG`` (1).

    Raises
    ------
    TypeError
        If ``n_samples`` or ``seed`` is not an int.
    ValueError
        If ``n_samples`` is not positive or not even, or ``seed`` is negative.

    See Also
    --------
    classify_yinyang : the class rule.
    """
    n_samples = _check_non_negative_int(n_samples, "n_samples")
    seed = _check_non_negative_int(seed, "seed")
    if n_samples == 0 or n_samples % 2 != 0:
        raise ValueError(
            f"n_samples must be positive and even so that both classes get "
            f"n_samples // 2 points, got {n_samples}. Use {max(2, n_samples + 1)}."
        )

    rng = np.random.default_rng(seed)
    per_class = n_samples // 2
    accepted: dict[int, list[np.ndarray]] = {YIN: [], YANG: []}
    counts = {YIN: 0, YANG: 0}

    while counts[YIN] < per_class or counts[YANG] < per_class:
        # About 72 % of the square is kept (disc minus dots), about half per class,
        # so a batch of n_samples + 64 candidates usually fills both classes.
        candidates = rng.random((n_samples + 64, 2), dtype=np.float32)
        # The rule is evaluated on the float32 values that are returned, so the
        # labels stay exact at the class boundaries.
        candidate_labels = classify_yinyang(candidates)
        for label in (YIN, YANG):
            missing = per_class - counts[label]
            chosen = candidates[candidate_labels == label][:missing]
            accepted[label].append(chosen)
            counts[label] += len(chosen)

    points = np.concatenate(accepted[YIN] + accepted[YANG])
    labels = np.repeat(np.array([YIN, YANG], dtype=np.int64), per_class)
    order = rng.permutation(n_samples)
    return points[order], labels[order]
