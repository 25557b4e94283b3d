"""Trajectories of a scaled network: the states each input passes through around layer k.

One input's trajectory is n + 2 states of width d_in (see
:meth:`~koopman_hybrid.scaling.ScaledMLP.states`). DMD is fitted on snapshot pairs
taken inside each trajectory.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

from .mlp import check_inputs
from .scaling import ScaledMLP, check_pad_value

__all__ = ["collect_trajectories"]


@torch.no_grad()
def collect_trajectories(
    scaled: ScaledMLP,
    inputs: torch.Tensor | np.ndarray,
    pad_value: float = -0.5,
    batch_size: int = 4096,
) -> np.ndarray:
    """Run ``inputs`` through ``scaled`` and stack the trajectory of each one.

    The network runs in eval mode without gradients, ``batch_size`` inputs at a
    time, and is put back into the mode it was in.

    Parameters
    ----------
    scaled : ScaledMLP
        Scaled network with n inserted layers before hidden layer k.
    inputs : torch.Tensor or numpy.ndarray of shape (N, widths[0])
        Network inputs, one trajectory each. Batches are moved to the network's
        device.
    pad_value : float, default -0.5
        Finite negative value that fills layer k's output (width d_out) up to width
        d_in in the last state. ReLU outputs are >= 0, so a negative value marks
        padding unambiguously.
    batch_size : int, default 4096
        Inputs per forward pass.

    Returns
    -------
    numpy.ndarray of shape (N, n + 2, d_in), dtype float32
        ``trajectories[i, t]`` is state ``s_t`` of input ``i``: ``s_0`` the input of
        layer k, ``s_1..s_n`` the inserted layers' outputs, ``s_{n+1}`` layer k's
        output followed by ``d_in - d_out`` copies of ``pad_value``.

    Raises
    ------
    TypeError
        If ``scaled`` is not a ScaledMLP, or ``inputs`` is not a floating-point
        tensor or array.
    ValueError
        If ``pad_value`` is not a finite negative number, ``inputs`` is not a
        non-empty 2-D array of width ``widths[0]``, or ``batch_size`` is below 1.
    """
    if not isinstance(scaled, ScaledMLP):
        raise TypeError(f"scaled must be a ScaledMLP, got {type(scaled).__name__}")
    check_pad_value(pad_value)
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral):
        raise TypeError(f"batch_size must be an int, got {batch_size!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if isinstance(inputs, np.ndarray):
        inputs = torch.from_numpy(inputs)
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(
            f"inputs must be a torch tensor or numpy array, got {type(inputs).__name__}"
        )
    check_inputs(inputs, scaled.original.widths[0], "inputs")

    parameter = scaled.original.layers[0].weight
    n_states = scaled.n_inserted + 2
    trajectories = np.empty((len(inputs), n_states, scaled.d_in), dtype=np.float32)
    was_training = scaled.training
    scaled.eval()
    for start in range(0, len(inputs), batch_size):
        batch = inputs[start : start + batch_size].to(
            device=parameter.device, dtype=parameter.dtype
        )
        states = scaled.states(batch, pad_value)
        trajectories[start : start + len(batch)] = states.cpu().numpy()
    scaled.train(was_training)
    return trajectories
