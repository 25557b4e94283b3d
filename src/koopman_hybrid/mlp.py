"""Multilayer perceptron of Linear + ReLU layers: training, accuracy and safetensors files.

An MLP with widths ``[w_0, ..., w_L]`` has ``L`` layers numbered ``0..L-1``. Layer ``i``
is ``Linear(w_i, w_{i+1})`` followed by a ReLU, except the last layer, which is Linear
only and returns the logits. The hidden layers ``1..L-2`` are the ones a Koopman hybrid
can replace.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm

from .files import atomic_path

__all__ = [
    "MLP",
    "TrainConfig",
    "TrainLog",
    "accuracy",
    "as_mlp",
    "check_hidden_layer",
    "check_inputs",
    "layer_inputs_and_outputs",
    "load_mlp",
    "restart_seed",
    "save_mlp",
    "train_classifier",
]

logger = logging.getLogger(__name__)

# Keys of the safetensors header metadata written by save_mlp. Header values must be
# strings, so both hold JSON text.
METADATA_KEY = "koopman_hybrid.metadata"
WIDTHS_KEY = "koopman_hybrid.widths"

# A dead ReLU network returns bit-identical logits for every input, because some layer
# outputs only zeros. The relative tolerance also catches networks that are one step
# away from that state, while float32 round-off alone stays near 1e-7.
CONSTANT_LOGITS_RTOL = 1e-5

# The constant-logits check during training looks at the first rows of the training
# data only, so that it costs one small forward pass.
MONITOR_ROWS = 2048

# Rows per forward pass in layer_inputs_and_outputs.
FORWARD_BATCH_SIZE = 8192

# Restart r after a dead network trains from seed + RESTART_SEED_STRIDE * r. The stride
# keeps restart seeds apart from the first seeds of runs whose seeds differ by less
# than the stride, such as best-of-K seed candidates seed, seed + 1, ..., seed + K - 1.
RESTART_SEED_STRIDE = 1000

# safetensors files start with the 8-byte little-endian length of their JSON header.
# These signatures identify the two formats a PyTorch checkpoint usually comes in.
_ZIP_SIGNATURE = b"PK\x03\x04"
# Pickles of protocol 2 and later start with the PROTO opcode.
_PICKLE_PROTO_OPCODE = b"\x80"


class MLP(nn.Module):
    """Multilayer perceptron of Linear + ReLU layers whose last layer is Linear only.

    Parameters
    ----------
    widths : sequence of int
        Layer widths ``[w_0, ..., w_L]``: input width, hidden widths, number of
        classes. At least two entries, each at least 1.
    generator : torch.Generator, optional
        CPU generator for the initial weights. Without it, the weights come from
        torch's global random state, as for a plain ``nn.Linear``.

    Attributes
    ----------
    widths : tuple of int
        The layer widths.
    layers : nn.ModuleList of nn.Linear
        Layer ``i`` maps ``widths[i]`` to ``widths[i + 1]`` features.
    """

    def __init__(
        self, widths: Sequence[int], *, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        self.widths = check_widths(widths)
        self.layers = nn.ModuleList(
            nn.utils.skip_init(nn.Linear, n_in, n_out)
            for n_in, n_out in zip(self.widths[:-1], self.widths[1:])
        )
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Draw new weights and biases from U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

        This is the distribution that ``nn.Linear`` uses by default (Kaiming uniform
        with ``a = sqrt(5)``), drawn from ``generator`` when one is given.
        """
        with torch.no_grad():
            for linear in self.layers:
                bound = 1.0 / math.sqrt(linear.in_features)
                nn.init.uniform_(linear.weight, -bound, bound, generator=generator)
                nn.init.uniform_(linear.bias, -bound, bound, generator=generator)

    @property
    def n_layers(self) -> int:
        """Number of layers L (one less than the number of widths)."""
        return len(self.layers)

    @property
    def hidden_layers(self) -> range:
        """Indices of the replaceable hidden layers, ``range(1, L - 1)``."""
        return range(1, self.n_layers - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run_layers(x, 0, self.n_layers)

    def run_layers(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Apply layers ``start..stop-1`` to ``x``.

        Each layer is followed by a ReLU, except the network's last layer.

        Parameters
        ----------
        x : torch.Tensor of shape (batch, widths[start])
            Input of layer ``start``.
        start, stop : int
            First layer to run and one past the last, with
            ``0 <= start <= stop <= L``. ``start == stop`` returns ``x``.

        Returns
        -------
        torch.Tensor of shape (batch, widths[stop])
        """
        if not 0 <= start <= stop <= self.n_layers:
            raise ValueError(
                f"invalid layer range start={start}, stop={stop}: need "
                f"0 <= start <= stop <= {self.n_layers} for this {self.n_layers}-layer "
                "network"
            )
        for index in range(start, stop):
            x = self.layers[index](x)
            if index < self.n_layers - 1:
                x = torch.relu(x)
        return x

    def extra_repr(self) -> str:
        return f"widths={self.widths}"


def check_widths(widths: Sequence[int]) -> tuple[int, ...]:
    """Return ``widths`` as a tuple of int after checking it describes an MLP.

    Raises
    ------
    TypeError
        If ``widths`` is not a sequence of integers.
    ValueError
        If it has fewer than two entries or an entry below 1.
    """
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence):
        raise TypeError(
            f"widths must be a sequence of int such as (2, 8, 2), got "
            f"{type(widths).__name__}"
        )
    for width in widths:
        if isinstance(width, bool) or not isinstance(width, numbers.Integral):
            raise TypeError(
                f"widths must contain int values, got {width!r} of type "
                f"{type(width).__name__} in {list(widths)}"
            )
    if len(widths) < 2:
        raise ValueError(
            f"widths {list(widths)} needs at least two entries: the input width and "
            "the number of classes"
        )
    if min(widths) < 1:
        raise ValueError(f"every width must be at least 1, got {list(widths)}")
    return tuple(int(width) for width in widths)


def as_mlp(module: nn.Module) -> MLP:
    """Return ``module`` as an :class:`MLP`.

    An MLP is returned unchanged. An ``nn.Sequential`` of ``Linear, ReLU, Linear,
    ..., Linear`` is wrapped in a new MLP that shares its Linear modules, so no
    weights are copied.

    Parameters
    ----------
    module : MLP or nn.Sequential
        The network. Every Linear needs a bias, and the output width of each Linear
        must equal the input width of the next.

    Returns
    -------
    MLP

    Raises
    ------
    TypeError
        If ``module`` is neither an MLP nor an ``nn.Sequential``, or one of its
        submodules is neither ``nn.Linear`` nor ``nn.ReLU``.
    ValueError
        If the submodules do not alternate Linear and ReLU, the last one is not a
        Linear, a Linear has no bias, or consecutive widths do not match.
    """
    if isinstance(module, MLP):
        return module
    supported = (
        "Supported are an MLP, or an nn.Sequential of Linear and ReLU modules that "
        "alternate and end with a Linear."
    )
    if not isinstance(module, nn.Sequential):
        raise TypeError(f"cannot use a {type(module).__name__} as an MLP. {supported}")
    children = list(module.named_children())
    if not children:
        raise ValueError(f"the nn.Sequential is empty. {supported}")

    linears: list[nn.Linear] = []
    for position, (name, child) in enumerate(children):
        if not isinstance(child, (nn.Linear, nn.ReLU)):
            raise TypeError(
                f"submodule {name} is a {type(child).__name__}. {supported}"
            )
        expected = nn.Linear if position % 2 == 0 else nn.ReLU
        if not isinstance(child, expected):
            raise ValueError(
                f"submodule {name} is a {type(child).__name__} where a "
                f"{expected.__name__} belongs. {supported}"
            )
        if isinstance(child, nn.Linear):
            if child.bias is None:
                raise ValueError(
                    f"submodule {name} is a Linear without bias, but every layer of "
                    "an MLP has a bias"
                )
            if linears and linears[-1].out_features != child.in_features:
                raise ValueError(
                    f"submodule {name} takes {child.in_features} features but the "
                    f"Linear before it returns {linears[-1].out_features}"
                )
            linears.append(child)
    last_name, last_child = children[-1]
    if not isinstance(last_child, nn.Linear):
        raise ValueError(
            f"the last submodule {last_name} is a {type(last_child).__name__}. "
            f"{supported}"
        )

    widths = [linears[0].in_features] + [linear.out_features for linear in linears]
    model = MLP(widths, generator=torch.Generator().manual_seed(0))
    model.layers = nn.ModuleList(linears)
    return model


def check_hidden_layer(model: MLP, layer: int) -> int:
    """Return ``layer`` as an int after checking it is a hidden layer of ``model``.

    Hidden layers are ``1..L-2``. Layer 0 reads the raw input, and layer ``L-1``
    returns the logits without a ReLU, so neither can be replaced.

    Raises
    ------
    TypeError
        If ``model`` is not an MLP.
    ValueError
        If ``layer`` is not an int, or not in ``1..L-2``.
    """
    if not isinstance(model, MLP):
        raise TypeError(
            f"model must be an MLP, got {type(model).__name__}. Convert an "
            "nn.Sequential with as_mlp."
        )
    n_layers = model.n_layers
    if n_layers < 3:
        raise ValueError(
            f"the network with widths {model.widths} has {n_layers} layers and no "
            "hidden layer to replace: it needs at least 3 layers"
        )
    valid = f"Choose a hidden layer in 1..{n_layers - 2}."
    if isinstance(layer, bool) or not isinstance(layer, numbers.Integral):
        raise ValueError(f"layer must be an int, got {layer!r}. {valid}")
    layer = int(layer)
    if layer == 0:
        raise ValueError(
            f"layer 0 is the input layer, whose input is the raw data, so it cannot "
            f"be replaced. {valid}"
        )
    if layer == n_layers - 1:
        raise ValueError(
            f"layer {layer} is the output layer, which has no ReLU, so it cannot be "
            f"replaced. {valid}"
        )
    if not 1 <= layer <= n_layers - 2:
        raise ValueError(
            f"layer {layer} is out of range for a {n_layers}-layer network. {valid}"
        )
    return layer


@torch.no_grad()
def layer_inputs_and_outputs(
    model: MLP, x: torch.Tensor, layer: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the inputs and outputs of hidden ``layer`` for the network inputs ``x``.

    Runs in eval mode and in batches of ``FORWARD_BATCH_SIZE`` rows, without
    gradients, and restores the model's training mode.
    """
    was_training = model.training
    model.eval()
    inputs = []
    outputs = []
    for start in range(0, len(x), FORWARD_BATCH_SIZE):
        s0 = model.run_layers(x[start : start + FORWARD_BATCH_SIZE], 0, layer)
        inputs.append(s0)
        outputs.append(model.run_layers(s0, layer, layer + 1))
    model.train(was_training)
    return torch.cat(inputs), torch.cat(outputs)


def check_inputs(
    x: Any, n_features: int, name: str, device: torch.device | None = None
) -> None:
    """Check that ``x`` is a batch of network inputs.

    Parameters
    ----------
    x : object
        The value to check.
    n_features : int
        Input width of the network, ``widths[0]``.
    name : str
        Argument name used in error messages.
    device : torch.device, optional
        Device that ``x`` must be on. Not checked if None.

    Raises
    ------
    TypeError
        If ``x`` is not a floating-point torch tensor.
    ValueError
        If ``x`` does not have shape (n_samples, n_features) with n_samples >= 1, or
        is not on ``device``.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch tensor, got {type(x).__name__}")
    if x.ndim != 2 or x.shape[1] != n_features or len(x) == 0:
        raise ValueError(
            f"{name} must have shape (n_samples, {n_features}) with n_samples >= 1, "
            f"got {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {x.dtype}")
    if device is not None and x.device != device:
        raise ValueError(
            f"{name} is on {x.device} but the network on {device}. Move both to one "
            "device."
        )


@dataclass(frozen=True)
class TrainConfig:
    """Settings of :func:`train_classifier`.

    Parameters
    ----------
    epochs : int
        Maximum number of passes over the training data.
    batch_size : int
        Mini-batch size.
    lr, weight_decay : float
        AdamW learning rate and decoupled weight decay.
    betas : tuple of float
        AdamW coefficients of the running gradient averages.
    seed : int
        Seed of the first try. It seeds one CPU generator that draws the initial
        weights and then the mini-batch order. Restart r after a dead network uses
        ``restart_seed(seed, r)``, that is ``seed + 1000 * r``.
    plateau : bool
        Reduce the learning rate by ``plateau_factor`` when the mean training loss
        has not improved for ``plateau_patience`` epochs (``ReduceLROnPlateau``).
    plateau_factor : float
        Factor in (0, 1) that the learning rate is multiplied by on a plateau.
    plateau_patience : int
        Epochs without improvement before the learning rate drops.
    target_accuracy : float or None
        Stop early once the training accuracy of an epoch, counted on the
        mini-batches as they were trained, reaches this value in (0, 1].
    max_restarts : int
        Restarts allowed after dead networks before training fails.
    dead_check_every : int
        Epochs between checks for constant logits during training.
    chance_margin : float
        A trained network whose training accuracy is at most the majority-class
        fraction plus this margin counts as dead.
    eval_every : int
        Epochs between measurements of the validation accuracy.
    """

    epochs: int = 100
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-2
    betas: tuple[float, float] = (0.9, 0.999)
    seed: int = 0
    plateau: bool = False
    plateau_factor: float = 0.5
    plateau_patience: int = 5
    target_accuracy: float | None = None
    max_restarts: int = 3
    dead_check_every: int = 25
    chance_margin: float = 0.02
    eval_every: int = 10

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "dead_check_every", "eval_every"):
            _check_int(name, getattr(self, name), minimum=1)
        for name in ("seed", "max_restarts", "plateau_patience"):
            _check_int(name, getattr(self, name), minimum=0)
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        check_betas(self.betas)
        if not 0 < self.plateau_factor < 1:
            raise ValueError(
                f"plateau_factor must be in (0, 1), got {self.plateau_factor}"
            )
        if self.target_accuracy is not None and not 0 < self.target_accuracy <= 1:
            raise ValueError(
                f"target_accuracy must be in (0, 1] or None, got {self.target_accuracy}"
            )
        if not 0 <= self.chance_margin < 1:
            raise ValueError(
                f"chance_margin must be in [0, 1), got {self.chance_margin}"
            )


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")


def check_betas(betas: Sequence[float]) -> None:
    """Check that ``betas`` is a pair of AdamW coefficients in [0, 1)."""
    if len(betas) != 2 or not all(0 <= beta < 1 for beta in betas):
        raise ValueError(f"betas must be two numbers in [0, 1), got {betas}")


@dataclass
class TrainLog:
    """Record of one :func:`train_classifier` call.

    Per-epoch lists cover the returned network's try only.

    Attributes
    ----------
    seeds_tried : list of int
        Seeds of every try in order. The last one made the returned network.
    losses : list of float
        Mean cross-entropy over the training data, per epoch.
    train_accuracies : list of float
        Training accuracy per epoch, counted on the mini-batches as they were
        trained.
    val_epochs : list of int
        Epochs (counted from 1) at which the validation accuracy was measured.
    val_accuracies : list of float
        Validation accuracy at each of ``val_epochs``.
    final_loss : float
        Mean training loss of the last epoch.
    final_accuracy : float
        Training accuracy of the returned network, measured after training.
    epochs_run : int
        Epochs trained in the last try.
    stopped_early : bool
        Whether training stopped at ``target_accuracy``.
    """

    seeds_tried: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    train_accuracies: list[float] = field(default_factory=list)
    val_epochs: list[int] = field(default_factory=list)
    val_accuracies: list[float] = field(default_factory=list)
    final_loss: float = math.nan
    final_accuracy: float = math.nan
    epochs_run: int = 0
    stopped_early: bool = False


def train_classifier(
    widths: Sequence[int],
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    config: TrainConfig,
    val_x: torch.Tensor | None = None,
    val_y: torch.Tensor | None = None,
    *,
    progress: bool = True,
) -> tuple[MLP, TrainLog]:
    """Train an MLP classifier with AdamW and cross-entropy, restarting dead networks.

    A ReLU network is dead when some layer outputs zeros for every input, so that
    its logits are the same for all inputs. Training checks for constant logits every
    ``config.dead_check_every`` epochs, and after the last epoch also counts a
    training accuracy at chance level (majority-class fraction plus
    ``config.chance_margin``) as dead. A dead network is trained again from the next
    seed (see :func:`restart_seed`), with a logged warning. Evaluation uses no random
    numbers, so validation data does not change the trained network.

    Parameters
    ----------
    widths : sequence of int
        Layer widths: ``widths[0]`` is the number of input features and
        ``widths[-1]`` the number of classes.
    train_x : torch.Tensor of shape (n_samples, widths[0])
        Floating-point training inputs. The network is trained on their device.
    train_y : torch.Tensor of shape (n_samples,)
        Integer class labels in ``0..widths[-1]-1``, at least two classes.
    config : TrainConfig
        Optimiser, schedule and restart settings.
    val_x, val_y : torch.Tensor, optional
        Validation data, measured every ``config.eval_every`` epochs and after the
        last one. Give both or neither.
    progress : bool, default True
        Show a progress bar over epochs when standard error is a terminal.

    Returns
    -------
    model : MLP
        The trained network in eval mode, on the device of ``train_x``.
    log : TrainLog
        Seeds tried and per-epoch loss and accuracy of the returned network.

    Raises
    ------
    TypeError, ValueError
        If the data do not match ``widths`` or ``config`` is not a TrainConfig.
    RuntimeError
        If the network is still dead after ``config.max_restarts`` restarts, or the
        training loss becomes NaN or infinite.
    """
    widths = check_widths(widths)
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    _check_labelled(train_x, train_y, widths, "train")
    if (val_x is None) != (val_y is None):
        raise ValueError("give both val_x and val_y, or neither")
    if val_x is not None:
        _check_labelled(val_x, val_y, widths, "val")

    class_counts = torch.bincount(train_y, minlength=widths[-1])
    if int((class_counts > 0).sum()) < 2:
        raise ValueError(
            "train_y contains a single class, but a classifier needs at least two"
        )
    chance = float(class_counts.max()) / len(train_y)

    seeds_tried: list[int] = []
    reason = ""
    for restart in range(config.max_restarts + 1):
        seed = restart_seed(config.seed, restart)
        seeds_tried.append(seed)
        model, log, reason = _train_one_seed(
            widths, train_x, train_y, config, seed, val_x, val_y, chance, progress
        )
        if not reason:
            log.seeds_tried = seeds_tried
            return model, log
        if restart < config.max_restarts:
            logger.warning(
                "network trained with seed %d is dead (%s). Restart %d of %d trains "
                "with seed %d.",
                seed,
                reason,
                restart + 1,
                config.max_restarts,
                restart_seed(config.seed, restart + 1),
            )
        else:
            logger.warning("network trained with seed %d is dead (%s)", seed, reason)

    raise RuntimeError(
        f"training failed: the networks from all {len(seeds_tried)} seeds "
        f"{seeds_tried} were dead (max_restarts={config.max_restarts}). The last one "
        f"was dead because {reason}. Raise max_restarts, lower lr or train for more "
        "epochs."
    )


def epoch_progress_bar(epochs: int, description: str, progress: bool) -> tqdm:
    """Return a progress bar over ``range(epochs)`` that is removed when closed.

    With ``progress`` true the bar shows only when standard error is a terminal.
    """
    return tqdm(
        range(epochs),
        desc=description,
        unit="epoch",
        disable=None if progress else True,
        leave=False,
    )


def shuffled_batches(
    n_samples: int,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device | str,
) -> Iterator[torch.Tensor]:
    """Yield the row indices of one epoch's mini-batches in a random order.

    The order is one ``torch.randperm`` draw from the CPU ``generator``, made when
    iteration starts, so a seed gives the same batches on every device. The last
    batch is smaller when ``batch_size`` does not divide ``n_samples``.
    """
    order = torch.randperm(n_samples, generator=generator).to(device)
    for start in range(0, n_samples, batch_size):
        yield order[start : start + batch_size]


def restart_seed(seed: int, restart: int) -> int:
    """Return the seed of restart ``restart`` of a training run that began at ``seed``.

    Restart 0 is the first try and uses ``seed`` itself. Restart r uses
    ``seed + RESTART_SEED_STRIDE * r`` (stride 1000), so the restarts of one run never
    reuse the first seed of a run whose seed differs by less than 1000.

    Examples
    --------
    >>> [restart_seed(2, restart) for restart in range(3)]
    [2, 1002, 2002]
    """
    return seed + RESTART_SEED_STRIDE * restart


def _train_one_seed(
    widths: tuple[int, ...],
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    config: TrainConfig,
    seed: int,
    val_x: torch.Tensor | None,
    val_y: torch.Tensor | None,
    chance: float,
    progress: bool,
) -> tuple[MLP, TrainLog, str]:
    """Train one network from ``seed``. The returned reason is empty unless it died."""
    device = train_x.device
    generator = torch.Generator().manual_seed(seed)
    model = MLP(widths, generator=generator).to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=config.lr,
        betas=tuple(config.betas),
        weight_decay=config.weight_decay,
    )
    scheduler = None
    if config.plateau:
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=config.plateau_factor, patience=config.plateau_patience
        )
    log = TrainLog()
    monitor_x = train_x[:MONITOR_ROWS]
    n_samples = len(train_x)

    bar = epoch_progress_bar(config.epochs, f"training (seed {seed})", progress)
    for epoch in bar:
        model.train()
        loss_sum = torch.zeros((), device=device)
        n_correct = torch.zeros((), dtype=torch.int64, device=device)
        for batch in shuffled_batches(n_samples, config.batch_size, generator, device):
            labels = train_y[batch]
            logits = model(train_x[batch])
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(batch)
            n_correct += (logits.detach().argmax(dim=1) == labels).sum()

        epoch_loss = float(loss_sum) / n_samples
        epoch_accuracy = int(n_correct) / n_samples
        if not math.isfinite(epoch_loss):
            bar.close()
            raise RuntimeError(
                f"training loss became {epoch_loss} in epoch {epoch + 1} with seed "
                f"{seed}. Lower lr (now {config.lr})."
            )
        log.losses.append(epoch_loss)
        log.train_accuracies.append(epoch_accuracy)
        log.epochs_run = epoch + 1
        if scheduler is not None:
            scheduler.step(epoch_loss)
        bar.set_postfix(
            loss=f"{epoch_loss:.4f}", acc=f"{epoch_accuracy:.3f}", refresh=False
        )

        last_epoch = epoch + 1 == config.epochs
        reached_target = (
            config.target_accuracy is not None
            and epoch_accuracy >= config.target_accuracy
        )
        if val_x is not None and (
            (epoch + 1) % config.eval_every == 0 or last_epoch or reached_target
        ):
            log.val_epochs.append(epoch + 1)
            log.val_accuracies.append(accuracy(model, val_x, val_y))
        if (epoch + 1) % config.dead_check_every == 0 and logits_constant(
            model, monitor_x
        ):
            bar.close()
            return model, log, f"its logits were constant after epoch {epoch + 1}"
        if reached_target:
            log.stopped_early = True
            break
    bar.close()

    model.eval()
    log.final_loss = log.losses[-1]
    log.final_accuracy = accuracy(model, train_x, train_y)
    if logits_constant(model, monitor_x):
        return model, log, "its logits were constant after training"
    if log.final_accuracy <= chance + config.chance_margin:
        return (
            model,
            log,
            (
                f"its training accuracy {log.final_accuracy:.4f} is at chance level "
                f"(majority class {chance:.4f}, margin {config.chance_margin})"
            ),
        )
    return model, log, ""


def _check_labelled(
    x: torch.Tensor, y: torch.Tensor, widths: tuple[int, ...], prefix: str
) -> None:
    check_inputs(x, widths[0], f"{prefix}_x")
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{prefix}_y must be a torch tensor, got {type(y).__name__}")
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(
            f"{prefix}_y must have shape ({len(x)},) to match {prefix}_x, got "
            f"{tuple(y.shape)}"
        )
    if y.dtype != torch.int64:
        raise TypeError(f"{prefix}_y must hold int64 labels, got {y.dtype}")
    if x.device != y.device:
        raise ValueError(
            f"{prefix}_x is on {x.device} but {prefix}_y on {y.device}. Move both to "
            "one device."
        )
    if int(y.min()) < 0 or int(y.max()) >= widths[-1]:
        raise ValueError(
            f"{prefix}_y contains labels from {int(y.min())} to {int(y.max())}, but "
            f"widths {widths} give {widths[-1]} classes (labels 0..{widths[-1] - 1})"
        )


@torch.no_grad()
def logits_constant(model: nn.Module, x: torch.Tensor) -> bool:
    """Return whether ``model`` gives (nearly) the same logits for every row of ``x``.

    Fewer than two rows give False, because one row cannot show it.
    """
    if len(x) < 2:
        return False
    was_training = model.training
    model.eval()
    logits = model(x)
    model.train(was_training)
    spread = float((logits - logits[0]).abs().max())
    scale = float(logits[0].abs().max())
    return spread <= CONSTANT_LOGITS_RTOL * (1.0 + scale)


@torch.no_grad()
def accuracy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 8192
) -> float:
    """Compute the fraction of rows of ``x`` whose largest logit is at label ``y``.

    The model runs in eval mode without gradients, ``batch_size`` rows at a time,
    and is put back into the mode it was in.

    Parameters
    ----------
    model : nn.Module
        Classifier returning logits of shape (batch, n_classes).
    x : torch.Tensor of shape (n_samples, n_features)
        Inputs, on the model's device.
    y : torch.Tensor of shape (n_samples,)
        Integer labels.
    batch_size : int, default 8192
        Rows per forward pass.

    Returns
    -------
    float
        Accuracy in [0, 1].

    Raises
    ------
    ValueError
        If ``x`` is empty or not 2-D, or ``y`` does not have one label per row.
    """
    _check_int("batch_size", batch_size, minimum=1)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(
            f"x must be a non-empty array of shape (n_samples, n_features), got "
            f"{tuple(x.shape)}"
        )
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(
            f"y must have shape ({len(x)},) to match x, got {tuple(y.shape)}"
        )
    was_training = model.training
    model.eval()
    n_correct = 0
    for start in range(0, len(x), batch_size):
        logits = model(x[start : start + batch_size])
        labels = y[start : start + batch_size].to(logits.device)
        n_correct += int((logits.argmax(dim=1) == labels).sum())
    model.train(was_training)
    return n_correct / len(x)


def save_mlp(
    path: str | os.PathLike[str], model: nn.Module, metadata: dict | None = None
) -> None:
    """Write the weights of ``model`` and ``metadata`` to a safetensors file.

    The file contains one float tensor per weight and bias (names as in
    ``MLP.state_dict()``) and two header entries: ``koopman_hybrid.widths`` and
    ``koopman_hybrid.metadata``, both JSON text. The write is atomic.

    Parameters
    ----------
    path : str or os.PathLike
        Destination, usually ending in ``.safetensors``. Parent folders are created.
    model : MLP or nn.Sequential
        The network; see :func:`as_mlp`.
    metadata : dict, optional
        JSON-serialisable settings to store with the weights (dataset, seed,
        accuracy, ...).

    Raises
    ------
    TypeError
        If ``metadata`` is not a dict or not JSON-serialisable, or ``model`` is not
        an MLP.
    """
    model = as_mlp(model)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
    try:
        metadata_text = json.dumps(metadata)
    except TypeError as error:
        raise TypeError(f"metadata must be JSON-serialisable: {error}") from None

    tensors = {
        name: tensor.detach().to("cpu").contiguous()
        for name, tensor in model.state_dict().items()
    }
    header = {WIDTHS_KEY: json.dumps(list(model.widths)), METADATA_KEY: metadata_text}
    with atomic_path(path) as temporary:
        save_file(tensors, str(temporary), metadata=header)


def load_mlp(
    path: str | os.PathLike[str], expected_widths: Sequence[int] | None = None
) -> tuple[MLP, dict]:
    """Read a network written by :func:`save_mlp`, without unpickling anything.

    Parameters
    ----------
    path : str or os.PathLike
        The safetensors file.
    expected_widths : sequence of int, optional
        Widths the stored network must have.

    Returns
    -------
    model : MLP
        The network on the CPU, in eval mode.
    metadata : dict
        The metadata given to ``save_mlp``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If ``path`` is not a safetensors file, has no widths entry, contains weights
        for other widths than ``expected_widths``, or lacks or adds tensors.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"network file {path} not found. Check the path.")
    if not path.is_file():
        raise ValueError(f"{path} is not a file. Give the path of a .safetensors file.")
    if expected_widths is not None:
        expected_widths = check_widths(expected_widths)

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            header = handle.metadata() or {}
            widths = _read_widths(path, header)
            if expected_widths is not None and widths != expected_widths:
                raise ValueError(
                    f"{path} contains a network with widths {list(widths)}, but widths "
                    f"{list(expected_widths)} were expected. Train a network for "
                    "these widths or load another file."
                )
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except SafetensorError as error:
        raise ValueError(
            f"{path} is not a safetensors file ({error}). {_fix_for_other_format(path)}"
        ) from None

    model = MLP(widths, generator=torch.Generator().manual_seed(0))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing:
        raise ValueError(
            f"{path} lacks tensors {missing} of an MLP with widths {list(widths)}"
        )
    if extra:
        raise ValueError(
            f"{path} has tensors {extra} that an MLP with widths {list(widths)} "
            "does not have"
        )
    for name, tensor in expected.items():
        if tensors[name].shape != tensor.shape:
            raise ValueError(
                f"{path}: tensor {name} has shape {tuple(tensors[name].shape)}, but "
                f"widths {list(widths)} need {tuple(tensor.shape)}"
            )
    model.load_state_dict(tensors)
    model.eval()

    metadata_text = header.get(METADATA_KEY, "{}")
    try:
        metadata = json.loads(metadata_text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: the metadata entry is not JSON ({error})") from None
    return model, metadata


def _fix_for_other_format(path: Path) -> str:
    """Return what to do with a file that safetensors cannot read."""
    with open(path, "rb") as stream:
        start = stream.read(len(_ZIP_SIGNATURE))
    if start.startswith(_ZIP_SIGNATURE) or start[:1] == _PICKLE_PROTO_OPCODE:
        return (
            "It looks like a PyTorch checkpoint (torch.save writes a zip archive or a "
            "pickle), which load_mlp does not open because unpickling can run any "
            "code. If you trust the file, load it with torch.load, build the MLP and "
            "write it with save_mlp."
        )
    return "Give a file written by save_mlp."


def _read_widths(path: Path, header: dict[str, str]) -> tuple[int, ...]:
    if WIDTHS_KEY not in header:
        raise ValueError(
            f"{path} has no {WIDTHS_KEY!r} header entry, so save_mlp did not write "
            "it. Give a file written by save_mlp."
        )
    try:
        widths = json.loads(header[WIDTHS_KEY])
        return check_widths(widths)
    except (json.JSONDecodeError, TypeError, ValueError) as error:
        raise ValueError(
            f"{path}: invalid {WIDTHS_KEY!r} header entry "
            f"{header[WIDTHS_KEY]!r} ({error})"
        ) from None
