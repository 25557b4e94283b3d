"""Koopman hybrid: a hidden layer replaced by a DMD-fitted linear operator, and its baseline.

The hybrid runs the scaled network's first h inserted layers, stacks the states into one
delay window and applies the fitted (n + 1 - h)-step DMD operator once, in place of the
remaining inserted layers and layer k. The baseline replaces layer k by the affine
least-squares map from its input to its output.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .dmd import DMD
from .mlp import as_mlp, check_hidden_layer, check_inputs, layer_inputs_and_outputs
from .scaling import ScaledMLP

__all__ = [
    "KoopmanHybrid",
    "LeastSquaresLayer",
    "ReplacedLayerMLP",
    "fit_least_squares_layer",
    "replace_layer",
]

# The operator of real snapshots is real. An imaginary part up to this fraction of the
# largest entry is float64 round-off from the eigendecomposition and is dropped.
IMAGINARY_RTOL = 1e-10


class KoopmanHybrid(nn.Module):
    """A scaled network whose last inserted layers and layer k are one linear map.

    With n inserted layers and delay h, the forward pass

    1. runs original layers ``0..k-1`` to get s_0 and the first h inserted layers to
       get ``s_1..s_h`` (these are the ``nonlinear_layers_run``),
    2. stacks the delay window ``z_0 = [s_0; s_1; ...; s_h]`` (oldest first, with a
       trailing 1 if ``constant``),
    3. applies the DMD operator ``M = dmd.operator(n + 1 - h)`` once, which predicts
       the window ``[s_{n+1-h}; ...; s_{n+1}]``,
    4. takes the first d_out entries of the last block of d_in entries (the
       predicted, unpadded layer-k output ``s_{n+1}``) and
    5. runs original layers ``k+1..L-1`` on it. Layer k's ReLU is not applied again.

    Only the rows of M that step 4 reads are multiplied, which gives the same result
    as computing the whole predicted window and slicing it.

    Parameters
    ----------
    scaled : ScaledMLP
        Scaled network with n inserted layers before hidden layer k. The hybrid
        shares its modules and does not copy them.
    dmd : DMD
        Fitted on trajectories of ``scaled`` with the same ``delay`` and
        ``constant``, for example with ``dmd.fit_trajectories``.
    delay : int
        Delay h in ``0..n``. With h = 0 no inserted layer runs and the whole
        replacement is linear.
    constant : bool, default False
        Whether the DMD windows end with a constant 1 (an affine operator).

    Attributes
    ----------
    scaled : ScaledMLP
        The scaled network.
    operator : torch.Tensor of shape (n_features, n_features)
        Buffer holding M in float32, with ``n_features = (h + 1) * d_in`` plus 1 if
        ``constant``.
    rank : int
        Truncation rank of the DMD fit.

    Raises
    ------
    TypeError
        If ``scaled`` is not a ScaledMLP, ``dmd`` is not a DMD, ``delay`` is not an
        int or ``constant`` is not a bool.
    ValueError
        If ``delay`` is outside ``0..n``, the DMD was fitted with another delay or
        constant setting, or its operator does not act on windows of this size.
    koopman_hybrid.dmd.NotFittedError
        If ``dmd`` is not fitted.
    """

    def __init__(
        self, scaled: ScaledMLP, dmd: DMD, delay: int, constant: bool = False
    ) -> None:
        super().__init__()
        if not isinstance(scaled, ScaledMLP):
            raise TypeError(f"scaled must be a ScaledMLP, got {type(scaled).__name__}")
        if not isinstance(dmd, DMD):
            raise TypeError(f"dmd must be a DMD, got {type(dmd).__name__}")
        if isinstance(delay, bool) or not isinstance(delay, numbers.Integral):
            raise TypeError(f"delay must be an int, got {delay!r}")
        if not 0 <= delay <= scaled.n_inserted:
            raise ValueError(
                f"delay {delay} is out of range for {scaled.n_inserted} inserted "
                f"layers: choose a delay in 0..{scaled.n_inserted}, or insert more "
                "layers"
            )
        if not isinstance(constant, (bool, np.bool_)):
            raise TypeError(f"constant must be a bool, got {constant!r}")
        delay = int(delay)
        constant = bool(constant)

        fitted_delay = getattr(dmd, "delay_", None)
        if fitted_delay is not None and fitted_delay != delay:
            raise ValueError(
                f"the DMD was fitted with delay {fitted_delay}, but the hybrid uses "
                f"delay {delay}. Fit the DMD with delay {delay}."
            )
        fitted_states = getattr(dmd, "n_states_", None)
        if fitted_states is not None and fitted_states != scaled.n_inserted + 2:
            raise ValueError(
                f"the DMD was fitted on trajectories of {fitted_states} states, but "
                f"this scaled network with {scaled.n_inserted} inserted layers makes "
                f"{scaled.n_inserted + 2}. Fit the DMD on this network's trajectories."
            )
        fitted_constant = getattr(dmd, "constant_", None)
        if fitted_constant is not None and fitted_constant != constant:
            raise ValueError(
                f"the DMD was fitted with constant={fitted_constant}, but the hybrid "
                f"uses constant={constant}. Use the same setting for both."
            )

        self.scaled = scaled
        self.delay = delay
        self.constant = constant
        n_features = (delay + 1) * scaled.d_in + int(constant)
        operator = _real_float64(dmd.operator(self.linear_steps))
        if operator.shape != (n_features, n_features):
            raise ValueError(
                f"the DMD operator has shape {tuple(operator.shape)}, but delay "
                f"{delay} with {scaled.d_in} units per state"
                f"{' and a constant' if constant else ''} needs windows of "
                f"{n_features} entries, shape ({n_features}, {n_features}). Fit the "
                "DMD on trajectories of this scaled network with the same delay and "
                "constant setting"
            )
        device = scaled.original.layers[0].weight.device
        self.register_buffer(
            "operator", operator.to(device=device, dtype=torch.float32)
        )
        self.rank = int(dmd.rank_)

    @property
    def layer(self) -> int:
        """The replaced hidden layer k."""
        return self.scaled.layer

    @property
    def nonlinear_layers_run(self) -> int:
        """Number of inserted nonlinear layers that still run (the delay h)."""
        return self.delay

    @property
    def linear_steps(self) -> int:
        """Number of DMD steps folded into the operator, n + 1 - h."""
        return self.scaled.n_inserted + 1 - self.delay

    @property
    def variant(self) -> str:
        """Always ``"delay"``.

        The fully linear hybrid is this class with delay 0, and callers label it
        ``"linear"`` themselves.
        """
        return "delay"

    def layer_output(self, x: torch.Tensor) -> torch.Tensor:
        """Predict layer k's output from the network input, shape (batch, d_out)."""
        s0 = self.scaled.layer_input(x)
        states = [s0, *self.scaled.run_inserted(s0, self.delay)]
        if self.constant:
            states.append(s0.new_ones((len(s0), 1)))
        window = torch.cat(states, dim=1)

        # Rows of the last block of d_in entries, whose first d_out entries are the
        # predicted layer-k output s_{n+1}.
        start = self.delay * self.scaled.d_in
        readout = self.operator[start : start + self.scaled.d_out]
        return window @ readout.T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        original = self.scaled.original
        return original.run_layers(
            self.layer_output(x), self.layer + 1, original.n_layers
        )

    def extra_repr(self) -> str:
        return (
            f"layer={self.layer}, delay={self.delay}, rank={self.rank}, "
            f"nonlinear_layers_run={self.nonlinear_layers_run}, "
            f"linear_steps={self.linear_steps}, constant={self.constant}"
        )


def _real_float64(operator) -> torch.Tensor:
    """Return a DMD operator as a real float64 CPU tensor."""
    if isinstance(operator, torch.Tensor):
        tensor = operator.detach().cpu()
    else:
        tensor = torch.from_numpy(np.asarray(operator))
    if tensor.is_complex():
        scale = float(tensor.abs().max())
        imaginary = float(tensor.imag.abs().max())
        if imaginary > IMAGINARY_RTOL * max(scale, 1.0):
            raise ValueError(
                f"the DMD operator has imaginary entries up to {imaginary:.3g}, but the "
                "hybrid needs the real operator of real trajectories"
            )
        tensor = tensor.real
    return tensor.to(torch.float64)


class LeastSquaresLayer(nn.Module):
    """Affine map ``x @ weight.T + bias`` used in place of a hidden layer.

    Parameters
    ----------
    weight : torch.Tensor of shape (d_out, d_in)
    bias : torch.Tensor of shape (d_out,)
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        if weight.ndim != 2:
            raise ValueError(
                f"weight must have shape (d_out, d_in), got {tuple(weight.shape)}"
            )
        if bias.shape != (weight.shape[0],):
            raise ValueError(
                f"bias must have shape ({weight.shape[0]},) to match weight, got "
                f"{tuple(bias.shape)}"
            )
        self.weight = nn.Parameter(weight.detach().clone())
        self.bias = nn.Parameter(bias.detach().clone())

    @property
    def in_features(self) -> int:
        return self.weight.shape[1]

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


@torch.no_grad()
def fit_least_squares_layer(
    model: nn.Module, layer: int, inputs: torch.Tensor
) -> LeastSquaresLayer:
    """Fit the affine least-squares map from layer k's input to its output.

    The map minimises the squared error between ``s_0 @ W.T + b`` and layer k's
    output (after its ReLU) over the given inputs, where s_0 is the output of
    layers ``0..k-1``. This is the baseline that a Koopman hybrid is compared with.

    Parameters
    ----------
    model : MLP or nn.Sequential
        Trained network; see :func:`~koopman_hybrid.mlp.as_mlp`.
    layer : int
        Hidden layer k in ``1..L-2``.
    inputs : torch.Tensor of shape (n_samples, widths[0])
        Network inputs to fit on, on the model's device.

    Returns
    -------
    LeastSquaresLayer
        Float32 map from d_in to d_out features, on the model's device.

    Raises
    ------
    TypeError, ValueError
        If ``model`` is not an MLP, ``layer`` is not a hidden layer, or ``inputs``
        is not a non-empty float tensor of width ``widths[0]`` on the model's device.

    Notes
    -----
    The solve runs in float64 on the CPU with the SVD-based ``gelsd`` driver of
    ``torch.linalg.lstsq``, which returns the minimum-norm solution when s_0 is
    rank deficient (dead units give zero columns). The CUDA driver assumes full
    rank.
    """
    model = as_mlp(model)
    layer = check_hidden_layer(model, layer)
    device = model.layers[0].weight.device
    check_inputs(inputs, model.widths[0], "inputs", device=device)

    s0, target = layer_inputs_and_outputs(model, inputs, layer)
    s0 = s0.cpu().double()
    target = target.cpu().double()
    design = torch.cat([s0, s0.new_ones((len(s0), 1))], dim=1)
    solution = torch.linalg.lstsq(design, target, driver="gelsd").solution

    reference = model.layers[layer].weight
    weight = solution[:-1].T.to(device=reference.device, dtype=reference.dtype)
    bias = solution[-1].to(device=reference.device, dtype=reference.dtype)
    return LeastSquaresLayer(weight, bias)


class ReplacedLayerMLP(nn.Module):
    """An MLP whose hidden layer k (Linear + ReLU) is replaced by another module.

    Built by :func:`replace_layer`. The forward pass runs layers ``0..k-1``, then
    ``module``, then layers ``k+1..L-1``. No ReLU is added after ``module``.
    """

    def __init__(self, model: nn.Module, layer: int, module: nn.Module) -> None:
        super().__init__()
        self.model = as_mlp(model)
        self.layer = check_hidden_layer(self.model, layer)
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.model.run_layers(x, 0, self.layer)
        hidden = self.module(hidden)
        return self.model.run_layers(hidden, self.layer + 1, self.model.n_layers)

    def extra_repr(self) -> str:
        return f"layer={self.layer}"


def replace_layer(model: nn.Module, layer: int, module: nn.Module) -> ReplacedLayerMLP:
    """Return a network that uses ``module`` in place of hidden layer k of ``model``.

    The result shares the layers of ``model`` and does not copy them.

    Parameters
    ----------
    model : MLP or nn.Sequential
        The network; see :func:`~koopman_hybrid.mlp.as_mlp`.
    layer : int
        Hidden layer k in ``1..L-2``.
    module : nn.Module
        Maps layer k's input (width ``widths[k]``) to its output (width
        ``widths[k + 1]``).

    Returns
    -------
    ReplacedLayerMLP

    Raises
    ------
    TypeError
        If ``module`` is not an ``nn.Module``.
    ValueError
        If ``layer`` is not a hidden layer, or ``module`` is a LeastSquaresLayer of
        other widths.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    model = as_mlp(model)
    layer = check_hidden_layer(model, layer)
    expected = (model.widths[layer], model.widths[layer + 1])
    if isinstance(module, LeastSquaresLayer):
        found = (module.in_features, module.out_features)
        if found != expected:
            raise ValueError(
                f"the LeastSquaresLayer maps {found[0]} to {found[1]} features, but "
                f"layer {layer} maps {expected[0]} to {expected[1]}. Fit it for "
                f"layer {layer} of this network."
            )
    return ReplacedLayerMLP(model, layer, module)
