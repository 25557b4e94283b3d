"""The reproduction report: sweeps, figures and one folder with report.md.

:func:`run_report` runs the sweep of each data set (:mod:`koopman_hybrid.sweep`),
draws the figures (:mod:`koopman_hybrid.plotting`) and writes ``report.md`` with every
table beside the paper's numbers, the raw results as ``results.csv`` and
``report.json``, the settings (``settings.json``) and the package versions
(``versions.json``).

Paper numbers are from N. S. Aswani, S. E. Jabari and M. Shafique, "Representing
Neural Network Layers as Linear Operations via Koopman Operator Theory",
arXiv 2409.01308 (2024): the abstract (original and best hybrid accuracy) and the
appendix tables of scaling settings (scaled-network accuracy per hidden layer).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import math
import os
import platform
import string
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .dmd import DMD
from .experiment import HybridSpec, check_config, evaluate_hybrid, package_versions
from .files import atomic_write_json, atomic_write_text
from .plotting import (
    hybrid_grids,
    plot_accuracy_grid,
    plot_decision_boundaries,
    plot_eigenvalues,
    plot_right_singular_vectors,
    plot_trajectory,
)
from .sweep import (
    SweepPlan,
    SweepResult,
    default_plan,
    rank_text,
    run_sweep,
)
from .trajectories import collect_trajectories

__all__ = [
    "CLOSE_POINTS",
    "PAPER",
    "FigureEntry",
    "make_figures",
    "render_report",
    "results_rows",
    "run_report",
    "summarize",
    "targets_text",
    "write_report",
]

logger = logging.getLogger(__name__)

# Accuracies (fractions) that the paper reports. "best_hybrid_layer" is the layer
# whose replacement gave the best hybrid; "scaled" maps each hidden layer to the
# accuracy of the scaled network before replacement.
PAPER: dict[str, dict[str, Any]] = {
    "yinyang": {
        "name": "Yin-Yang",
        "original": 0.984,
        "best_hybrid": 0.973,
        "best_hybrid_layer": None,
        "scaled": {1: 0.9889, 2: 0.9888, 3: 0.9889},
    },
    "mnist": {
        "name": "MNIST",
        "original": 0.972,
        "best_hybrid": 0.958,
        "best_hybrid_layer": 3,
        "scaled": {1: 0.9663, 2: 0.9671, 3: 0.9682},
    },
}

# A hidden layer meets its target when a hybrid with h <= n/2 comes within this many
# percentage points of the original network.
CLOSE_POINTS = 0.5

CSV_COLUMNS = (
    "dataset",
    "layer",
    "kind",
    "variant",
    "delay",
    "trajectories",
    "rank_policy",
    "rank_used",
    "nonlinear_layers_run",
    "linear_steps",
    "accuracy",
    "spectral_radius",
    "n_unstable",
    "seconds",
    "error",
)


# Stages of a run in the order they happen, for the time table.
STAGE_ORDER = (
    "data",
    "training",
    "scaling",
    "trajectories",
    "least_squares",
    "dmd_and_evaluation",
    "figures",
)


@dataclass(frozen=True)
class FigureEntry:
    """One figure of the report: its file, the data set and a caption."""

    dataset: str
    name: str
    path: Path
    caption: str


def _points(fraction: float) -> float:
    return 100.0 * fraction


def _percent(fraction: float | None, digits: int = 2) -> str:
    if fraction is None:
        return "–"
    return f"{100 * fraction:.{digits}f} %"


def _signed_points(difference: float | None) -> str:
    if difference is None:
        return "–"
    sign = "+" if difference >= 0 else "−"
    return f"{sign}{abs(difference):.2f}"


def _best(hybrids: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Return the most accurate hybrid; ties go to the smaller h, then smaller N."""
    valid = [h for h in hybrids if h.get("accuracy") is not None]
    if not valid:
        return None
    return max(
        valid, key=lambda h: (h["accuracy"], -int(h["delay"]), -int(h["trajectories"]))
    )


def _describe(hybrid: dict[str, Any] | None, layer: int | None = None) -> str:
    if hybrid is None:
        return "–"
    where = [] if layer is None else [f"layer {layer}"]
    if hybrid["variant"] == "linear":
        where.append("fully linear")
    else:
        where.append(f"h = {hybrid['delay']}")
    where.append(f"N = {hybrid['trajectories']}")
    share = _linear_share(hybrid)
    if share and hybrid["variant"] != "linear":
        where.append(share)
    return f"{_percent(hybrid['accuracy'])} ({', '.join(where)})"


def _linear_share(hybrid: dict[str, Any]) -> str:
    """Return "6 of 11 steps linear" from a hybrid record, or "" without the counts."""
    linear = hybrid.get("linear_steps")
    nonlinear = hybrid.get("nonlinear_layers_run")
    if linear is None or nonlinear is None:
        return ""
    return f"{int(linear)} of {int(linear) + int(nonlinear)} steps linear"


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """Compare one data set's results with the paper and the targets.

    Parameters
    ----------
    results : dict
        Results in the schema of ``results.json``, with ``settings.scaling.n_inserted``.

    Returns
    -------
    dict
        ``original`` and ``best`` (the best hybrid over all layers and delays, with
        its ``layer``), the targets (``original_target_met``,
        ``best_target_met``) and ``layers``: per hidden layer the scaled and
        least-squares accuracies, the best hybrid with h <= n/2 (``best_short``),
        the best fully linear hybrid, each gap to the original in percentage points
        and ``within_target``.
    """
    dataset = results["dataset"]
    paper = PAPER.get(dataset, {})
    original = float(results["original_accuracy"])
    n_inserted = int(results["settings"]["scaling"]["n_inserted"])

    best = None
    best_layer = None
    layers = []
    for layer in results["layers"]:
        hybrids = layer["hybrids"]
        candidate = _best(hybrids)
        if candidate is not None and (
            best is None or candidate["accuracy"] > best["accuracy"]
        ):
            best, best_layer = candidate, layer["layer"]
        short_hybrids = [
            h
            for h in hybrids
            if 2 * int(h["delay"]) <= n_inserted and h.get("accuracy") is not None
        ]
        short = _best(short_hybrids)
        linear = _best([h for h in hybrids if h["variant"] == "linear"])
        least_squares = float(layer["least_squares_accuracy"])
        scaled = float(layer["scaled_accuracy"])
        short_gap = _gap(short, original)
        layers.append(
            {
                "layer": layer["layer"],
                "scaled_accuracy": scaled,
                "scaled_gap": _points(scaled - original),
                "paper_scaled_accuracy": paper.get("scaled", {}).get(layer["layer"]),
                "best_short": short,
                "best_short_gap": short_gap,
                "best_any": candidate,
                "best_any_gap": _gap(candidate, original),
                "linear": linear,
                "linear_gap": _gap(linear, original),
                "least_squares_accuracy": least_squares,
                "least_squares_gap": _points(least_squares - original),
                "beats_least_squares": short is not None
                and short["accuracy"] > least_squares,
                "short_count": len(short_hybrids),
                "short_unstable": sum(
                    1 for h in short_hybrids if int(h.get("n_unstable") or 0) > 0
                ),
                "within_target": _within(short_gap),
                "failed_cells": sum(1 for h in hybrids if h.get("accuracy") is None),
            }
        )

    paper_original = paper.get("original")
    paper_best = paper.get("best_hybrid")
    return {
        "dataset": dataset,
        "name": paper.get("name", dataset),
        "n_inserted": n_inserted,
        "max_short_delay": n_inserted // 2,
        "original": original,
        "paper_original": paper_original,
        "original_target_met": paper_original is not None
        and _points(original) >= _points(paper_original) - 1e-9,
        "best": best,
        "best_layer": best_layer,
        "paper_best": paper_best,
        "paper_best_layer": paper.get("best_hybrid_layer"),
        "best_target_met": best is not None
        and paper_best is not None
        and _points(best["accuracy"]) >= _points(paper_best) - 1e-9,
        "layers": layers,
    }


def _within(gap: float | None) -> bool:
    return gap is not None and gap >= -CLOSE_POINTS - 1e-9


def _gap(hybrid: dict[str, Any] | None, original: float) -> float | None:
    if hybrid is None:
        return None
    return _points(hybrid["accuracy"] - original)


def results_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Flatten one data set's results into CSV rows (the columns of ``CSV_COLUMNS``).

    One row for the original network, then per layer one for the scaled network, one
    for the least-squares baseline and one per hybrid.
    """
    dataset = results["dataset"]
    rows = [
        {
            "dataset": dataset,
            "kind": "original",
            "accuracy": results["original_accuracy"],
        }
    ]
    for layer in results["layers"]:
        number = layer["layer"]
        rows.append(
            {
                "dataset": dataset,
                "layer": number,
                "kind": "scaled",
                "accuracy": layer["scaled_accuracy"],
            }
        )
        rows.append(
            {
                "dataset": dataset,
                "layer": number,
                "kind": "least_squares",
                "accuracy": layer["least_squares_accuracy"],
            }
        )
        for hybrid in layer["hybrids"]:
            row = {
                name: hybrid.get(name)
                for name in CSV_COLUMNS
                if name not in ("dataset", "layer", "kind", "rank_policy")
            }
            row.update(
                dataset=dataset,
                layer=number,
                kind="hybrid",
                rank_policy=rank_text(hybrid),
            )
            rows.append(row)
    return [{name: row.get(name) for name in CSV_COLUMNS} for row in rows]


def _csv_text(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buffer.getvalue()


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def _yes_no(value: bool) -> str:
    return "yes" if value else "**no**"


def _targets_rows(summary: dict[str, Any]) -> list[list[str]]:
    name = summary["name"]
    rows = []
    if summary["paper_original"] is not None:
        rows.append(
            [
                f"{name}: original network ≥ {_percent(summary['paper_original'], 1)}",
                _percent(summary["original"]),
                _yes_no(summary["original_target_met"]),
            ]
        )
    if summary["paper_best"] is not None:
        rows.append(
            [
                f"{name}: best hybrid ≥ {_percent(summary['paper_best'], 1)}",
                _describe(summary["best"], summary["best_layer"]),
                _yes_no(summary["best_target_met"]),
            ]
        )
    short = summary["max_short_delay"]
    for layer in summary["layers"]:
        rows.append(
            [
                (
                    f"{name}: layer {layer['layer']}, a hybrid with h ≤ {short} within "
                    f"{CLOSE_POINTS} points of the original"
                ),
                (
                    f"{_describe(layer['best_short'])}, "
                    f"{_signed_points(layer['best_short_gap'])} points"
                ),
                _yes_no(layer["within_target"]),
            ]
        )
    return rows


def _dataset_section(
    results: dict[str, Any], summary: dict[str, Any], figures: list[FigureEntry]
) -> list[str]:
    name = summary["name"]
    short = summary["max_short_delay"]
    lines = [f"## {name}", ""]
    lines.append(
        f"n = {summary['n_inserted']} inserted layers, so a short delay means "
        f"h ≤ n/2 = {short}, which makes at least half of the n + 1 steps linear. "
        "Accuracies are on the test set; Δ is the difference to the original network "
        "in percentage points."
    )
    lines.append("")

    paper_best = summary["paper_best"]
    paper_best_text = _percent(paper_best, 1) if paper_best is not None else "–"
    if summary["paper_best_layer"] is not None:
        paper_best_text += f" (layer {summary['paper_best_layer']})"
    rows = [
        [
            "original network",
            _percent(summary["original"]),
            _percent(summary["paper_original"], 1),
        ],
        [
            "best hybrid (any delay)",
            _describe(summary["best"], summary["best_layer"]),
            paper_best_text,
        ],
    ]
    for layer in summary["layers"]:
        rows.append(
            [
                f"scaled network, layer {layer['layer']}",
                _percent(layer["scaled_accuracy"]),
                _percent(layer["paper_scaled_accuracy"]),
            ]
        )
    lines += [f"### {name}: this run against the paper", ""]
    lines += _table(["quantity", "this run", "paper"], rows)
    lines.append("")

    lines += [f"### {name}: each hidden layer against the original network", ""]
    rows = []
    for layer in summary["layers"]:
        rows.append(
            [
                str(layer["layer"]),
                _describe(layer["best_short"]),
                _signed_points(layer["best_short_gap"]),
                _describe(layer["linear"]),
                _signed_points(layer["linear_gap"]),
                _percent(layer["least_squares_accuracy"]),
                _signed_points(layer["least_squares_gap"]),
                _yes_no(layer["beats_least_squares"]),
                _yes_no(layer["within_target"]),
            ]
        )
    lines += _table(
        [
            "layer",
            f"best hybrid, h ≤ {short}",
            "Δ",
            "fully linear (h = 0)",
            "Δ",
            "least squares",
            "Δ",
            f"best h ≤ {short} beats least squares",
            f"within {CLOSE_POINTS} points",
        ],
        rows,
    )
    lines.append("")
    lines.append(
        "The fully linear hybrid runs no inserted layer: n + 1 linear steps from the "
        "layer input. The least-squares baseline is one affine map from the layer's "
        "input to its output, fitted on the same N = "
        f"{max(results['settings']['trajectories'])} training inputs as the largest "
        "hybrids."
    )
    lines.append("")
    for layer in summary["layers"]:
        if not layer["within_target"]:
            lines += [*_shortfall_lines(layer, short), ""]
    behind = [
        str(layer["layer"])
        for layer in summary["layers"]
        if not layer["beats_least_squares"]
    ]
    if behind:
        lines.append(
            "A hybrid is only of interest where it beats the least-squares baseline. "
            f"The best hybrid with h ≤ {short} does not beat it for "
            f"{_plural('layer', behind)} {', '.join(behind)}."
        )
        lines.append("")
    failed = sum(layer["failed_cells"] for layer in summary["layers"])
    if failed:
        lines.append(
            f"{failed} cells failed and show as –; the log names each error, and a "
            "rerun of the same command tries them again."
        )
        lines.append("")

    lines += [f"### {name}: accuracy of every hybrid (%)", ""]
    for layer in results["layers"]:
        lines += _grid_table(layer)
    lines += _figure_lines(name, figures)
    return lines


def _plural(word: str, items: Sequence[Any]) -> str:
    return word if len(items) == 1 else word + "s"


def _shortfall_lines(layer: dict[str, Any], short: int) -> list[str]:
    """Say where a layer stops short of the target and what the results point to."""
    head = f"**Layer {layer['layer']} stops short of the target:**"
    best = layer["best_short"]
    if best is None:
        return [f"{head} no hybrid with h ≤ {short} finished."]
    text = (
        f"{head} its best hybrid with h ≤ {short} reaches {_describe(best)}, "
        f"{abs(layer['best_short_gap']):.2f} points below the original, against a "
        f"target of {CLOSE_POINTS}. What this run shows:"
    )

    # Each finding is one bullet, computed from this layer's results.
    findings = []
    if layer["scaled_gap"] < -CLOSE_POINTS:
        findings.append(
            "The scaled network, whose trajectories every hybrid is fitted to, is "
            f"itself {abs(layer['scaled_gap']):.2f} points below the original."
        )

    longest = layer["best_any"]
    if longest is not None and int(longest["delay"]) > short:
        closes = "closes the gap" if _within(layer["best_any_gap"]) else "does better"
        findings.append(
            f"Running more inserted layers before the linear steps {closes}: "
            f"h = {longest['delay']} reaches {_percent(longest['accuracy'])} "
            f"({_signed_points(layer['best_any_gap'])} points)."
        )
    else:
        findings.append(f"No delay above {short} in the grid does better.")

    if layer["short_unstable"]:
        findings.append(_instability_text(layer, short))

    least_squares_gap = _signed_points(layer["least_squares_gap"])
    if _within(layer["least_squares_gap"]):
        findings.append(
            "One affine least-squares map of the layer input is within the target "
            f"({least_squares_gap} points), so an affine map suffices for this layer "
            "and the loss lies in the multi-step DMD prediction."
        )
    else:
        findings.append(
            "One affine least-squares map of the layer input also falls short "
            f"({least_squares_gap} points), so no single affine map comes within the "
            "target either."
        )
    return [text, "", *(f"- {finding}" for finding in findings)]


def _instability_text(layer: dict[str, Any], short: int) -> str:
    best = layer["best_short"]
    unstable, count = layer["short_unstable"], layer["short_count"]
    if unstable == count:
        subject = f"All {count} hybrids with h ≤ {short} have"
    else:
        verb = "has" if unstable == 1 else "have"
        subject = f"{unstable} of the {count} hybrids with h ≤ {short} {verb}"
    text = f"{subject} DMD eigenvalues outside the unit circle"

    radius = best.get("spectral_radius")
    steps = best.get("linear_steps")
    if int(best.get("n_unstable") or 0) > 0 and radius is not None and steps:
        growth = float(radius) ** int(steps)
        text += (
            f", the best one included: its largest eigenvalue modulus "
            f"{float(radius):.3f} can grow a mode {growth:.3g}-fold over its "
            f"{int(steps)} linear steps"
        )
    return text + "."


def _grid_table(layer: dict[str, Any]) -> list[str]:
    lines = [
        (
            f"Layer {layer['layer']} (scaled {_percent(layer['scaled_accuracy'])}, "
            f"least squares {_percent(layer['least_squares_accuracy'])}):"
        ),
        "",
    ]
    grids = hybrid_grids(layer["hybrids"])
    for grid in grids:
        corner = "N \\ h" if len(grids) == 1 else f"N \\ h (rank {grid.rank})"
        steps = ["–" if count is None else str(count) for count in grid.linear_steps()]
        rows = [["linear steps", *steps]]
        for n, values in zip(grid.trajectories, grid.accuracies()):
            rows.append(
                [str(n), *("–" if math.isnan(v) else f"{v:.2f}" for v in values)]
            )
        lines += _table([corner, *grid.column_labels], rows)
        lines.append("")
    return lines


def _figure_lines(name: str, figures: list[FigureEntry]) -> list[str]:
    if not figures:
        return []
    lines = [f"### {name}: figures", ""]
    for entry in figures:
        lines.append(f"![{entry.name}]({entry.path.as_posix()})")
        lines.append("")
        lines.append(f"*{entry.caption}*")
        lines.append("")
    return lines


def render_report(
    results_by_dataset: dict[str, dict[str, Any]],
    figures: Sequence[FigureEntry],
    *,
    command: str,
    quick: bool,
    seconds: float | None = None,
    versions: dict[str, str] | None = None,
    figure_errors: Sequence[str] = (),
) -> str:
    """Return the text of report.md.

    Parameters
    ----------
    results_by_dataset : dict
        Results (schema of ``results.json``) per data set name.
    figures : sequence of FigureEntry
        Figures to link, with paths relative to the report folder.
    command : str
        The command line that made the report.
    quick : bool
        Whether the quick plans ran, so that the report warns against comparing.
    seconds : float, optional
        Wall time of the whole run.
    versions : dict, optional
        Package versions to list.
    figure_errors : sequence of str
        Figures that failed, one message each.
    """
    summaries = {
        name: summarize(results) for name, results in results_by_dataset.items()
    }
    lines = ["# Koopman hybrid reproduction report", ""]
    lines.append(
        f"Made by `{command}` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC."
    )
    if seconds is not None:
        lines.append(f"Total wall time: {_duration(seconds)}.")
    lines.append("")
    if quick:
        lines.append(
            "**Quick run:** a small grid and few training epochs, for trying the "
            "pipeline. Its accuracies are not comparable with the paper; run without "
            "`--quick` for that."
        )
        lines.append("")
    lines.append(
        "Raw results: [results.csv](results.csv) (one row per network and hybrid), "
        "[report.json](report.json) (every result with this summary), and "
        "`results.json` in each data set's folder. Settings: "
        "[settings.json](settings.json); package versions: "
        "[versions.json](versions.json)."
    )
    lines.append("")

    lines += ["## Targets", ""]
    rows = [row for summary in summaries.values() for row in _targets_rows(summary)]
    lines += _table(["target", "this run", "met"], rows)
    lines.append("")

    by_dataset: dict[str, list[FigureEntry]] = {}
    for entry in figures:
        by_dataset.setdefault(entry.dataset, []).append(entry)
    for name, results in results_by_dataset.items():
        lines += _dataset_section(results, summaries[name], by_dataset.get(name, []))

    if figure_errors:
        lines += ["## Figures that failed", ""]
        lines += [f"- {message}" for message in figure_errors]
        lines.append("")

    lines += ["## Time per stage", ""]
    stages = [
        stage
        for stage in STAGE_ORDER
        if any(stage in results["seconds"] for results in results_by_dataset.values())
    ]
    stages += sorted(
        {
            stage
            for results in results_by_dataset.values()
            for stage in results["seconds"]
            if stage not in STAGE_ORDER
        }
    )
    rows = []
    for name, results in results_by_dataset.items():
        rows.append(
            [summaries[name]["name"]]
            + [_duration(results["seconds"].get(stage)) for stage in stages]
        )
    lines += _table(["data set", *[stage.replace("_", " ") for stage in stages]], rows)
    lines.append("")
    lines.append(
        "`dmd and evaluation` adds up the cells of every run of the command, including "
        "cells done before an interruption; the other stages are from the last run."
    )
    lines.append("")

    if versions:
        lines += ["## Versions", ""]
        lines += _table(["package", "version"], sorted(versions.items()))
        lines.append("")
    return "\n".join(lines)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def report_versions() -> dict[str, str]:
    """Return the versions of every package the results and figures rest on."""
    versions = dict(package_versions())
    for package in ("matplotlib", "safetensors", "tqdm", "click"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    versions["platform"] = platform.platform()
    return versions


def write_report(
    out_dir: str | Path,
    results_by_dataset: dict[str, dict[str, Any]],
    figures: Sequence[FigureEntry] = (),
    *,
    command: str = "koopman-hybrid reproduce",
    quick: bool = False,
    settings: dict[str, Any] | None = None,
    seconds: float | None = None,
    figure_errors: Sequence[str] = (),
) -> Path:
    """Write report.md, results.csv, report.json, settings.json and versions.json.

    Parameters
    ----------
    out_dir : str or Path
        Report folder. Figure paths are linked relative to it.
    results_by_dataset : dict
        Results (schema of ``results.json``) per data set name.
    figures : sequence of FigureEntry
        Figures, with absolute paths or paths relative to ``out_dir``. Only files
        that exist are linked.
    command, quick, seconds, figure_errors
        See :func:`render_report`.
    settings : dict, optional
        Written to settings.json (plans and experiment settings per data set).

    Returns
    -------
    pathlib.Path
        The path of report.md.
    """
    out_dir = Path(out_dir)
    versions = report_versions()
    relative = _linked_figures(figures, out_dir)
    text = render_report(
        results_by_dataset,
        relative,
        command=command,
        quick=quick,
        seconds=seconds,
        versions=versions,
        figure_errors=figure_errors,
    )
    rows = [
        row for results in results_by_dataset.values() for row in results_rows(results)
    ]
    atomic_write_text(out_dir / "results.csv", _csv_text(rows))
    atomic_write_json(
        out_dir / "report.json",
        {
            "command": command,
            "quick": quick,
            "seconds": seconds,
            "datasets": results_by_dataset,
            "summary": {
                name: _jsonable_summary(summarize(results))
                for name, results in results_by_dataset.items()
            },
            "figures": [
                {"dataset": e.dataset, "name": e.name, "path": e.path.as_posix()}
                for e in relative
            ],
        },
    )
    atomic_write_json(out_dir / "settings.json", settings or {})
    atomic_write_json(out_dir / "versions.json", versions)
    path = out_dir / "report.md"
    atomic_write_text(path, text + "\n")
    return path


def _linked_figures(figures: Sequence[FigureEntry], out_dir: Path) -> list[FigureEntry]:
    """Return the figures whose files exist, with paths relative to ``out_dir``."""
    linked = []
    for entry in figures:
        path = entry.path if entry.path.is_absolute() else out_dir / entry.path
        if not path.is_file():
            logger.warning("figure %s does not exist; the report leaves it out", path)
            continue
        relative = Path(os.path.relpath(path.resolve(), out_dir.resolve()))
        linked.append(dataclasses.replace(entry, path=relative))
    return linked


def _jsonable_summary(summary: dict[str, Any]) -> dict[str, Any]:
    return {
        key: value
        for key, value in summary.items()
        if not (isinstance(value, float) and math.isnan(value))
    }


def _dataset_name(dataset: str) -> str:
    return PAPER.get(dataset, {}).get("name", dataset)


# Caption of each figure kind, filled in with the values its builder passes.
CAPTIONS = {
    "trajectory": (
        "Trajectory of one test input through hidden layer {layer} of the original "
        "network (left: layer input and padded output) and of the scaled network "
        "(right: all n + 2 = {n_states} states). Rows are units, columns are steps "
        "(paper, figure 2)."
    ),
    "decision_boundaries": (
        "Decision regions of the original network and of one hybrid per replaced "
        "layer (top row: h = {top_delay}, N = {top_n}, as in figure 3 of the paper; "
        "bottom row: each layer's best hybrid with h ≤ {short}). Crosses mark "
        "misclassified test points."
    ),
    "eigenvalues": (
        "DMD eigenvalues of hidden layer {layer} against the unit circle, delay h "
        "growing left to right and N top to bottom (paper, figure 4). Red: outside "
        "the unit circle."
    ),
    "singular_vectors": (
        "Leading right singular vectors of the Hankel matrix H = U S Vh (delay "
        "windows as columns) of the first and last replaced layers, for delays "
        "{delays} (paper, figure 5). Each row of Vh is a signal over the snapshot "
        "index; grey lines separate the trajectories."
    ),
    "accuracy": (
        "Test accuracy of every hybrid over delay h and trajectories N, one panel per "
        "replaced layer (paper, figure 6). Outlined cells are within {close} points "
        "of the original network."
    ),
}


def _entry(
    dataset: str, kind: str, path: Path, name: str | None = None, **values: Any
) -> FigureEntry:
    """Return the report entry of one figure, its caption filled from ``values``."""
    return FigureEntry(dataset, name or kind, path, CAPTIONS[kind].format(**values))


def _trajectory_figure(sweep: SweepResult, folder: Path) -> list[FigureEntry]:
    config = sweep.config
    layer = sweep.plan.figures.trajectory_layer
    state = sweep.states[layer]
    x = sweep.data.test_x[:1].to(sweep.device)
    with torch.no_grad():
        layer_input = sweep.original.run_layers(x, 0, layer)
        layer_output = sweep.original.run_layers(layer_input, layer, layer + 1)
    d_in, d_out = layer_input.shape[1], layer_output.shape[1]
    padded = np.full(d_in, config.pad_value, dtype=np.float64)
    padded[:d_out] = layer_output[0].cpu().numpy()
    original_states = np.column_stack([layer_input[0].cpu().numpy(), padded])
    scaled_states = collect_trajectories(state.scaled, x, pad_value=config.pad_value)
    n = config.scaling.n_inserted
    path = plot_trajectory(
        original_states,
        np.asarray(scaled_states)[0].T,
        folder / f"{config.dataset}_trajectory_layer{layer}.png",
        title=f"{_dataset_name(config.dataset)}, hidden layer {layer} "
        f"({d_in} → {d_out}), first test input, n = {n} inserted layers",
        pad_value=config.pad_value,
    )
    return [_entry(config.dataset, "trajectory", path, layer=layer, n_states=n + 2)]


def _decision_boundary_figure(sweep: SweepResult, folder: Path) -> list[FigureEntry]:
    config = sweep.config
    if not sweep.plan.figures.decision_boundaries:
        return []
    if sweep.data.n_features != 2:
        raise ValueError(
            f"decision boundaries need 2-D inputs, {config.dataset} has "
            f"{sweep.data.n_features} features"
        )

    # Top row: the original and each layer's hybrid at the longest delay and N, as
    # in the paper. Bottom row: each layer's best hybrid with h <= n/2.
    n = config.scaling.n_inserted
    rank = config.ranks[0]
    top_delay = n if n in config.delays else max(config.delays)
    top_n = max(config.trajectories)
    summary = summarize(sweep.results)
    short_row: list[tuple[str, Any] | None] = [None]
    top_row: list[tuple[str, Any] | None] = [("original network", sweep.original)]
    for layer_summary in summary["layers"]:
        layer = layer_summary["layer"]
        state = sweep.states[layer]
        spec = HybridSpec(top_delay, top_n, rank)
        _, hybrid = evaluate_hybrid(state, spec, sweep.data, config, sweep.device)
        top_row.append(
            (f"layer {layer} replaced:\nh = {top_delay}, N = {top_n}", hybrid)
        )
        best_short = layer_summary["best_short"]
        if best_short is None:
            short_row.append(None)
            continue
        spec = HybridSpec(
            int(best_short["delay"]),
            int(best_short["trajectories"]),
            rank_text(best_short),
            best_short["variant"],
        )
        _, hybrid = evaluate_hybrid(state, spec, sweep.data, config, sweep.device)
        label = "fully linear" if spec.variant == "linear" else f"h = {spec.delay}"
        panel_title = f"layer {layer}, best with h ≤ {n // 2}:\n{label}, "
        panel_title += f"N = {spec.n_trajectories}"
        short_row.append((panel_title, hybrid))

    rows = [top_row]
    if any(panel is not None for panel in short_row):
        rows.append(short_row)
    path = plot_decision_boundaries(
        rows,
        sweep.data.test_x.numpy(),
        sweep.data.test_y.numpy(),
        folder / f"{config.dataset}_decision_boundaries.png",
        resolution=sweep.plan.figures.boundary_resolution,
        bounds=(0.0, 1.0, 0.0, 1.0),
        title=f"{_dataset_name(config.dataset)}: decision regions on the test set",
    )
    entry = _entry(
        config.dataset,
        "decision_boundaries",
        path,
        top_delay=top_delay,
        top_n=top_n,
        short=n // 2,
    )
    return [entry]


def _eigenvalue_figures(sweep: SweepResult, folder: Path) -> list[FigureEntry]:
    config = sweep.config
    figures = sweep.plan.figures
    rank = config.ranks[0]
    entries = []
    for layer in figures.eigenvalue_layers:
        letters = iter(string.ascii_uppercase)
        rows = []
        for n_trajectories in figures.eigenvalue_trajectories:
            row: list[tuple[str, Any] | None] = []
            for delay in figures.eigenvalue_delays:
                letter = next(letters, "")
                payload = sweep.cells.get(
                    (layer, HybridSpec(delay, n_trajectories, rank))
                )
                accuracy = None if payload is None else payload["record"]["accuracy"]
                if accuracy is None:
                    row.append(None)
                    continue
                dmd = DMD(rank=rank).fit_trajectories(
                    sweep.states[layer].trajectories[:n_trajectories],
                    delay,
                    constant=config.constant,
                )
                eigenvalues = np.asarray(dmd.eigenvalues_, dtype=np.complex128)
                row.append(
                    (
                        (
                            f"{letter}: h = {delay}, N = {n_trajectories}\n"
                            f"hybrid accuracy {100 * accuracy:.2f} %"
                        ),
                        eigenvalues,
                    )
                )
            rows.append(row)
        path = plot_eigenvalues(
            rows,
            folder / f"{config.dataset}_eigenvalues_layer{layer}.png",
            title=f"{_dataset_name(config.dataset)}, hidden layer {layer}: DMD "
            f"eigenvalues (rank policy {rank})",
        )
        name = f"eigenvalues_layer{layer}"
        entries.append(_entry(config.dataset, "eigenvalues", path, name, layer=layer))
    return entries


def _singular_vector_figure(sweep: SweepResult, folder: Path) -> list[FigureEntry]:
    config = sweep.config
    figures = sweep.plan.figures
    layers = sorted({min(config.layers), max(config.layers)})
    n_states = config.scaling.n_inserted + 2
    delays = [d for d in figures.singular_vector_delays if d <= n_states - 1]
    if not delays:
        raise ValueError(
            f"no singular-vector delay in {figures.singular_vector_delays} fits "
            f"trajectories of {n_states} states"
        )
    count = min(figures.singular_vector_trajectories, max(config.trajectories))
    trajectories = {
        f"hidden layer {layer}": sweep.states[layer].trajectories[:count]
        for layer in layers
    }
    path = plot_right_singular_vectors(
        trajectories,
        delays,
        folder / f"{config.dataset}_singular_vectors.png",
        n_vectors=figures.singular_vector_count,
        title=f"{_dataset_name(config.dataset)}: leading right singular vectors "
        f"(rows of Vh) of the Hankel matrix, N = {count} trajectories",
    )
    listed = ", ".join(str(d) for d in delays)
    return [_entry(config.dataset, "singular_vectors", path, delays=listed)]


def _accuracy_figure(sweep: SweepResult, folder: Path) -> list[FigureEntry]:
    dataset = sweep.config.dataset
    path = plot_accuracy_grid(
        sweep.results,
        folder / f"{dataset}_accuracy.png",
        title=f"{_dataset_name(dataset)}: hybrid test accuracy (%)",
    )
    return [_entry(dataset, "accuracy", path, close=CLOSE_POINTS)]


FIGURE_BUILDERS = (
    ("trajectory", _trajectory_figure),
    ("decision boundaries", _decision_boundary_figure),
    ("eigenvalues", _eigenvalue_figures),
    ("right singular vectors", _singular_vector_figure),
    ("accuracy grid", _accuracy_figure),
)


def make_figures(
    sweep: SweepResult, folder: str | Path
) -> tuple[list[FigureEntry], list[str]]:
    """Draw every figure of one data set's sweep into ``folder``.

    A figure that fails is logged and skipped, so that one plotting error does not
    lose the report of a long sweep.

    Returns
    -------
    entries : list of FigureEntry
        The figures written.
    errors : list of str
        One message per figure that failed.
    """
    folder = Path(folder)
    entries: list[FigureEntry] = []
    errors: list[str] = []
    for name, builder in FIGURE_BUILDERS:
        try:
            entries += builder(sweep, folder)
        except (ValueError, RuntimeError, KeyError) as error:
            message = f"{_dataset_name(sweep.config.dataset)} {name}: {error}"
            logger.exception("figure failed: %s", message)
            errors.append(message)
    return entries, errors


def run_report(
    datasets: Sequence[str],
    out_dir: str | Path,
    *,
    quick: bool = False,
    plans: dict[str, SweepPlan] | None = None,
    base_configs: dict[str, Any] | None = None,
    data_dir: Path | None = None,
    cache_dir: Path | None = None,
    device: str | None = None,
    progress: bool | None = None,
    command: str | None = None,
) -> Path:
    """Run the sweep of every data set, draw the figures and write the report.

    With one data set, its networks, cells and ``results.json`` go to ``out_dir``
    itself. With several, each gets the subfolder ``out_dir/NAME``. Figures go to
    ``out_dir/figures``.

    Parameters
    ----------
    datasets : sequence of str
        Data sets to run, in report order.
    out_dir : str or Path
        Report folder.
    quick : bool, default False
        Use the quick plans of :func:`koopman_hybrid.sweep.default_plan`.
    plans : dict, optional
        Plans per data set, replacing the default plans.
    base_configs : dict, optional
        Settings per data set that the plans are applied to. Default: the presets.
    data_dir, cache_dir : Path, optional
        MNIST files, as for :func:`koopman_hybrid.datasets.load_dataset`.
    device : {"cpu", "cuda"}, optional
        Replaces the device of the settings.
    progress : bool, optional
        Show progress bars; None shows them only on a terminal.
    command : str, optional
        The command line, for the report's header.

    Returns
    -------
    pathlib.Path
        The path of report.md.

    Raises
    ------
    ValueError
        If a data set is unknown or a plan is invalid; every plan is checked before
        any training starts.
    """
    out_dir = Path(out_dir)
    if not datasets:
        raise ValueError("no data set was given; name at least one")
    plans = dict(plans or {})
    base_configs = dict(base_configs or {})
    for name in datasets:
        plan = plans.setdefault(name, default_plan(name, quick=quick))
        config = plan.experiment_config(base_configs.get(name))
        if device is not None:
            config = dataclasses.replace(config, device=device)
        check_config(config)
    started = time.perf_counter()

    results_by_dataset: dict[str, dict[str, Any]] = {}
    entries: list[FigureEntry] = []
    errors: list[str] = []
    settings: dict[str, Any] = {"command": command, "quick": quick, "datasets": {}}
    for name in datasets:
        folder = out_dir if len(datasets) == 1 else out_dir / name
        sweep = run_sweep(
            plans[name],
            folder,
            base_config=base_configs.get(name),
            data_dir=data_dir,
            cache_dir=cache_dir,
            device=device,
            progress=progress,
        )
        figures_started = time.perf_counter()
        new_entries, new_errors = make_figures(sweep, out_dir / "figures")
        entries += new_entries
        errors += new_errors
        results = dict(sweep.results)
        results["seconds"] = dict(results["seconds"])
        results["seconds"]["figures"] = round(time.perf_counter() - figures_started, 3)
        results_by_dataset[name] = results
        settings["datasets"][name] = {
            "folder": str(folder),
            "plan": plans[name].to_json(),
            "config": sweep.config.to_json(),
        }
        # Drop the networks and trajectories before the next data set.
        del sweep

    return write_report(
        out_dir,
        results_by_dataset,
        entries,
        command=command or "koopman-hybrid reproduce " + " ".join(datasets),
        quick=quick,
        settings=settings,
        seconds=time.perf_counter() - started,
        figure_errors=errors,
    )


def targets_text(results_by_dataset: dict[str, dict[str, Any]]) -> str:
    """Return the targets of the report as plain text lines, for a terminal."""
    lines = []
    for results in results_by_dataset.values():
        for target, value, met in _targets_rows(summarize(results)):
            status = "met   " if met == "yes" else "MISSED"
            lines.append(f"{status} {target}: {value}")
    return "\n".join(lines).replace("**", "")
