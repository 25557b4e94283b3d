"""Layer scaling: insert trainable square layers before a frozen hidden layer.

To replace hidden layer k of a trained MLP (``Linear(d_in, d_out)`` + ReLU, with
``d_in = widths[k]`` and ``d_out = widths[k + 1]``), n layers ``Linear(d_in, d_in)`` +
ReLU are inserted directly before it. Only the inserted layers are trained, so that
layer k's output stays close to the original's. Each input then yields a trajectory of
n + 2 states of width d_in: the input of layer k, the outputs of the n inserted layers,
and layer k's output padded up to d_in.
"""

from __future__ import annotations

import copy
import logging
import math
import numbers
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .mlp import (
    FORWARD_BATCH_SIZE,
    MLP,
    as_mlp,
    check_betas,
    check_hidden_layer,
    check_inputs,
    epoch_progress_bar,
    layer_inputs_and_outputs,
    shuffled_batches,
)

__all__ = [
    "ScaledMLP",
    "ScalingConfig",
    "ScalingLog",
    "recurrence_residual",
    "train_scaling",
]

logger = logging.getLogger(__name__)

# Huber loss threshold between the scaled and the original layer-k output: squared
# error below it, absolute error above it.
HUBER_DELTA = 1.0

# A unit of layer k's output that the original network activates for at least this
# fraction of the training inputs must not be zero for all of them in the scaled
# network. Such a unit passes no gradient back, so it stays dead. Units that the
# original uses more rarely are not checked, because they may never be reproduced.
MIN_ACTIVE_FRACTION = 0.01


@dataclass(frozen=True)
class ScalingConfig:
    """Settings of layer scaling and of :func:`train_scaling`.

    Parameters
    ----------
    n_inserted : int
        Number n of inserted layers, at least 1.
    epochs : int
        Passes over the training inputs.
    batch_size : int
        Mini-batch size.
    lr, weight_decay : float
        AdamW learning rate and decoupled weight decay.
    betas : tuple of float
        AdamW coefficients of the running gradient averages.
    init_noise : float
        Relative noise of the initial inserted weights; see :class:`ScaledMLP`.
    seed : int
        Seed of the CPU generator that draws the mini-batch order.
    max_restarts : int
        How many times :func:`train_scaling` may redraw the inserted layers from
        the next initialisation seed when some layer-k output unit is dead.
    smoothness : float
        Weight of an optional penalty on the mean squared difference between
        consecutive states ``s_{i+1} - s_i`` (i < n), which pushes the inserted
        layers towards small steps. 0 turns it off. It is an experiment setting
        that the method does not need.
    linearity : float
        Weight of an optional penalty that makes the trajectories follow one linear
        recurrence, as the DMD operator of a hybrid with delay ``linearity_delay``
        assumes. On each mini-batch the states ``s_0..s_{n+1}`` are computed (the last
        one padded with ``pad_value``), the affine map from every delay window
        ``[s_{t-h}; ...; s_t; 1]`` (t = h..n) to the next state ``s_{t+1}`` is
        fitted by ridge regression, and the mean squared residual of that fit is
        added, times ``linearity``, to the loss. The gradient flows through the fit.
        0 turns it off.
    linearity_delay : int
        Delay h of the windows in the linearity penalty, from 0 to n_inserted
        (checked only when ``linearity`` is on). A
        recurrence on windows of h + 1 states also holds on longer windows, so the
        penalty serves every hybrid with delay >= h.
    linearity_rollout : bool
        If True, the linearity penalty is the mean squared error of the fitted
        recurrence rolled out from the first window ``[s_0; ...; s_h]``, as the
        hybrid runs it, instead of its one-step residual; see
        :func:`recurrence_residual`.
    pad_value : float
        Value that fills layer k's output up to width d_in in the linearity
        penalty. It must equal the pad value of the trajectories that the DMD is
        fitted on.
    """

    n_inserted: int = 10
    epochs: int = 100
    batch_size: int = 512
    lr: float = 2e-3
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-4
    init_noise: float = 0.5
    seed: int = 0
    max_restarts: int = 3
    smoothness: float = 0.0
    linearity: float = 0.0
    linearity_delay: int = 5
    linearity_rollout: bool = False
    pad_value: float = -0.5

    def __post_init__(self) -> None:
        for name, minimum in (
            ("n_inserted", 1),
            ("epochs", 1),
            ("batch_size", 1),
            ("seed", 0),
            ("max_restarts", 0),
            ("linearity_delay", 0),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"{name} must be an int, got {value!r}")
            if value < minimum:
                raise ValueError(f"{name} must be at least {minimum}, got {value}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        check_betas(self.betas)
        _check_init_noise(self.init_noise)
        if not (math.isfinite(self.smoothness) and self.smoothness >= 0):
            raise ValueError(
                f"smoothness must be a finite number >= 0, got {self.smoothness}"
            )
        if not (math.isfinite(self.linearity) and self.linearity >= 0):
            raise ValueError(
                f"linearity must be a finite number >= 0, got {self.linearity}"
            )
        if self.linearity > 0 and self.linearity_delay > self.n_inserted:
            raise ValueError(
                f"linearity_delay must be at most n_inserted={self.n_inserted}, got "
                f"{self.linearity_delay}: lower the delay or insert more layers"
            )
        check_pad_value(self.pad_value)


@dataclass
class ScalingLog:
    """Record of one :func:`train_scaling` call.

    Attributes
    ----------
    losses : list of float
        Mean Huber loss between scaled and original layer-k output, per epoch.
    smoothness_losses : list of float
        Mean squared step between consecutive states per epoch, unweighted. Empty
        when ``smoothness`` is 0.
    linearity_losses : list of float
        Mean squared residual of the per-batch linear recurrence per epoch,
        unweighted. Empty when ``linearity`` is 0.
    init_seeds_tried : list of int
        Initialisation seeds of the inserted layers, in order of the tries.
    init_seed : int
        Initialisation seed of the returned layers. The per-epoch lists cover that
        try only.
    dead_units : list of int
        Layer-k output units that the original activates for at least
        ``MIN_ACTIVE_FRACTION`` of the training inputs but the returned network
        leaves at zero for all of them. Empty unless every try left some.
    """

    losses: list[float] = field(default_factory=list)
    smoothness_losses: list[float] = field(default_factory=list)
    linearity_losses: list[float] = field(default_factory=list)
    init_seeds_tried: list[int] = field(default_factory=list)
    init_seed: int = 0
    dead_units: list[int] = field(default_factory=list)


class ScaledMLP(nn.Module):
    """An MLP with n trainable layers inserted before hidden layer k.

    The original network is copied and its parameters are frozen
    (``requires_grad=False``), so the network passed in is never changed. The
    inserted layers start near the identity: weight ``I + E`` with entries of ``E``
    drawn from a normal distribution of standard deviation
    ``init_noise / sqrt(d_in)``, and bias 0. Because their inputs are ReLU outputs
    and so non-negative, the scaled network starts close to the original. A stack
    of default-initialised layers instead often starts with units that are zero for
    every input and never recover.

    Parameters
    ----------
    original : MLP or nn.Sequential
        Trained network; see :func:`~koopman_hybrid.mlp.as_mlp`.
    layer : int
        Hidden layer k to scale, in ``1..L-2``.
    n_inserted : int
        Number n of inserted layers, at least 1.
    init_noise : float, default 0.5
        Relative noise of the initial inserted weights, finite and >= 0.
    seed : int, default 0
        Seed of the CPU generator that draws the initial noise.

    Attributes
    ----------
    original : MLP
        Frozen copy of the original network.
    layer : int
        The scaled hidden layer k.
    inserted : nn.ModuleList of nn.Linear
        The n inserted layers, each ``Linear(d_in, d_in)`` followed by a ReLU.
    init_noise : float
        Relative noise of the initial inserted weights.
    init_seed : int
        Seed of the current initial inserted weights (see :meth:`reset_inserted`).
    """

    def __init__(
        self,
        original: nn.Module,
        layer: int,
        n_inserted: int,
        init_noise: float = 0.5,
        *,
        seed: int = 0,
    ) -> None:
        super().__init__()
        original = as_mlp(original)
        layer = check_hidden_layer(original, layer)
        if isinstance(n_inserted, bool) or not isinstance(n_inserted, numbers.Integral):
            raise TypeError(f"n_inserted must be an int, got {n_inserted!r}")
        if n_inserted < 1:
            raise ValueError(f"n_inserted must be at least 1, got {n_inserted}")
        _check_init_noise(init_noise)

        self.original = copy.deepcopy(original)
        self.original.requires_grad_(False)
        self.layer = layer
        self.init_noise = float(init_noise)

        width = self.d_in
        reference = self.original.layers[layer].weight
        self.inserted = nn.ModuleList(
            nn.utils.skip_init(
                nn.Linear, width, width, device=reference.device, dtype=reference.dtype
            )
            for _ in range(n_inserted)
        )
        self.reset_inserted(seed)

    def reset_inserted(self, seed: int) -> None:
        """Draw the inserted layers again near the identity from ``seed``.

        Each weight becomes ``I + E`` with entries of ``E`` from a normal
        distribution of standard deviation ``init_noise / sqrt(d_in)``, and each
        bias becomes 0. The same seed gives the same weights.
        """
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"seed must be an int, got {seed!r}")
        generator = torch.Generator().manual_seed(int(seed))
        width = self.d_in
        std = self.init_noise / math.sqrt(width)
        with torch.no_grad():
            for linear in self.inserted:
                noise = torch.randn(
                    width, width, generator=generator, dtype=torch.float64
                )
                weight = torch.eye(width, dtype=torch.float64) + std * noise
                linear.weight.copy_(weight)
                linear.bias.zero_()
        self.init_seed = int(seed)

    @property
    def d_in(self) -> int:
        """Input width of layer k, which is also the width of every state."""
        return self.original.widths[self.layer]

    @property
    def d_out(self) -> int:
        """Output width of layer k."""
        return self.original.widths[self.layer + 1]

    @property
    def n_inserted(self) -> int:
        """Number n of inserted layers."""
        return len(self.inserted)

    def layer_input(self, x: torch.Tensor) -> torch.Tensor:
        """Run original layers ``0..k-1``: the first state s_0, shape (batch, d_in)."""
        return self.original.run_layers(x, 0, self.layer)

    def run_inserted(
        self, s0: torch.Tensor, stop: int | None = None
    ) -> list[torch.Tensor]:
        """Run the first ``stop`` inserted layers (all by default) from state s_0.

        Returns the states ``[s_1, ..., s_stop]``, each of shape (batch, d_in).
        """
        if stop is None:
            stop = self.n_inserted
        if not 0 <= stop <= self.n_inserted:
            raise ValueError(
                f"stop={stop} is out of range: there are {self.n_inserted} inserted "
                "layers"
            )
        states = []
        state = s0
        for linear in self.inserted[:stop]:
            state = torch.relu(linear(state))
            states.append(state)
        return states

    def layer_output(self, x: torch.Tensor) -> torch.Tensor:
        """Compute the scaled network's layer-k output, shape (batch, d_out)."""
        s0 = self.layer_input(x)
        last = self.run_inserted(s0)[-1]
        return self.original.run_layers(last, self.layer, self.layer + 1)

    def run_from_layer_input(self, s0: torch.Tensor) -> torch.Tensor:
        """Run the inserted layers, layer k and the rest of the network from s_0."""
        last = self.run_inserted(s0)[-1]
        return self.original.run_layers(last, self.layer, self.original.n_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run_from_layer_input(self.layer_input(x))

    def states(self, x: torch.Tensor, pad_value: float) -> torch.Tensor:
        """Compute the trajectory of each input: n + 2 states of width d_in.

        Parameters
        ----------
        x : torch.Tensor of shape (batch, widths[0])
            Network inputs.
        pad_value : float
            Value that fills layer k's output up to width d_in. A finite negative
            number, so that padding differs from every ReLU output.

        Returns
        -------
        torch.Tensor of shape (batch, n + 2, d_in)
            ``s_0`` is the input of layer k, ``s_1..s_n`` the inserted layers'
            outputs and ``s_{n+1}`` layer k's output followed by
            ``d_in - d_out`` entries equal to ``pad_value``.
        """
        check_pad_value(pad_value)
        s0 = self.layer_input(x)
        inserted_states = self.run_inserted(s0)
        output = self.original.run_layers(
            inserted_states[-1], self.layer, self.layer + 1
        )
        padding = output.new_full((len(output), self.d_in - self.d_out), pad_value)
        last = torch.cat([output, padding], dim=1)
        return torch.stack([s0, *inserted_states, last], dim=1)

    def remove_inserted(self) -> MLP:
        """Return a trainable copy of the original network, without inserted layers."""
        model = copy.deepcopy(self.original)
        model.requires_grad_(True)
        return model

    def extra_repr(self) -> str:
        return f"layer={self.layer}, n_inserted={self.n_inserted}, d_in={self.d_in}"


def check_pad_value(pad_value: float) -> None:
    """Check that ``pad_value`` is a finite negative number.

    ReLU outputs are non-negative, so a negative value marks padding unambiguously.

    Raises
    ------
    ValueError
        If ``pad_value`` is not a real number, not finite, or not negative.
    """
    if isinstance(pad_value, bool) or not isinstance(pad_value, numbers.Real):
        raise ValueError(
            f"pad_value must be a finite negative number such as -0.5, got "
            f"{pad_value!r}"
        )
    if not (math.isfinite(pad_value) and pad_value < 0):
        raise ValueError(
            f"pad_value must be a finite negative number such as -0.5, got "
            f"{pad_value}: ReLU outputs are >= 0, so only a negative value marks "
            "padding unambiguously"
        )


def _check_init_noise(init_noise: float) -> None:
    if not (
        isinstance(init_noise, numbers.Real)
        and math.isfinite(init_noise)
        and init_noise >= 0
    ):
        raise ValueError(f"init_noise must be a finite number >= 0, got {init_noise}")


def train_scaling(
    scaled: ScaledMLP,
    train_x: torch.Tensor,
    config: ScalingConfig,
    *,
    progress: bool = True,
) -> ScalingLog:
    """Train the inserted layers so that layer k's output matches the original's.

    The loss is the Huber loss (delta 1) between the scaled and the original
    layer-k output (after its ReLU), plus ``config.smoothness`` times the mean
    squared step between consecutive states, plus ``config.linearity`` times the
    error of the per-batch linear recurrence (:func:`recurrence_residual`). The original layers stay frozen. The
    layer-k inputs and targets are computed once before training, so each step runs
    only the inserted layers and layer k.

    Before and after training, the scaled layer-k output is checked for dead units:
    units that the original activates for at least ``MIN_ACTIVE_FRACTION`` of the
    inputs but the scaled network leaves at zero for all of them. A dead unit passes
    no gradient back, so it stays dead. The inserted layers are then drawn again
    from the next initialisation seed (``scaled.init_seed + 1``) and trained again,
    with a logged warning, at most ``config.max_restarts`` times. A try whose units
    were dead at initialisation halves ``scaled.init_noise`` for the next one, and
    the last try starts from the exact identity (noise 0). If every try
    leaves dead units, the trained try with the lowest final Huber loss is kept,
    with a warning, and its dead units are listed in the log.

    Parameters
    ----------
    scaled : ScaledMLP
        Network to train in place. ``scaled.n_inserted`` must equal
        ``config.n_inserted``.
    train_x : torch.Tensor of shape (n_samples, widths[0])
        Training inputs, on the device of ``scaled``. Labels are not needed.
    config : ScalingConfig
        Optimiser, schedule and restart settings.
    progress : bool, default True
        Show a progress bar over epochs when standard error is a terminal.

    Returns
    -------
    ScalingLog
        Huber loss per epoch (and the smoothness and linearity terms, when on)
        of the kept try, the initialisation seeds tried and any dead units left.

    Raises
    ------
    TypeError, ValueError
        If ``train_x`` does not fit the network or the settings disagree.
    RuntimeError
        If every try already had dead layer-k output units at initialisation, so
        none was trained, or the loss becomes NaN or infinite.
    """
    if not isinstance(scaled, ScaledMLP):
        raise TypeError(f"scaled must be a ScaledMLP, got {type(scaled).__name__}")
    if not isinstance(config, ScalingConfig):
        raise TypeError(f"config must be a ScalingConfig, got {type(config).__name__}")
    if config.n_inserted != scaled.n_inserted:
        raise ValueError(
            f"config.n_inserted={config.n_inserted} but the network has "
            f"{scaled.n_inserted} inserted layers. Build the ScaledMLP with "
            "config.n_inserted."
        )
    device = scaled.original.layers[0].weight.device
    check_inputs(train_x, scaled.original.widths[0], "train_x", device=device)

    layer_inputs, targets = layer_inputs_and_outputs(
        scaled.original, train_x, scaled.layer
    )
    active_fraction = (targets > 0).float().mean(dim=0)
    checked_units = active_fraction >= MIN_ACTIVE_FRACTION

    seeds_tried: list[int] = []
    best: tuple[ScalingLog, dict[str, torch.Tensor], list[int]] | None = None
    for attempt in range(config.max_restarts + 1):
        seed = scaled.init_seed
        seeds_tried.append(seed)
        dead = _dead_output_units(scaled, layer_inputs, checked_units)
        when = "at initialisation"
        if not dead:
            log = _train_inserted(scaled, layer_inputs, targets, config, progress)
            log.init_seed = seed
            dead = _dead_output_units(scaled, layer_inputs, checked_units)
            when = "after training"
            if not dead:
                log.init_seeds_tried = seeds_tried
                _log_result(scaled, log)
                return log
            if best is None or log.losses[-1] < best[0].losses[-1]:
                weights = copy.deepcopy(scaled.inserted.state_dict())
                best = (log, weights, dead)

        reason = _describe_dead_units(scaled, dead, when)
        if attempt < config.max_restarts:
            if when == "at initialisation":
                # Less noise starts closer to the original network, and none at
                # all (the last try) starts exactly at it, with no unit dead.
                is_last = attempt + 1 == config.max_restarts
                scaled.init_noise = 0.0 if is_last else scaled.init_noise / 2
            logger.warning(
                "inserted layers for layer %d drawn with seed %d leave %s; drawing "
                "them again with seed %d and init_noise %g",
                scaled.layer,
                seed,
                reason,
                seed + 1,
                scaled.init_noise,
            )
            scaled.reset_inserted(seed + 1)

    if best is None:
        raise RuntimeError(
            f"scaling layer {scaled.layer} failed: the inserted layers from all "
            f"{len(seeds_tried)} initialisation seeds {seeds_tried} left dead "
            f"output units before training (max_restarts={config.max_restarts}). "
            f"The last try left {reason}. Lower init_noise (now "
            f"{scaled.init_noise}) or raise max_restarts."
        )
    log, weights, dead = best
    scaled.inserted.load_state_dict(weights)
    scaled.init_seed = log.init_seed
    log.init_seeds_tried = seeds_tried
    log.dead_units = dead
    logger.warning(
        "every try to scale layer %d left dead output units; keeping the one from "
        "seed %d (Huber loss %.3e), which leaves %s. Lower init_noise (now %g) or "
        "lr, or raise max_restarts.",
        scaled.layer,
        log.init_seed,
        log.losses[-1],
        _describe_dead_units(scaled, dead, "after training"),
        scaled.init_noise,
    )
    _log_result(scaled, log)
    return log


def _log_result(scaled: ScaledMLP, log: ScalingLog) -> None:
    logger.info(
        "scaled layer %d with %d inserted layers (seed %d): Huber loss %.3e after %d "
        "epochs",
        scaled.layer,
        scaled.n_inserted,
        log.init_seed,
        log.losses[-1],
        len(log.losses),
    )


def _train_inserted(
    scaled: ScaledMLP,
    layer_inputs: torch.Tensor,
    targets: torch.Tensor,
    config: ScalingConfig,
    progress: bool,
) -> ScalingLog:
    """Train the inserted layers once from their current weights."""
    layer = scaled.layer
    linear_k = scaled.original.layers[layer]
    optimizer = torch.optim.AdamW(
        scaled.inserted.parameters(),
        lr=config.lr,
        betas=tuple(config.betas),
        weight_decay=config.weight_decay,
    )
    generator = torch.Generator().manual_seed(config.seed)
    device = layer_inputs.device
    n_samples = len(layer_inputs)
    log = ScalingLog()
    was_training = scaled.training
    scaled.train()

    description = f"scaling layer {layer} (seed {scaled.init_seed})"
    bar = epoch_progress_bar(config.epochs, description, progress)
    for epoch in bar:
        huber_sum = torch.zeros((), device=device)
        smoothness_sum = torch.zeros((), device=device)
        linearity_sum = torch.zeros((), device=device)
        for batch in shuffled_batches(n_samples, config.batch_size, generator, device):
            state = layer_inputs[batch]
            states = [state]
            step_sum = state.new_zeros(())
            for linear in scaled.inserted:
                next_state = torch.relu(linear(state))
                if config.smoothness > 0:
                    step_sum = step_sum + (next_state - state).pow(2).mean()
                state = next_state
                states.append(state)
            output = torch.relu(linear_k(state))
            huber = F.huber_loss(output, targets[batch], delta=HUBER_DELTA)
            step_mean = step_sum / scaled.n_inserted
            loss = huber + config.smoothness * step_mean
            residual = huber.new_zeros(())
            if config.linearity > 0:
                padding = output.new_full(
                    (len(output), scaled.d_in - scaled.d_out), config.pad_value
                )
                states.append(torch.cat([output, padding], dim=1))
                residual = recurrence_residual(
                    torch.stack(states, dim=1),
                    config.linearity_delay,
                    rollout=config.linearity_rollout,
                )
                loss = loss + config.linearity * residual

            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            huber_sum += huber.detach() * len(batch)
            smoothness_sum += step_mean.detach() * len(batch)
            linearity_sum += residual.detach() * len(batch)

        epoch_loss = float(huber_sum) / n_samples
        if not math.isfinite(epoch_loss):
            bar.close()
            scaled.train(was_training)
            raise RuntimeError(
                f"scaling loss of layer {layer} became {epoch_loss} in epoch "
                f"{epoch + 1}. Lower lr (now {config.lr})."
            )
        log.losses.append(epoch_loss)
        if config.smoothness > 0:
            log.smoothness_losses.append(float(smoothness_sum) / n_samples)
        if config.linearity > 0:
            log.linearity_losses.append(float(linearity_sum) / n_samples)
        bar.set_postfix(huber=f"{epoch_loss:.3e}", refresh=False)
    bar.close()

    scaled.train(was_training)
    return log


# Ridge term of the per-batch recurrence fit, relative to the mean diagonal entry
# of the Gram matrix. It keeps the solve well posed when states are collinear (ReLU
# units that are zero for the whole batch) and barely biases the fit otherwise.
RECURRENCE_RIDGE = 1e-6


def recurrence_residual(
    states: torch.Tensor, delay: int, rollout: bool = False
) -> torch.Tensor:
    """Fit one affine recurrence to delay windows and return its mean squared error.

    For every trajectory and every t in ``delay..T-2`` the window
    ``[s_{t-delay}; ...; s_t; 1]`` predicts ``s_{t+1}``. One matrix, shared by all
    trajectories and times, is fitted to these pairs by ridge regression (ridge
    ``RECURRENCE_RIDGE`` times the mean diagonal entry of the Gram matrix). The
    result is differentiable with respect to ``states``, through the fit.

    Parameters
    ----------
    states : torch.Tensor of shape (batch, T, d)
        Trajectories of T states of width d.
    delay : int
        Delay h, from 0 to T - 2.
    rollout : bool, default False
        If False, return the mean squared one-step residual of the fit. If True,
        start from the first window ``[s_0; ...; s_h]`` of each trajectory, feed
        every prediction back into the window as a Koopman hybrid does, and return
        the mean squared error of the predicted ``s_{h+1}..s_{T-1}``. Unlike the
        one-step residual, this also grows with the amplification of errors by an
        unstable recurrence.

    Returns
    -------
    torch.Tensor
        Scalar mean squared error, 0 when the pairs follow an affine recurrence
        exactly (up to the ridge term).
    """
    batch, n_states, width = states.shape
    if not 0 <= delay <= n_states - 2:
        raise ValueError(
            f"delay must be in 0..{n_states - 2} for trajectories of {n_states} "
            f"states, got {delay}"
        )
    # The fit runs in float64: the Gram matrix squares the condition number.
    trajectories = states.double()
    # Windows as rows, oldest state first, with a trailing 1 for the affine term.
    windows = trajectories.unfold(1, delay + 1, 1)[:, :-1]
    windows = windows.transpose(2, 3).reshape(-1, (delay + 1) * width)
    ones = windows.new_ones((len(windows), 1))
    X = torch.cat([windows, ones], dim=1)
    Y = trajectories[:, delay + 1 :].reshape(-1, width)
    gram = X.T @ X
    ridge = RECURRENCE_RIDGE * gram.diagonal().mean()
    eye = torch.eye(len(gram), dtype=gram.dtype, device=gram.device)
    coefficients = torch.linalg.solve(gram + ridge * eye, X.T @ Y)
    if not rollout:
        return (Y - X @ coefficients).pow(2).mean().to(states.dtype)

    window = list(trajectories[:, : delay + 1].unbind(dim=1))
    ones = trajectories.new_ones((batch, 1))
    predictions = []
    for _ in range(n_states - 1 - delay):
        prediction = torch.cat([*window, ones], dim=1) @ coefficients
        predictions.append(prediction)
        window = [*window[1:], prediction]
    predicted = torch.stack(predictions, dim=1)
    error = predicted - trajectories[:, delay + 1 :]
    return error.pow(2).mean().to(states.dtype)


@torch.no_grad()
def _dead_output_units(
    scaled: ScaledMLP, layer_inputs: torch.Tensor, checked_units: torch.Tensor
) -> list[int]:
    """Return the checked layer-k output units that are zero for every input."""
    ever_active = torch.zeros_like(checked_units)
    for start in range(0, len(layer_inputs), FORWARD_BATCH_SIZE):
        s0 = layer_inputs[start : start + FORWARD_BATCH_SIZE]
        last = scaled.run_inserted(s0)[-1]
        output = scaled.original.run_layers(last, scaled.layer, scaled.layer + 1)
        ever_active |= (output > 0).any(dim=0)
    dead = checked_units & ~ever_active
    return dead.nonzero().flatten().tolist()


def _describe_dead_units(scaled: ScaledMLP, units: list[int], when: str) -> str:
    return (
        f"{len(units)} of {scaled.d_out} layer-{scaled.layer} output units {units} "
        f"at zero for every training input {when}"
    )
