"""The main job: train, scale each hidden layer, fit DMD and evaluate Koopman hybrids.

:func:`run_reproduction` chains the steps and writes ``results.json``. Trained networks
are saved beside it, keyed by the settings that made them, so that a rerun with the
same settings reuses them instead of training again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__
from .datasets import Dataset, load_dataset
from .dmd import DMD, RankPolicy
from .files import atomic_write_json
from .hybrid import KoopmanHybrid, fit_least_squares_layer, replace_layer
from .mlp import MLP, TrainConfig, accuracy, check_hidden_layer, load_mlp, save_mlp
from .mlp import TrainLog, train_classifier
from .scaling import ScaledMLP, ScalingConfig, train_scaling
from .trajectories import collect_trajectories

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HybridSpec:
    """One hybrid to fit: delay h, number of trajectories N and rank policy."""

    delay: int
    n_trajectories: int
    rank: str = "svht"
    variant: str = "delay"


@dataclass(frozen=True)
class ExperimentConfig:
    """Every setting of one reproduction run; saved beside its results.

    ``delays`` and ``trajectories`` span the grid of hybrids fitted for each layer;
    ``linear_variant`` adds the fully linear hybrid (delay 0: no inserted layer runs
    at inference) for every N. ``seed_candidates`` networks are trained from seeds
    ``train.seed``, ``train.seed + 1``, ... and the one with the highest training
    accuracy is kept; the test set plays no part in that choice.
    """

    dataset: str
    widths: tuple[int, ...]
    train: TrainConfig
    scaling: ScalingConfig
    layers: tuple[int, ...] = (1, 2, 3)
    delays: tuple[int, ...] = (10,)
    trajectories: tuple[int, ...] = (1000,)
    ranks: tuple[str, ...] = ("svht",)
    linear_variant: bool = True
    seed_candidates: int = 1
    pad_value: float = -0.5
    constant: bool = True
    device: str = "cpu"

    def hybrid_specs(self) -> list[HybridSpec]:
        specs = [
            HybridSpec(delay, n_trajectories, rank)
            for delay in self.delays
            for n_trajectories in self.trajectories
            for rank in self.ranks
        ]
        if self.linear_variant:
            specs += [
                HybridSpec(0, n_trajectories, rank, variant="linear")
                for n_trajectories in self.trajectories
                for rank in self.ranks
            ]
        return specs

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def training_key(config: ExperimentConfig) -> str:
    """Return a short hash of the settings that decide the original network."""
    return _hash_json(
        {
            "dataset": config.dataset,
            "widths": config.widths,
            "train": config.train,
            "seed_candidates": config.seed_candidates,
        }
    )


def scaling_key(config: ExperimentConfig, layer: int) -> str:
    """Return a short hash of the settings that decide one scaled network."""
    return _hash_json(
        {"original": training_key(config), "scaling": config.scaling, "layer": layer}
    )


def _hash_json(value: Any) -> str:
    text = json.dumps(_jsonable(value), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    return value


def resolve_device(name: str) -> torch.device:
    """Return the torch device for ``"cpu"`` or ``"cuda"``, checking it exists.

    Raises
    ------
    ValueError
        If ``name`` is another value, or ``"cuda"`` where torch finds no GPU.
    """
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                "device 'cuda' was requested but torch sees no CUDA GPU "
                f"(torch {torch.__version__}): use --device cpu"
            )
        return torch.device("cuda")
    raise ValueError(f"invalid device {name!r}: use 'cpu' or 'cuda'")


@dataclass
class LayerState:
    """A scaled hidden layer with the trajectories collected from it."""

    layer: int
    scaled: ScaledMLP
    scaled_accuracy: float
    trajectories: np.ndarray
    least_squares_accuracy: float
    scaling_loss: float | None = None


@dataclass
class StageTimer:
    """Wall time per named stage, in seconds, summed over repeats."""

    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, started: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - started


def train_or_load_original(
    config: ExperimentConfig, data: Dataset, out_dir: Path, device: torch.device
) -> tuple[MLP, float]:
    """Train the original network, or load it from ``out_dir`` if its settings match.

    Returns the network (on ``device``, in eval mode) and its test accuracy.
    """
    path = out_dir / "model.safetensors"
    key = training_key(config)
    if path.exists():
        # Widths are part of the key, so a network of other widths is trained again.
        model, metadata = load_mlp(path)
        if metadata.get("training_key") == key:
            logger.info("reusing the trained network in %s", path)
            model = model.to(device).eval()
            return model, float(metadata["test_accuracy"])
        logger.info("settings changed since %s was trained; training again", path)

    model, log = train_best_of_seeds(config, data, device)
    test_accuracy = accuracy(model, data.test_x.to(device), data.test_y.to(device))
    metadata = {
        "dataset": config.dataset,
        "widths": list(config.widths),
        "activation": "relu",
        "seed": log.seeds_tried[-1],
        "seeds_tried": list(log.seeds_tried),
        "test_accuracy": test_accuracy,
        "training_key": key,
    }
    save_mlp(path, model, metadata)
    return model, test_accuracy


def train_best_of_seeds(
    config: ExperimentConfig, data: Dataset, device: torch.device
) -> tuple[MLP, TrainLog]:
    """Train ``config.seed_candidates`` networks and keep the best on training data."""
    train_x = data.train_x.to(device)
    train_y = data.train_y.to(device)
    best = None
    for index in range(config.seed_candidates):
        train_config = dataclasses.replace(config.train, seed=config.train.seed + index)
        model, log = train_classifier(config.widths, train_x, train_y, train_config)
        model = model.to(device).eval()
        train_accuracy = accuracy(model, train_x, train_y)
        logger.info("seed %d: training accuracy %.4f", log.seeds_tried[-1], train_accuracy)
        if best is None or train_accuracy > best[0]:
            best = (train_accuracy, model, log)
    return best[1], best[2]


def scale_or_load_layer(
    config: ExperimentConfig,
    original: MLP,
    layer: int,
    data: Dataset,
    out_dir: Path,
    device: torch.device,
) -> tuple[ScaledMLP, float, float | None]:
    """Scale hidden ``layer`` (or load the saved scaled network) and test it.

    Returns the scaled network, its test accuracy and its last training Huber loss
    (None when it was loaded).
    """
    path = out_dir / f"scaled_layer{layer}.safetensors"
    key = scaling_key(config, layer)
    scaled = ScaledMLP(
        original, layer, config.scaling.n_inserted, init_noise=config.scaling.init_noise
    ).to(device)
    loss = None
    if path.exists() and _saved_key(path) == key:
        logger.info("reusing the scaled network in %s", path)
        _load_inserted(scaled, path)
    else:
        scaling_log = train_scaling(scaled, data.train_x.to(device), config.scaling)
        loss = float(scaling_log.losses[-1])
        _save_inserted(scaled, path, key)
    scaled.eval()
    scaled_accuracy = accuracy(scaled, data.test_x.to(device), data.test_y.to(device))
    return scaled, scaled_accuracy, loss


def _saved_key(path: Path) -> str | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return (handle.metadata() or {}).get("scaling_key")
    except Exception:  # a damaged file is trained again, not trusted
        logger.warning("ignoring unreadable scaled network %s", path, exc_info=True)
        return None


def _save_inserted(scaled: ScaledMLP, path: Path, key: str) -> None:
    from safetensors.torch import save_file

    from .files import atomic_path

    tensors = {
        name: tensor.detach().cpu().contiguous()
        for name, tensor in scaled.inserted.state_dict().items()
    }
    with atomic_path(path) as temporary:
        save_file(tensors, str(temporary), metadata={"scaling_key": key})


def _load_inserted(scaled: ScaledMLP, path: Path) -> None:
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    device = next(scaled.parameters()).device
    scaled.inserted.load_state_dict({k: v.to(device) for k, v in tensors.items()})


def check_config(config: ExperimentConfig) -> None:
    """Check every grid setting of ``config`` that can be checked without data.

    Runs before any data is loaded or network trained, so a bad setting costs
    nothing.

    Raises
    ------
    ValueError
        If a layer is not a hidden layer, a rank policy does not parse, a delay is
        negative or above the number of inserted layers, or an N is below 1.
    """
    if not config.layers or not config.delays or not config.trajectories:
        raise ValueError(
            "the grid needs at least one layer, one delay and one N; got layers "
            f"{config.layers}, delays {config.delays}, trajectories "
            f"{config.trajectories}"
        )
    probe = MLP(config.widths)
    for layer in config.layers:
        check_hidden_layer(probe, layer)
    for rank in config.ranks:
        RankPolicy.parse(rank)
    n_inserted = config.scaling.n_inserted
    for delay in config.delays:
        if delay < 0 or delay > n_inserted:
            raise ValueError(
                f"delay {delay} is outside 0..{n_inserted}: a hybrid runs h of the "
                f"{n_inserted} inserted layers, and a trajectory of {n_inserted + 2} "
                f"states has no snapshot pair for h > {n_inserted}. Choose a delay in "
                f"0..{n_inserted}, or raise --inserted-layers"
            )
    if config.scaling.linearity > 0 and config.scaling.pad_value != config.pad_value:
        raise ValueError(
            f"scaling.pad_value={config.scaling.pad_value} differs from pad_value="
            f"{config.pad_value}: the linearity penalty must pad layer k's output "
            "as the trajectories do, so set both to the same negative value"
        )
    for n_trajectories in config.trajectories:
        if n_trajectories < 1:
            raise ValueError(
                f"{n_trajectories} trajectories were requested: N must be at least 1"
            )


def check_trajectory_count(config: ExperimentConfig, data: Dataset) -> None:
    """Raise ValueError if the grid requests more trajectories than training inputs."""
    n_max = max(config.trajectories)
    if n_max > len(data.train_x):
        raise ValueError(
            f"{n_max} trajectories were requested but the {config.dataset} training "
            f"set has {len(data.train_x)} inputs: lower --trajectories"
        )


def layer_record(state: LayerState, hybrids: list[dict[str, Any]]) -> dict[str, Any]:
    """Return the results.json entry of one replaced layer."""
    return {
        "layer": state.layer,
        "scaled_accuracy": state.scaled_accuracy,
        "scaling_loss": state.scaling_loss,
        "least_squares_accuracy": state.least_squares_accuracy,
        "hybrids": hybrids,
    }


def prepare_layer(
    config: ExperimentConfig,
    original: MLP,
    layer: int,
    data: Dataset,
    out_dir: Path,
    device: torch.device,
    timer: StageTimer,
) -> LayerState:
    """Scale one hidden layer, collect its trajectories and fit the baseline."""
    check_hidden_layer(original, layer)
    check_trajectory_count(config, data)
    n_max = max(config.trajectories)

    started = time.perf_counter()
    scaled, scaled_accuracy, loss = scale_or_load_layer(
        config, original, layer, data, out_dir, device
    )
    timer.add("scaling", started)
    logger.info("layer %d: scaled accuracy %.4f", layer, scaled_accuracy)

    # Trajectories come from training inputs, in a fixed order, so that N = 100 is
    # a prefix of N = 1000; accuracies are measured on the held-out test set.
    started = time.perf_counter()
    inputs = data.train_x[trajectory_order(len(data.train_x))[:n_max]].to(device)
    trajectories = collect_trajectories(scaled, inputs, pad_value=config.pad_value)
    timer.add("trajectories", started)

    started = time.perf_counter()
    baseline = fit_least_squares_layer(original, layer, inputs)
    baseline_model = replace_layer(original, layer, baseline).to(device).eval()
    least_squares_accuracy = accuracy(
        baseline_model, data.test_x.to(device), data.test_y.to(device)
    )
    timer.add("least_squares", started)

    return LayerState(
        layer=layer,
        scaled=scaled,
        scaled_accuracy=scaled_accuracy,
        trajectories=trajectories,
        least_squares_accuracy=least_squares_accuracy,
        scaling_loss=loss,
    )


def trajectory_order(n_inputs: int) -> torch.Tensor:
    """Return the fixed permutation of training inputs that trajectories are taken in."""
    generator = torch.Generator().manual_seed(0)
    return torch.randperm(n_inputs, generator=generator)


def evaluate_hybrid(
    state: LayerState,
    spec: HybridSpec,
    data: Dataset,
    config: ExperimentConfig,
    device: torch.device,
) -> tuple[dict[str, Any], KoopmanHybrid]:
    """Fit DMD for one hybrid of ``state`` and measure its test accuracy."""
    trajectories = state.trajectories[: spec.n_trajectories]
    policy = RankPolicy.parse(spec.rank)
    dmd = DMD(rank=policy).fit_trajectories(
        trajectories, spec.delay, constant=config.constant
    )
    hybrid = KoopmanHybrid(state.scaled, dmd, spec.delay, constant=config.constant)
    hybrid = hybrid.to(device).eval()
    hybrid_accuracy = accuracy(hybrid, data.test_x.to(device), data.test_y.to(device))
    record = {
        "variant": spec.variant,
        "delay": spec.delay,
        "trajectories": spec.n_trajectories,
        "rank": policy.requested_rank,
        "rank_policy": policy.to_json(),
        "rank_used": int(dmd.rank_),
        "accuracy": hybrid_accuracy,
        "nonlinear_layers_run": hybrid.nonlinear_layers_run,
        "linear_steps": hybrid.linear_steps,
        "spectral_radius": float(dmd.spectral_radius_),
        "n_unstable": int(dmd.n_unstable_),
        "warnings": list(dmd.warnings_),
    }
    return record, hybrid


def start_run(
    config: ExperimentConfig,
    out_dir: Path,
    data_dir: Path | None,
    cache_dir: Path | None,
    timer: StageTimer,
) -> Dataset:
    """Check ``config``, load its data set, then create ``out_dir`` with config.json.

    The folder is made only once every check has passed, so a rejected run leaves
    nothing behind.
    """
    check_config(config)
    started = time.perf_counter()
    data = load_dataset(config.dataset, data_dir=data_dir, cache_dir=cache_dir)
    timer.add("data", started)
    check_trajectory_count(config, data)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "config.json", config.to_json())
    return data


def run_reproduction(
    config: ExperimentConfig,
    out_dir: Path,
    data_dir: Path | None = None,
    cache_dir: Path | None = None,
) -> dict[str, Any]:
    """Run the whole job for ``config`` and write ``out_dir/results.json``.

    Returns the results as written: the original accuracy, and per layer the scaled
    accuracy, the least-squares baseline and every hybrid's accuracy.
    """
    out_dir = Path(out_dir)
    device = resolve_device(config.device)
    timer = StageTimer()
    data = start_run(config, out_dir, data_dir, cache_dir, timer)

    started = time.perf_counter()
    original, original_accuracy = train_or_load_original(config, data, out_dir, device)
    timer.add("training", started)
    logger.info("original test accuracy %.4f", original_accuracy)

    layers = []
    for layer in config.layers:
        state = prepare_layer(config, original, layer, data, out_dir, device, timer)
        hybrids = []
        for spec in config.hybrid_specs():
            started = time.perf_counter()
            record, _ = evaluate_hybrid(state, spec, data, config, device)
            timer.add("dmd_and_evaluation", started)
            logger.info(
                "layer %d, %s h=%d N=%d: accuracy %.4f",
                layer,
                spec.variant,
                spec.delay,
                spec.n_trajectories,
                record["accuracy"],
            )
            hybrids.append(record)
        layers.append(layer_record(state, hybrids))

    results = {
        "dataset": config.dataset,
        "original_accuracy": original_accuracy,
        "layers": layers,
        "seconds": {stage: round(s, 3) for stage, s in timer.seconds.items()},
        "settings": config.to_json(),
        "versions": package_versions(),
    }
    atomic_write_json(out_dir / "results.json", results)
    return results


def package_versions() -> dict[str, str]:
    """Return the versions of this package and of the libraries the results rest on."""
    import platform

    import scipy

    return {
        "koopman_hybrid": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
    }
