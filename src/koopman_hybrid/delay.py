"""Delay embedding of trajectories and the snapshot pairs that DMD fits.

A trajectory is a sequence of T states s_0, ..., s_{T-1} of width d. With delay h, the
delay window at position t stacks h + 1 consecutive states, oldest first:
z_t = [s_t; s_{t+1}; ...; s_{t+h}], so the newest state is the last block of d
entries. DMD fits z_{t+1} ~ A z_t on snapshot pairs (z_t, z_{t+1}) taken inside each
trajectory, never across two trajectories. The columns z_0, ..., z_{T-h-1} of one
trajectory form its Hankel matrix.

Every function accepts a numpy array or a torch tensor of shape
(n_trajectories, n_states, n_features) and returns the same kind, dtype and device.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["check_trajectories", "delay_embed", "snapshot_pairs"]


def _check_shape(trajectories) -> tuple[int, int, int]:
    """Check the type and the 3-D shape, and return (N, T, d)."""
    if not isinstance(trajectories, (np.ndarray, torch.Tensor)):
        raise TypeError(
            "trajectories must be a numpy array or a torch tensor of shape "
            "(n_trajectories, n_states, n_features), got "
            f"{type(trajectories).__name__}."
        )
    if trajectories.ndim != 3:
        raise ValueError(
            "trajectories must have shape (n_trajectories, n_states, n_features), "
            f"got {trajectories.ndim} dimensions with shape "
            f"{tuple(trajectories.shape)}."
            " Add a leading axis of length 1 for a single trajectory."
        )
    n_trajectories, n_states, n_features = (int(size) for size in trajectories.shape)
    if n_trajectories == 0 or n_states == 0 or n_features == 0:
        raise ValueError(
            "trajectories must not be empty, got shape "
            f"{tuple(trajectories.shape)} (n_trajectories, n_states, n_features)."
        )
    return n_trajectories, n_states, n_features


def _check_delay(delay) -> int:
    # bool is a subclass of int, so it is rejected by name.
    if isinstance(delay, (bool, np.bool_)) or not isinstance(delay, (int, np.integer)):
        raise TypeError(f"delay must be an int, got {delay!r}.")
    if delay < 0:
        raise ValueError(f"delay must be >= 0, got {delay}.")
    return int(delay)


def _windows(trajectories, delay: int):
    """Return a view of shape (N, T - delay, (delay + 1) * d) of all delay windows.

    The h + 1 states of one window are consecutive in a C-contiguous trajectory, so
    the window is one contiguous run of (h + 1) * d entries and consecutive windows
    start d entries apart. The view therefore copies nothing, except when the input is
    not C-contiguous.
    """
    n_trajectories, n_states, n_features = trajectories.shape
    window_length = (delay + 1) * n_features
    if isinstance(trajectories, torch.Tensor):
        flat = trajectories.contiguous().reshape(n_trajectories, n_states * n_features)
        return flat.unfold(1, window_length, n_features)
    flat = np.ascontiguousarray(trajectories).reshape(
        n_trajectories, n_states * n_features
    )
    all_offsets = np.lib.stride_tricks.sliding_window_view(flat, window_length, axis=1)
    return all_offsets[:, ::n_features]


def delay_embed(trajectories, delay: int):
    """Stack each run of ``delay + 1`` consecutive states into one delay window.

    Parameters
    ----------
    trajectories : array or tensor of shape (n_trajectories, n_states, n_features)
        States s_0, ..., s_{T-1} of each trajectory, with T = n_states.
    delay : int
        Delay h >= 0. Each window contains h + 1 states.

    Returns
    -------
    windows : array or tensor of shape (N, T - delay, (delay + 1) * n_features)
        With N = n_trajectories and T = n_states. Window t of trajectory i is
        [s_t; s_{t+1}; ...; s_{t+h}], oldest state first. For C-contiguous input the
        result is a view of the input (read-only for numpy), so copy it before
        writing to it.

    Raises
    ------
    TypeError
        If trajectories is not a numpy array or torch tensor, or delay is not an int.
    ValueError
        If trajectories is not 3-D or is empty, delay < 0, or delay >= n_states
        (no complete window).

    Examples
    --------
    Two trajectories of four states with two features, delay 1:

    >>> import numpy as np
    >>> trajectories = np.arange(16).reshape(2, 4, 2)
    >>> trajectories[0]
    array([[0, 1],
           [2, 3],
           [4, 5],
           [6, 7]])
    >>> delay_embed(trajectories, 1)[0]
    array([[0, 1, 2, 3],
           [2, 3, 4, 5],
           [4, 5, 6, 7]])
    """
    _, n_states, _ = _check_shape(trajectories)
    delay = _check_delay(delay)
    if n_states - delay < 1:
        raise ValueError(
            f"delay={delay} needs at least delay + 1 = {delay + 1} states per "
            f"trajectory for one delay window, but each trajectory has "
            f"T={n_states} states. Lower the delay to at most T - 1 = {n_states - 1} "
            "or insert more layers."
        )
    return _windows(trajectories, delay)


def snapshot_pairs(trajectories, delay: int, constant: bool = False):
    """Build the snapshot matrices X and Y from the delay windows of each trajectory.

    Column k of X is a delay window z_t and column k of Y is the next window z_{t+1}
    of the same trajectory, so no pair crosses two trajectories. Each trajectory gives
    T - h - 1 pairs, and the columns are ordered trajectory by trajectory, by t inside
    each trajectory.

    Parameters
    ----------
    trajectories : array or tensor of shape (n_trajectories, n_states, n_features)
        States of each trajectory, with T = n_states.
    delay : int
        Delay h >= 0, at most T - 2.
    constant : bool, default False
        If True, append a row of ones (a constant observable) to X and Y, which lets
        the linear operator represent an affine map.

    Returns
    -------
    X, Y : arrays or tensors of shape (m, n_trajectories * (n_states - delay - 1))
        With m = (delay + 1) * n_features, plus one if ``constant``. Same kind, dtype
        and device as the input. X and Y are each built with one copy from a
        shared, uncopied view of the delay windows.

    Raises
    ------
    TypeError
        If trajectories is not a numpy array or torch tensor, or delay is not an int.
    ValueError
        If trajectories is not 3-D or is empty, delay < 0, or T - delay - 1 < 1
        (no snapshot pair).

    Examples
    --------
    One trajectory of three states of one feature, delay 1: windows [0, 1] and
    [1, 2] give one pair.

    >>> import numpy as np
    >>> X, Y = snapshot_pairs(np.array([[[0.0], [1.0], [2.0]]]), delay=1)
    >>> X
    array([[0.],
           [1.]])
    >>> Y
    array([[1.],
           [2.]])
    """
    n_trajectories, n_states, n_features = _check_shape(trajectories)
    delay = _check_delay(delay)
    pairs_per_trajectory = n_states - delay - 1
    if pairs_per_trajectory < 1:
        n_windows = max(n_states - delay, 0)
        raise ValueError(
            f"delay={delay} leaves {n_windows} delay window(s) per trajectory of "
            f"T={n_states} states, and snapshot pairs need at least two windows "
            f"(T >= delay + 2). Lower the delay to at most T - 2 = {n_states - 2} "
            "or insert more layers."
        )

    windows = _windows(trajectories, delay)
    window_length = (delay + 1) * n_features
    n_rows = window_length + (1 if constant else 0)
    n_pairs = n_trajectories * pairs_per_trajectory

    # Rows of X_rows and Y_rows are the columns of X and Y. Writing the windows into
    # one preallocated buffer each is the single copy, and the constant row is set in
    # the same buffer.
    if isinstance(trajectories, torch.Tensor):
        X_rows = trajectories.new_empty((n_trajectories, pairs_per_trajectory, n_rows))
        Y_rows = trajectories.new_empty((n_trajectories, pairs_per_trajectory, n_rows))
    else:
        X_rows = np.empty(
            (n_trajectories, pairs_per_trajectory, n_rows), trajectories.dtype
        )
        Y_rows = np.empty_like(X_rows)
    X_rows[..., :window_length] = windows[:, :-1]
    Y_rows[..., :window_length] = windows[:, 1:]
    if constant:
        X_rows[..., window_length] = 1
        Y_rows[..., window_length] = 1

    X = X_rows.reshape(n_pairs, n_rows).T
    Y = Y_rows.reshape(n_pairs, n_rows).T
    return X, Y


def check_trajectories(trajectories) -> None:
    """Raise ValueError if the trajectories contain NaN or Inf, or are all zero.

    Runs before any decomposition, so a bad network shows up as a clear message and
    not as a failed or meaningless SVD.

    Parameters
    ----------
    trajectories : array or tensor of shape (n_trajectories, n_states, n_features)
        States of each trajectory.

    Raises
    ------
    TypeError
        If trajectories is not a numpy array or torch tensor.
    ValueError
        If trajectories is not 3-D or is empty. If an entry is NaN or Inf, the message
        names the first one in row-major order as (input i, state t, unit j). If every
        entry is zero, the message states that the layer looks dead.
    """
    _check_shape(trajectories)

    if isinstance(trajectories, torch.Tensor):
        finite = torch.isfinite(trajectories)
        all_finite = bool(finite.all())
        all_zero = all_finite and not bool(trajectories.any())
    else:
        finite = np.isfinite(trajectories)
        all_finite = bool(finite.all())
        all_zero = all_finite and not trajectories.any()

    if not all_finite:
        if isinstance(finite, torch.Tensor):
            first_bad = torch.nonzero(~finite)[0].tolist()
        else:
            first_bad = np.argwhere(~finite)[0].tolist()
        i, t, j = first_bad
        value = trajectories[i, t, j].item()
        raise ValueError(
            f"trajectories contain {value} at (input {i}, state {t}, unit {j}). "
            "Check the network and its inputs for overflow or a diverged training "
            "run of the inserted layers, then collect the trajectories again."
        )
    if all_zero:
        raise ValueError(
            "the activations are all zero in every trajectory "
            f"(shape {tuple(trajectories.shape)}), so the layer looks like a dead ReLU "
            "layer. Retrain or re-scale the network or the inserted layers, or train "
            "with another seed."
        )
