"""Resumable sweeps over layers, delay h, trajectories N and DMD rank.

A sweep runs one cell (one hybrid of one layer) at a time and writes each finished
cell at once to ``OUT/cells/`` as a JSON file, atomically. A rerun of the same command
reads those files back and computes only the missing cells, so an interrupted sweep
loses at most the cell in flight. A cell file is trusted only if it parses and its
settings key matches the settings of the current run.

The grids of the report live here as frozen dataclasses (:class:`SweepGrid`,
:class:`FigurePlan`, :class:`SweepPlan`), which serialise to JSON and are saved beside
the results.
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
from tqdm.auto import tqdm

from .datasets import DATASETS, Dataset
from .dmd import RankPolicy
from .experiment import (
    ExperimentConfig,
    HybridSpec,
    LayerState,
    StageTimer,
    evaluate_hybrid,
    layer_record,
    package_versions,
    prepare_layer,
    resolve_device,
    scaling_key,
    start_run,
    train_or_load_original,
)
from .files import atomic_write_json
from .mlp import MLP
from .presets import default_config

__all__ = [
    "CELL_FORMAT",
    "FigurePlan",
    "SweepGrid",
    "SweepPlan",
    "SweepResult",
    "cell_file",
    "cell_key",
    "default_plan",
    "rank_text",
    "read_cell",
    "run_sweep",
]

logger = logging.getLogger(__name__)

# Version of the cell file layout. Raising it makes every older cell file untrusted.
CELL_FORMAT = 1


@dataclass(frozen=True)
class SweepGrid:
    """The hybrids fitted per layer: every delay times every N times every rank.

    ``linear_variant`` adds, for every N and rank, the fully linear hybrid (delay 0:
    no inserted layer runs at inference, n + 1 linear steps).
    """

    layers: tuple[int, ...]
    delays: tuple[int, ...]
    trajectories: tuple[int, ...]
    ranks: tuple[str, ...] = ("svht",)
    linear_variant: bool = True

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SweepGrid:
        return cls(
            layers=tuple(data["layers"]),
            delays=tuple(data["delays"]),
            trajectories=tuple(data["trajectories"]),
            ranks=tuple(data["ranks"]),
            linear_variant=bool(data["linear_variant"]),
        )


@dataclass(frozen=True)
class FigurePlan:
    """Contents of the figures of one data set.

    ``eigenvalue_delays`` x ``eigenvalue_trajectories`` are the panels of the DMD
    eigenvalue figure. Each panel fits DMD again, as its sweep cell did, and takes
    its accuracy from that cell, so both must be in the grid.
    ``singular_vector_trajectories`` is N for the right singular vector figure, kept
    small so that each trajectory's stretch of the snapshot index stays visible.
    ``decision_boundaries`` turns on the decision boundary figure (2-D inputs only).
    """

    trajectory_layer: int = 1
    eigenvalue_layers: tuple[int, ...] = (1,)
    eigenvalue_delays: tuple[int, ...] = (1, 5, 10)
    eigenvalue_trajectories: tuple[int, ...] = (1000, 5000)
    singular_vector_delays: tuple[int, ...] = (0, 2, 5, 10)
    singular_vector_trajectories: int = 8
    singular_vector_count: int = 3
    decision_boundaries: bool = False
    boundary_resolution: int = 200

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FigurePlan:
        values = dict(data)
        for name in (
            "eigenvalue_layers",
            "eigenvalue_delays",
            "eigenvalue_trajectories",
            "singular_vector_delays",
        ):
            values[name] = tuple(values[name])
        return cls(**values)

    def fitted_to(self, grid: SweepGrid) -> FigurePlan:
        """Return this plan with its eigenvalue panels limited to cells of ``grid``.

        Where none of the requested delays (or N) are in the grid, the smallest,
        middle and largest delays (the smallest and largest N) of the grid are used.
        """
        delays = tuple(d for d in self.eigenvalue_delays if d in grid.delays)
        if not delays:
            delays = _spread(sorted(grid.delays), 3)
        trajectories = tuple(
            n for n in self.eigenvalue_trajectories if n in grid.trajectories
        )
        if not trajectories:
            trajectories = _spread(sorted(grid.trajectories), 2)
        layers = tuple(k for k in self.eigenvalue_layers if k in grid.layers)
        if not layers:
            layers = grid.layers[:1]
        trajectory_layer = (
            self.trajectory_layer
            if self.trajectory_layer in grid.layers
            else grid.layers[0]
        )
        return dataclasses.replace(
            self,
            trajectory_layer=trajectory_layer,
            eigenvalue_layers=layers,
            eigenvalue_delays=delays,
            eigenvalue_trajectories=trajectories,
        )


def _spread(values: list[int], count: int) -> tuple[int, ...]:
    if len(values) <= count:
        return tuple(values)
    picks = np.linspace(0, len(values) - 1, count).round().astype(int)
    return tuple(values[i] for i in sorted(set(picks.tolist())))


@dataclass(frozen=True)
class SweepPlan:
    """Everything a full reproduction runs for one data set.

    ``train_epochs`` and ``scaling_epochs`` replace the preset's epochs where they
    are not None (the quick plans use them).
    """

    dataset: str
    grid: SweepGrid
    figures: FigurePlan = field(default_factory=FigurePlan)
    train_epochs: int | None = None
    scaling_epochs: int | None = None
    quick: bool = False

    def experiment_config(self, base: ExperimentConfig | None = None) -> ExperimentConfig:
        """Return ``base`` (default: the preset) with this plan's grid and epochs."""
        config = base if base is not None else default_config(self.dataset)
        if config.dataset != self.dataset:
            raise ValueError(
                f"the base settings are for {config.dataset!r} but the plan is for "
                f"{self.dataset!r}; pass settings of the same data set"
            )
        train = config.train
        scaling = config.scaling
        if self.train_epochs is not None:
            train = dataclasses.replace(train, epochs=self.train_epochs)
        if self.scaling_epochs is not None:
            scaling = dataclasses.replace(scaling, epochs=self.scaling_epochs)
        return dataclasses.replace(
            config,
            train=train,
            scaling=scaling,
            layers=self.grid.layers,
            delays=self.grid.delays,
            trajectories=self.grid.trajectories,
            ranks=self.grid.ranks,
            linear_variant=self.grid.linear_variant,
        )

    def with_grid(self, **changes: Any) -> SweepPlan:
        """Return the plan with grid fields replaced, figures fitted to the new grid."""
        grid = dataclasses.replace(self.grid, **changes)
        return dataclasses.replace(self, grid=grid, figures=self.figures.fitted_to(grid))

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "grid": self.grid.to_json(),
            "figures": self.figures.to_json(),
            "train_epochs": self.train_epochs,
            "scaling_epochs": self.scaling_epochs,
            "quick": self.quick,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SweepPlan:
        return cls(
            dataset=data["dataset"],
            grid=SweepGrid.from_json(data["grid"]),
            figures=FigurePlan.from_json(data["figures"]),
            train_epochs=data.get("train_epochs"),
            scaling_epochs=data.get("scaling_epochs"),
            quick=bool(data.get("quick", False)),
        )


def default_plan(dataset: str, quick: bool = False) -> SweepPlan:
    """Return the sweep of the report for ``"yinyang"`` or ``"mnist"``.

    The full plans fit the 45-minute budget of ``reproduce all`` on 2 CPU cores, where
    MNIST training and scaling take most of the time. The quick plans cut the grid and
    the epochs so that ``reproduce all --quick`` takes a few minutes. Their accuracies
    are for trying the pipeline, not for comparison with the paper.
    """
    if dataset == "yinyang":
        if quick:
            grid = SweepGrid(
                layers=(1, 2, 3), delays=(1, 2, 5, 10), trajectories=(100, 1000)
            )
            figures = FigurePlan(
                eigenvalue_delays=(1, 5, 10),
                eigenvalue_trajectories=(100, 1000),
                decision_boundaries=True,
                boundary_resolution=150,
            )
            return SweepPlan(
                dataset, grid, figures, train_epochs=1000, scaling_epochs=100, quick=True
            )
        grid = SweepGrid(
            layers=(1, 2, 3),
            delays=(1, 2, 3, 5, 8, 10),
            trajectories=(100, 300, 1000, 3000),
            ranks=("svht", "tolerance"),
        )
        figures = FigurePlan(
            eigenvalue_delays=(1, 5, 10),
            eigenvalue_trajectories=(100, 3000),
            decision_boundaries=True,
        )
        return SweepPlan(dataset, grid, figures)
    if dataset == "mnist":
        if quick:
            grid = SweepGrid(
                layers=(1, 2, 3), delays=(2, 5, 10), trajectories=(100, 1000)
            )
            figures = FigurePlan(
                eigenvalue_delays=(2, 5, 10), eigenvalue_trajectories=(100, 1000)
            )
            return SweepPlan(
                dataset, grid, figures, train_epochs=3, scaling_epochs=1, quick=True
            )
        grid = SweepGrid(
            layers=(1, 2, 3),
            delays=(1, 2, 5, 8, 10),
            trajectories=(100, 1000, 5000),
            ranks=("svht",),
        )
        figures = FigurePlan(
            eigenvalue_delays=(1, 5, 10), eigenvalue_trajectories=(1000, 5000)
        )
        return SweepPlan(dataset, grid, figures)
    raise ValueError(
        f"unknown dataset {dataset!r}: choose one of {', '.join(DATASETS)}"
    )


def rank_text(hybrid: dict[str, Any]) -> str:
    """Return the rank policy of a hybrid record in the text form ``--rank`` takes."""
    policy = hybrid.get("rank_policy")
    if isinstance(policy, dict):
        return str(RankPolicy.from_json(policy))
    return str(hybrid.get("rank"))


def cell_key(config: ExperimentConfig, layer: int, spec: HybridSpec) -> str:
    """Return a short hash of every setting that decides one cell's result.

    It covers the trained and the scaled network (through ``scaling_key``), the pad
    value, the constant observable, the hybrid's delay, N, rank and variant, and
    ``CELL_FORMAT``. N is a prefix of one fixed order of training inputs, so a cell
    does not depend on the other N of the grid.
    """
    content = {
        "format": CELL_FORMAT,
        "scaling": scaling_key(config, layer),
        "pad_value": config.pad_value,
        "constant": config.constant,
        "spec": dataclasses.asdict(spec),
    }
    text = json.dumps(content, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cell_file(cells_dir: Path, layer: int, spec: HybridSpec) -> Path:
    """Return the file of one cell, named after its layer, variant, h, N and rank."""
    rank = "".join(c if c.isalnum() or c in ".-" else "-" for c in spec.rank)
    name = (
        f"layer{layer}_{spec.variant}_h{spec.delay}_N{spec.n_trajectories}_{rank}.json"
    )
    return cells_dir / name


def read_cell(path: Path, key: str) -> dict[str, Any] | None:
    """Return the cell stored in ``path`` if it parses and carries ``key``, else None."""
    if not path.exists():
        return None
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        logger.warning("ignoring unreadable cell file %s: %s", path, error)
        return None
    if not isinstance(payload, dict) or payload.get("key") != key:
        logger.info("cell file %s has other settings; computing it again", path)
        return None
    record = payload.get("record")
    if not isinstance(record, dict) or not isinstance(record.get("accuracy"), float):
        logger.warning("ignoring cell file %s without an accuracy", path)
        return None
    return payload


@dataclass
class SweepResult:
    """A finished sweep of one data set, with what the figures need in memory.

    ``results`` has the schema of ``results.json``. ``cells`` maps (layer, spec) to
    the stored cell.
    """

    plan: SweepPlan
    config: ExperimentConfig
    out_dir: Path
    results: dict[str, Any]
    data: Dataset
    original: MLP
    states: dict[int, LayerState]
    cells: dict[tuple[int, HybridSpec], dict[str, Any]]
    device: torch.device


def run_sweep(
    plan: SweepPlan,
    out_dir: str | Path,
    *,
    base_config: ExperimentConfig | None = None,
    data_dir: Path | None = None,
    cache_dir: Path | None = None,
    device: str | None = None,
    progress: bool | None = None,
) -> SweepResult:
    """Run every cell of ``plan`` that ``out_dir/cells`` does not hold yet.

    Trains the original network and scales each layer once (both are cached in
    ``out_dir`` by :mod:`koopman_hybrid.experiment`), then fits and tests one hybrid
    per cell and writes it to ``out_dir/cells`` as soon as it is done. Writes
    ``results.json`` (the schema of the main job, plus ``plan``), ``config.json`` and
    ``sweep.json`` to ``out_dir``.

    Parameters
    ----------
    plan : SweepPlan
        Grid and epochs.
    out_dir : str or Path
        Folder for the networks, the cells and the results.
    base_config : ExperimentConfig, optional
        Settings the plan is applied to. Default: the preset of ``plan.dataset``.
    data_dir, cache_dir : Path, optional
        MNIST files, as for :func:`koopman_hybrid.datasets.load_dataset`.
    device : {"cpu", "cuda"}, optional
        Replaces the device of the settings.
    progress : bool, optional
        Show the progress bar. None shows it only on a terminal.

    Returns
    -------
    SweepResult

    Raises
    ------
    ValueError
        If the grid is invalid (see :func:`check_config`) or requests more
        trajectories than the training set has. Both are checked before training.
    """
    out_dir = Path(out_dir)
    config = plan.experiment_config(base_config)
    if device is not None:
        config = dataclasses.replace(config, device=device)
    torch_device = resolve_device(config.device)
    timer = StageTimer()
    data = start_run(config, out_dir, data_dir, cache_dir, timer)
    atomic_write_json(out_dir / "sweep.json", plan.to_json())

    started = time.perf_counter()
    original, original_accuracy = train_or_load_original(
        config, data, out_dir, torch_device
    )
    timer.add("training", started)
    logger.info("%s: original test accuracy %.4f", config.dataset, original_accuracy)

    cells_dir = out_dir / "cells"
    specs = config.hybrid_specs()
    grid_cells = [(layer, spec) for layer in config.layers for spec in specs]
    stored: dict[tuple[int, HybridSpec], dict[str, Any]] = {}
    for layer, spec in grid_cells:
        payload = read_cell(cell_file(cells_dir, layer, spec), cell_key(config, layer, spec))
        if payload is not None:
            stored[(layer, spec)] = payload
    logger.info(
        "%s: %d of %d cells already done in %s",
        config.dataset,
        len(stored),
        len(grid_cells),
        cells_dir,
    )

    states: dict[int, LayerState] = {}
    layers = []
    bar = tqdm(
        total=len(grid_cells),
        initial=len(stored),
        desc=f"{config.dataset} cells",
        unit="cell",
        disable=None if progress is None else not progress,
    )
    with bar:
        for layer in config.layers:
            state = prepare_layer(
                config, original, layer, data, out_dir, torch_device, timer
            )
            states[layer] = state
            hybrids = []
            for spec in specs:
                payload = stored.get((layer, spec))
                if payload is None:
                    payload = _run_cell(config, state, spec, data, torch_device, cells_dir)
                    stored[(layer, spec)] = payload
                    bar.update(1)
                    bar.set_postfix_str(
                        f"layer {layer} {spec.variant} h={spec.delay} "
                        f"N={spec.n_trajectories}"
                    )
                record = dict(payload["record"])
                record["seconds"] = payload["seconds"]
                hybrids.append(record)
            layers.append(layer_record(state, hybrids))

    seconds = {stage: round(value, 3) for stage, value in timer.seconds.items()}
    seconds["dmd_and_evaluation"] = round(
        sum(float(stored[cell]["seconds"]) for cell in grid_cells), 3
    )
    results = {
        "dataset": config.dataset,
        "original_accuracy": original_accuracy,
        "layers": layers,
        "seconds": seconds,
        "settings": config.to_json(),
        "plan": plan.to_json(),
        "versions": package_versions(),
    }
    atomic_write_json(out_dir / "results.json", results)
    return SweepResult(
        plan=plan,
        config=config,
        out_dir=out_dir,
        results=results,
        data=data,
        original=original,
        states=states,
        cells={cell: stored[cell] for cell in grid_cells},
        device=torch_device,
    )


def _run_cell(
    config: ExperimentConfig,
    state: LayerState,
    spec: HybridSpec,
    data: Dataset,
    device: torch.device,
    cells_dir: Path,
) -> dict[str, Any]:
    """Fit and test one hybrid, write its cell file and return the stored cell."""
    cell_id = (
        f"{config.dataset} layer {state.layer} {spec.variant} h={spec.delay} "
        f"N={spec.n_trajectories} rank={spec.rank}"
    )
    logger.info("cell %s: started", cell_id)
    started = time.perf_counter()
    try:
        record, _ = evaluate_hybrid(state, spec, data, config, device)
    except (ValueError, RuntimeError, np.linalg.LinAlgError) as error:
        # One failed fit should not end a sweep of many cells. The failure is not
        # written to disk, so that a rerun tries the cell again.
        logger.error("cell %s: failed: %s", cell_id, error)
        return _failed_cell(config, state.layer, spec, error, started)
    seconds = time.perf_counter() - started
    payload = {
        "key": cell_key(config, state.layer, spec),
        "layer": state.layer,
        "spec": dataclasses.asdict(spec),
        "record": record,
        "seconds": round(seconds, 3),
    }
    atomic_write_json(cell_file(cells_dir, state.layer, spec), payload)
    logger.info(
        "cell %s: accuracy %.4f in %.1f s", cell_id, record["accuracy"], seconds
    )
    return payload


def _failed_cell(
    config: ExperimentConfig,
    layer: int,
    spec: HybridSpec,
    error: Exception,
    started: float,
) -> dict[str, Any]:
    record = {
        "variant": spec.variant,
        "delay": spec.delay,
        "trajectories": spec.n_trajectories,
        "rank": RankPolicy.parse(spec.rank).requested_rank,
        "rank_policy": RankPolicy.parse(spec.rank).to_json(),
        "accuracy": None,
        "error": f"{type(error).__name__}: {error}",
    }
    return {
        "key": cell_key(config, layer, spec),
        "layer": layer,
        "spec": dataclasses.asdict(spec),
        "record": record,
        "seconds": round(time.perf_counter() - started, 3),
    }

