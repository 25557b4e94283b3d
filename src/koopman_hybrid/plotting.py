"""Figures of the reproduction report, written as PNG files.

Every ``plot_*`` function takes arrays (or models), a ``path`` (str or os.PathLike)
and an optional ``title`` (str) for the top of the figure. It writes the PNG to
``path`` atomically, so that a failed call leaves no file, and returns ``path`` as a
``pathlib.Path``. Figures are drawn on a ``matplotlib.figure.Figure`` with the Agg
canvas attached explicitly, so that nothing depends on ``DISPLAY``, ``MPLBACKEND`` or
the global pyplot state, and importing this module leaves the backend of the calling
program unchanged.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Circle, Rectangle

from .delay import delay_embed
from .dmd import UNSTABLE_TOLERANCE
from .files import atomic_path
from .sweep import rank_text

__all__ = [
    "HybridGrid",
    "hybrid_grids",
    "plot_accuracy_grid",
    "plot_decision_boundaries",
    "plot_eigenvalues",
    "plot_right_singular_vectors",
    "plot_trajectory",
]

DPI = 120

# Heat maps print each value in its cell only while the numbers stay legible.
ANNOTATE_MAX_ROWS = 16

# Trajectory heat maps colour values up to this percentile of all their entries.
TRAJECTORY_COLOUR_PERCENTILE = 99.0

# Eigenvalue panels show at most this radius, so that one far-out eigenvalue does not
# shrink the unit circle to a dot. Eigenvalues beyond it are drawn on the border.
EIGENVALUE_AXIS_LIMIT = 2.0

# Accuracy heat maps colour at most this many percentage points below the original
# accuracy, so that 95 % and 98 % differ clearly. Lower cells get the lowest colour,
# and their printed value stays exact.
ACCURACY_COLOUR_RANGE_POINTS = 5.0

# A hybrid within this many percentage points of the original network is outlined.
CLOSE_TO_ORIGINAL_POINTS = 0.5

CLASS_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
REGION_COLOURS = ("#c6dbef", "#fcbba1", "#c7e9c0", "#dadaeb", "#fdd0a2", "#e7cbc0")

Panel = tuple[str, Any]


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=DPI)
    return path


def _as_float_matrix(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or 0 in array.shape:
        raise ValueError(
            f"{name} must be a non-empty array of shape (n_units, n_steps), got shape "
            f"{array.shape}."
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values; cannot plot it.")
    return array


def _check_panel_rows(panels: Sequence[Sequence[Panel | None]], name: str) -> int:
    """Check a list of panel rows and return the number of columns."""
    if isinstance(panels, (str, bytes)) or not isinstance(panels, Sequence):
        raise TypeError(f"{name} must be a sequence of rows of panels.")
    if not panels or not any(panel is not None for row in panels for panel in row):
        raise ValueError(f"{name} has no panel to draw; pass at least one.")
    return max(len(row) for row in panels)


def _heat_map_text(axes, values: np.ndarray, norm_low: float, norm_high: float) -> None:
    middle = 0.5 * (norm_low + norm_high)
    for row in range(values.shape[0]):
        for column in range(values.shape[1]):
            value = values[row, column]
            colour = "black" if value > middle else "white"
            axes.text(
                column,
                row,
                f"{value:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color=colour,
            )


def plot_trajectory(
    original_states: np.ndarray,
    scaled_states: np.ndarray,
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
    pad_value: float | None = None,
) -> Path:
    """Draw one input's trajectory through the original and the scaled layer.

    Two heat maps share one colour scale, with states as rows and steps as columns.
    On the left, the original layer takes two steps: its input s_0 and its output,
    padded to the input width. On the right, the scaled layer takes all n + 2 steps
    s_0, ..., s_{n+1}. The first and last columns of the two panels should agree.

    Parameters
    ----------
    original_states : array of shape (d_in, 2)
        Layer input and padded layer output of the original network.
    scaled_states : array of shape (d_in, n + 2)
        The trajectory of the same input through the scaled network.
    pad_value : float, optional
        The constant that pads the output. When given, the title names the rows that
        contain it, and a dashed line marks where they start.
    path, title
        See the module docstring.

    Raises
    ------
    ValueError
        If the arrays are not 2-D, ``original_states`` has other than 2 columns,
        ``scaled_states`` has fewer than 3, or their row counts differ.
    """
    original = _as_float_matrix(original_states, "original_states")
    scaled = _as_float_matrix(scaled_states, "scaled_states")
    if original.shape[1] != 2:
        raise ValueError(
            "original_states must have 2 columns (layer input, padded layer output), "
            f"got shape {original.shape}."
        )
    if scaled.shape[1] < 3:
        raise ValueError(
            "scaled_states must have n + 2 >= 3 columns (s_0 to s_{n+1}), got shape "
            f"{scaled.shape}."
        )
    if original.shape[0] != scaled.shape[0]:
        raise ValueError(
            f"original_states has {original.shape[0]} rows but scaled_states has "
            f"{scaled.shape[0]}; both must have one row per unit of the layer input."
        )

    n_units, n_steps = scaled.shape
    # A few large activations would leave every other cell dark, so the colour scale
    # ends at the 99th percentile and the colour bar marks the clipped top.
    every_value = np.concatenate([original.ravel(), scaled.ravel()])
    low = float(every_value.min())
    high = float(np.percentile(every_value, TRAJECTORY_COLOUR_PERCENTILE))
    if high <= low:
        high = float(every_value.max())
    if high == low:
        high = low + 1.0
    clipped = bool(every_value.max() > high)
    annotate = n_units <= ANNOTATE_MAX_ROWS
    height = 1.8 + 0.32 * n_units if annotate else 6.0
    width = 2.5 + 0.62 * (n_steps + 2)
    figure = _new_figure(width, height)
    grid = figure.add_gridspec(1, 2, width_ratios=[2, n_steps])
    left = figure.add_subplot(grid[0, 0])
    right = figure.add_subplot(grid[0, 1], sharey=left)

    # Both panels get two-line tick labels, so that their step labels line up.
    scaled_labels = [f"$s_{{{step}}}$\n" for step in range(n_steps)]
    scaled_labels[0] += "(input)"
    scaled_labels[-1] += "(output)"
    image = None
    for axes, values, labels, panel_title in (
        (left, original, ["$s_0$\n(input)", "output\n(padded)"], "original layer"),
        (right, scaled, scaled_labels, "scaled layer"),
    ):
        image = axes.imshow(
            values,
            aspect="auto",
            cmap="viridis",
            vmin=low,
            vmax=high,
            interpolation="nearest",
        )
        axes.set_xticks(range(values.shape[1]), labels)
        axes.set_title(panel_title)
        axes.set_xlabel("step")
        if annotate:
            _heat_map_text(axes, values, low, high)
    left.set_ylabel("unit of the layer input")
    if annotate:
        left.set_yticks(range(n_units))
    right.tick_params(labelleft=False)
    figure.colorbar(
        image,
        ax=[left, right],
        label="activation",
        shrink=0.9,
        extend="max" if clipped else "neither",
    )

    lines = [title] if title else []
    if pad_value is not None:
        padded = _padded_rows(original[:, 1], pad_value)
        if padded:
            lines.append(
                f"units {padded[0]} to {padded[-1]} of the output hold the pad value "
                f"{pad_value:g} (below the dashed line)"
            )
            for axes, column in ((left, 1), (right, n_steps - 1)):
                axes.hlines(
                    padded[0] - 0.5,
                    column - 0.5,
                    column + 0.5,
                    colors="white",
                    linestyles="--",
                    linewidth=1.5,
                )
    if lines:
        figure.suptitle("\n".join(lines))
    return _save(figure, path)


def _padded_rows(output: np.ndarray, pad_value: float) -> list[int]:
    """Return the trailing rows of ``output`` that equal the pad value."""
    rows = []
    for row in range(len(output) - 1, -1, -1):
        if output[row] != pad_value:
            break
        rows.append(row)
    return rows[::-1]


def _model_device(model: Any) -> torch.device:
    if isinstance(model, torch.nn.Module):
        for parameter in model.parameters():
            return parameter.device
    return torch.device("cpu")


def _predict_classes(model: Callable, points: np.ndarray) -> np.ndarray:
    inputs = torch.as_tensor(points, dtype=torch.float32, device=_model_device(model))
    with torch.no_grad():
        logits = model(inputs)
    return logits.argmax(dim=1).cpu().numpy()


def plot_decision_boundaries(
    panels: Sequence[Sequence[Panel | None]],
    points: np.ndarray,
    labels: np.ndarray,
    path: str | os.PathLike[str],
    *,
    resolution: int = 200,
    bounds: tuple[float, float, float, float] | None = None,
    title: str | None = None,
) -> Path:
    """Draw the decision regions of 2-D classifiers with the test points on top.

    Each panel shows one model's predicted class over a grid of the plane, the points
    coloured by their true class, the misclassified points marked with a black cross,
    and the model's accuracy on the points in its title.

    Parameters
    ----------
    panels : sequence of rows, each a sequence of (title, model) or None
        Each model maps a float32 tensor of shape (batch, 2) to logits of shape
        (batch, n_classes), such as an ``MLP`` or a ``KoopmanHybrid``. None leaves a
        slot empty, so that columns can line up (one column per replaced layer).
    points : array of shape (n_points, 2)
        Test inputs.
    labels : array of shape (n_points,)
        Their true classes, integers from 0.
    resolution : int, default 200
        Grid points per axis for the decision regions.
    bounds : (x_min, x_max, y_min, y_max), optional
        Plotted region. By default the points' range plus a 2 % margin.
    path, title
        See the module docstring.

    Raises
    ------
    ValueError
        If ``points`` is not of shape (n, 2), ``labels`` does not match it,
        ``resolution`` < 2, or no panel is given.
    """
    n_columns = _check_panel_rows(panels, "panels")
    points = np.asarray(points, dtype=np.float32)
    labels = np.asarray(labels).astype(np.int64)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0:
        raise ValueError(
            f"points must be an array of shape (n_points, 2), got {points.shape}."
        )
    if labels.shape != (len(points),):
        raise ValueError(
            f"labels must have shape ({len(points)},) to match points, got "
            f"{labels.shape}."
        )
    if resolution < 2:
        raise ValueError(f"resolution must be at least 2, got {resolution}.")
    if bounds is None:
        low = points.min(axis=0)
        high = points.max(axis=0)
        margin = 0.02 * np.maximum(high - low, 1e-6)
        bounds = (
            float(low[0] - margin[0]),
            float(high[0] + margin[0]),
            float(low[1] - margin[1]),
            float(high[1] + margin[1]),
        )
    x_min, x_max, y_min, y_max = bounds
    grid_x, grid_y = np.meshgrid(
        np.linspace(x_min, x_max, resolution), np.linspace(y_min, y_max, resolution)
    )
    grid_points = np.column_stack([grid_x.ravel(), grid_y.ravel()])

    n_rows = len(panels)
    figure = _new_figure(3.2 * n_columns, 3.4 * n_rows + (0.8 if title else 0.4))
    n_classes = int(labels.max()) + 1
    regions = ListedColormap(REGION_COLOURS[: max(n_classes, 2)])
    for row_index, row in enumerate(panels):
        for column_index in range(n_columns):
            panel = row[column_index] if column_index < len(row) else None
            if panel is None:
                continue
            panel_title, model = panel
            axes = figure.add_subplot(
                n_rows, n_columns, row_index * n_columns + column_index + 1
            )
            regions_grid = _predict_classes(model, grid_points).reshape(grid_x.shape)
            predicted = _predict_classes(model, points)
            correct = predicted == labels
            axes.imshow(
                regions_grid,
                origin="lower",
                extent=(x_min, x_max, y_min, y_max),
                cmap=regions,
                vmin=-0.5,
                vmax=regions.N - 0.5,
                interpolation="nearest",
            )
            for label in range(n_classes):
                chosen = labels == label
                axes.scatter(
                    points[chosen, 0],
                    points[chosen, 1],
                    s=4,
                    color=CLASS_COLOURS[label % len(CLASS_COLOURS)],
                    label=f"class {label}",
                    linewidths=0,
                )
            axes.scatter(
                points[~correct, 0],
                points[~correct, 1],
                s=14,
                marker="x",
                color="black",
                linewidths=0.8,
                label="misclassified",
            )
            axes.set_title(f"{panel_title}\naccuracy {100 * correct.mean():.2f} %")
            axes.set_xlim(x_min, x_max)
            axes.set_ylim(y_min, y_max)
            axes.set_aspect("equal")
            axes.set_xticks([])
            axes.set_yticks([])
    # One legend below the panels, so that it hides no point.
    handles, names = axes.get_legend_handles_labels()
    figure.legend(
        handles, names, loc="outside lower center", ncols=len(names), markerscale=2.5
    )
    if title:
        figure.suptitle(title)
    return _save(figure, path)


def count_outside_unit_circle(
    eigenvalues: np.ndarray, tolerance: float = UNSTABLE_TOLERANCE
) -> int:
    """Count eigenvalues with modulus above 1 + ``tolerance``.

    The default tolerance is the one ``DMD.n_unstable_`` uses, so the counts agree.
    """
    moduli = np.abs(np.asarray(eigenvalues, dtype=np.complex128))
    return int(np.count_nonzero(moduli > 1.0 + tolerance))


def plot_eigenvalues(
    panels: Sequence[Sequence[Panel | None]],
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
    axis_limit: float = EIGENVALUE_AXIS_LIMIT,
) -> Path:
    """Draw DMD eigenvalues against the unit circle, one panel per fit.

    Each panel has equal axes, the unit circle, the eigenvalues inside it in blue and
    those outside in red, and in its title the count outside. Eigenvalues beyond
    ``axis_limit`` are drawn on the border as red triangles and counted in the title.

    Parameters
    ----------
    panels : sequence of rows, each a sequence of (title, eigenvalues) or None
        ``eigenvalues`` is a complex array of shape (rank,). None leaves a slot empty.
    axis_limit : float, default 2.0
        Largest real or imaginary part shown.
    path, title
        See the module docstring.

    Raises
    ------
    ValueError
        If no panel is given, an eigenvalue array is empty or not finite, or
        ``axis_limit`` <= 1.
    """
    n_columns = _check_panel_rows(panels, "panels")
    if axis_limit <= 1.0:
        raise ValueError(
            f"axis_limit must be above 1 so that the unit circle shows, got "
            f"{axis_limit}."
        )
    checked: list[tuple[int, int, str, np.ndarray]] = []
    for row_index, row in enumerate(panels):
        for column_index, panel in enumerate(row):
            if panel is None:
                continue
            panel_title, values = panel
            eigenvalues = np.asarray(values, dtype=np.complex128).ravel()
            if eigenvalues.size == 0 or not np.all(np.isfinite(eigenvalues)):
                raise ValueError(
                    f"panel {panel_title!r} needs a non-empty, finite eigenvalue array."
                )
            checked.append((row_index, column_index, panel_title, eigenvalues))

    # One limit for all panels, so that their scales compare at a glance.
    largest = max(float(np.abs(values).max()) for *_, values in checked)
    limit = min(axis_limit, max(1.15, 1.05 * largest))
    n_rows = len(panels)
    figure = _new_figure(3.4 * n_columns, 3.9 * n_rows + 0.6)
    for row_index, column_index, panel_title, eigenvalues in checked:
        axes = figure.add_subplot(
            n_rows, n_columns, row_index * n_columns + column_index + 1
        )
        _draw_eigenvalue_panel(axes, eigenvalues, panel_title, limit)
        # Axis labels and tick labels on the outer panels only, since all panels
        # share one scale; this leaves room for the titles of the row below.
        if column_index == 0:
            axes.set_ylabel("imaginary part")
        else:
            axes.tick_params(labelleft=False)
        if _panel_below(panels, row_index, column_index):
            axes.tick_params(labelbottom=False)
        else:
            axes.set_xlabel("real part")
    key = "blue: on or inside the unit circle; red: outside"
    figure.suptitle(f"{title}\n{key}" if title else key)
    return _save(figure, path)


def _panel_below(
    panels: Sequence[Sequence[Panel | None]], row_index: int, column_index: int
) -> bool:
    """Return whether any later row has a panel in this column."""
    return any(
        column_index < len(row) and row[column_index] is not None
        for row in panels[row_index + 1 :]
    )


def _draw_eigenvalue_panel(
    axes, eigenvalues: np.ndarray, panel_title: str, limit: float
) -> None:
    moduli = np.abs(eigenvalues)
    outside = moduli > 1.0 + UNSTABLE_TOLERANCE
    beyond = (np.abs(eigenvalues.real) > limit) | (np.abs(eigenvalues.imag) > limit)

    axes.add_patch(Circle((0.0, 0.0), 1.0, fill=False, color="0.4", linewidth=1.0))
    axes.axhline(0.0, color="0.85", linewidth=0.6, zorder=0)
    axes.axvline(0.0, color="0.85", linewidth=0.6, zorder=0)
    shown = ~beyond
    axes.scatter(
        eigenvalues.real[shown & ~outside],
        eigenvalues.imag[shown & ~outside],
        s=9,
        color="#1f77b4",
        alpha=0.7,
        linewidths=0,
    )
    axes.scatter(
        eigenvalues.real[shown & outside],
        eigenvalues.imag[shown & outside],
        s=12,
        color="#d62728",
        linewidths=0,
    )
    if beyond.any():
        clipped = eigenvalues[beyond] * (limit / np.abs(eigenvalues[beyond]))
        axes.scatter(
            clipped.real, clipped.imag, s=22, marker="^", color="#d62728", linewidths=0
        )
    axes.set_xlim(-limit, limit)
    axes.set_ylim(-limit, limit)
    axes.set_aspect("equal")
    summary = f"{int(outside.sum())} of {eigenvalues.size} outside the unit circle"
    if beyond.any():
        summary += f"\n({int(beyond.sum())} beyond ±{limit:g}, drawn on the border)"
    axes.set_title(f"{panel_title}\n{summary}", fontsize=9)


def hankel_matrix(trajectories: np.ndarray, delay: int) -> np.ndarray:
    """Return the Hankel matrix of all trajectories, one delay window per column.

    Parameters
    ----------
    trajectories : array of shape (n_trajectories, n_states, n_features)
        States of each trajectory.
    delay : int
        Delay h; each column stacks h + 1 consecutive states, oldest first.

    Returns
    -------
    array of shape ((delay + 1) * n_features, n_trajectories * (n_states - delay))
        Columns run through the windows of the first trajectory, then the second, and
        so on. With delay 0 this is the trajectory matrix.
    """
    windows = np.asarray(delay_embed(np.asarray(trajectories), delay))
    n_trajectories, n_windows, window_length = windows.shape
    return windows.reshape(n_trajectories * n_windows, window_length).T


def right_singular_vectors(
    matrix: np.ndarray, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return the first ``count`` rows of Vh in matrix = U S Vh, and the energy shares.

    Signs are fixed so that each vector's entry of largest magnitude is positive,
    because the SVD determines a singular vector only up to sign.

    Returns
    -------
    vectors : array of shape (count, n_columns)
        Rows of Vh, in order of descending singular value.
    shares : array of shape (count,)
        s_j^2 / sum(s^2): the fraction of the squared Frobenius norm each carries.
    """
    _, s, Vh = np.linalg.svd(np.asarray(matrix, dtype=np.float64), full_matrices=False)
    count = min(count, len(s))
    vectors = Vh[:count].copy()
    largest = np.argmax(np.abs(vectors), axis=1)
    signs = np.sign(vectors[np.arange(count), largest])
    vectors *= np.where(signs == 0, 1.0, signs)[:, None]
    energy = float(np.sum(s**2))
    shares = s[:count] ** 2 / energy if energy > 0 else np.zeros(count)
    return vectors, shares


def plot_right_singular_vectors(
    trajectories: Mapping[str, np.ndarray],
    delays: Sequence[int],
    path: str | os.PathLike[str],
    *,
    n_vectors: int = 3,
    title: str | None = None,
) -> Path:
    """Draw the leading right singular vectors of Hankel matrices for several delays.

    For each entry of ``trajectories`` (one column of panels, such as the first and
    the last hidden layer) and each delay h (one row), the Hankel matrix H has the
    delay windows as columns. With H = U S Vh, row j of Vh gives the weight of the
    j-th spatio-temporal pattern U[:, j] in every window, so it is a signal over the
    snapshot index: the window position t inside a trajectory, trajectory after
    trajectory. Grey lines separate the trajectories.

    Parameters
    ----------
    trajectories : mapping of label to array of shape (N, n_states, n_features)
        Trajectories of each layer. Keep N small (about 5 to 10), so that the
        per-trajectory pattern stays visible.
    delays : sequence of int
        Delays h, each below n_states.
    n_vectors : int, default 3
        Rows of Vh drawn per panel.
    path, title
        See the module docstring.

    Raises
    ------
    ValueError
        If ``trajectories`` or ``delays`` is empty, ``n_vectors`` < 1, or a delay
        leaves no complete window.
    """
    if not trajectories:
        raise ValueError("trajectories is empty; pass at least one labelled array.")
    if not delays:
        raise ValueError("delays is empty; pass at least one delay.")
    if n_vectors < 1:
        raise ValueError(f"n_vectors must be at least 1, got {n_vectors}.")

    n_rows = len(delays)
    n_columns = len(trajectories)
    figure = _new_figure(6.6 * n_columns, 2.3 * n_rows + 0.8)
    for column_index, (label, values) in enumerate(trajectories.items()):
        array = np.asarray(values)
        for row_index, delay in enumerate(delays):
            matrix = hankel_matrix(array, delay)
            n_windows = array.shape[1] - delay
            vectors, shares = right_singular_vectors(matrix, n_vectors)
            axes = figure.add_subplot(
                n_rows, n_columns, row_index * n_columns + column_index + 1
            )
            for boundary in range(n_windows, matrix.shape[1], n_windows):
                axes.axvline(boundary - 0.5, color="0.8", linewidth=0.6, zorder=0)
            for index, (vector, share) in enumerate(zip(vectors, shares)):
                axes.plot(
                    vector,
                    linewidth=1.0,
                    marker="." if n_windows <= 3 else None,
                    markersize=3,
                    label=f"$v_{{{index + 1}}}$: {100 * share:.1f} % of energy",
                )
            axes.set_title(
                f"{label}, h = {delay}: Hankel matrix "
                f"{matrix.shape[0]} × {matrix.shape[1]}",
                fontsize=9,
            )
            # The legend sits right of the panel, so that it hides no line.
            axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
            axes.set_ylabel("entry of $v_j$")
            if row_index == n_rows - 1:
                axes.set_xlabel("snapshot index (trajectory by trajectory)")
    heading = title or "Right singular vectors (rows of Vh) of the Hankel matrix"
    figure.suptitle(
        f"{heading}\nEach column of H is one delay window; grey lines separate "
        "trajectories, so each stretch runs over the window start t."
    )
    return _save(figure, path)


def plot_accuracy_grid(
    results: Mapping[str, Any],
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
) -> Path:
    """Draw every hybrid's test accuracy over delay h and trajectories N, per layer.

    One heat map per replaced layer (and per rank policy when there are several),
    with N as rows and h as columns. The fully linear variant is the first column,
    set off by a white line, and a dashed line separates the delays h <= n/2 from the
    longer ones when the results give n. Each cell prints the accuracy in percent,
    and cells within 0.5 percentage points of the original network are outlined.
    The colour scale spans at most 5 points below the original accuracy, which a red
    line marks on the colour bar; each panel title gives the layer's scaled and
    least-squares accuracies. The default title names the data set.

    Parameters
    ----------
    results : mapping
        Results in the schema of ``results.json``: ``dataset``,
        ``original_accuracy``, ``layers`` (each with ``layer``, ``scaled_accuracy``,
        ``least_squares_accuracy`` and ``hybrids``) and, optionally,
        ``settings.scaling.n_inserted``.
    path, title
        See the module docstring.

    Raises
    ------
    ValueError
        If no layer has a hybrid with an accuracy.
    """
    original = 100 * float(results["original_accuracy"])
    n_inserted = results.get("settings", {}).get("scaling", {}).get("n_inserted")
    panels = [
        (layer, grid, grid.accuracies())
        for layer in results["layers"]
        for grid in hybrid_grids(layer["hybrids"])
    ]
    panels = [panel for panel in panels if np.isfinite(panel[2]).any()]
    if not panels:
        raise ValueError("results has no hybrid with an accuracy to plot.")

    finite = np.concatenate([values[np.isfinite(values)] for *_, values in panels])
    high = max(float(finite.max()), original)
    low = max(float(finite.min()), original - ACCURACY_COLOUR_RANGE_POINTS)
    if high - low < 0.5:
        low = high - 0.5
    # Headroom above the top value, so that the original's mark is not on the edge.
    high += 0.03 * (high - low)
    several_ranks = len({grid.rank for _, grid, _ in panels}) > 1
    n_columns = min(len(panels), 3)
    n_rows = math.ceil(len(panels) / n_columns)
    widest = max(len(grid.columns) for _, grid, _ in panels)
    tallest = max(len(grid.trajectories) for _, grid, _ in panels)
    figure = _new_figure(
        1.4 + n_columns * (1.2 + 0.7 * widest), 1.2 + n_rows * (1.6 + 0.45 * tallest)
    )

    image = None
    all_axes = []
    for index, (layer, grid, values) in enumerate(panels):
        axes = figure.add_subplot(n_rows, n_columns, index + 1)
        all_axes.append(axes)
        image = axes.imshow(
            np.ma.masked_invalid(values),
            cmap="viridis",
            vmin=low,
            vmax=high,
            aspect="auto",
        )
        _accuracy_cells(axes, values, original, 0.5 * (low + high))
        _accuracy_separators(axes, grid, n_inserted)
        axes.set_xticks(range(len(grid.columns)), grid.column_labels)
        axes.set_yticks(
            range(len(grid.trajectories)), [str(n) for n in grid.trajectories]
        )
        axes.set_xlabel("delay h")
        axes.set_ylabel("trajectories N")
        heading = (
            f"hidden layer {layer['layer']} replaced\nscaled "
            f"{100 * float(layer['scaled_accuracy']):.2f} %, least squares "
            f"{100 * float(layer['least_squares_accuracy']):.2f} %"
        )
        if several_ranks:
            heading += f"\nrank {grid.rank}"
        axes.set_title(heading, fontsize=9)
    colorbar = figure.colorbar(
        image, ax=all_axes, label="test accuracy (%)", extend="min", shrink=0.9
    )
    colorbar.ax.axhline(original, color="red", linewidth=2.0)
    colorbar.ax.annotate(
        "original",
        xy=(0.0, original),
        xycoords=("axes fraction", "data"),
        xytext=(-3, 0),
        textcoords="offset points",
        ha="right",
        va="center",
        color="red",
        fontsize=8,
    )
    heading = title or f"{results['dataset']}: hybrid test accuracy (%)"
    notes = [
        f"original network {original:.2f} % (red line on the colour bar)",
        f"outlined: within {CLOSE_TO_ORIGINAL_POINTS} points of it",
    ]
    if n_inserted is not None:
        notes.append(f"dashed: h ≤ n/2 = {int(n_inserted) // 2} to its left")
    figure.suptitle(f"{heading}\n{'; '.join(notes)}", fontsize=10)
    return _save(figure, path)


def _accuracy_cells(axes, values: np.ndarray, original: float, middle: float) -> None:
    """Print each accuracy in its cell and outline those close to the original."""
    for row in range(values.shape[0]):
        for column in range(values.shape[1]):
            value = values[row, column]
            if not np.isfinite(value):
                axes.text(column, row, "–", ha="center", va="center", fontsize=8)
                continue
            close = value >= original - CLOSE_TO_ORIGINAL_POINTS
            axes.text(
                column,
                row,
                f"{value:.1f}",
                ha="center",
                va="center",
                fontsize=8,
                fontweight="bold" if close else "normal",
                color="black" if value > middle else "white",
            )
            if close:
                outline = Rectangle(
                    (column - 0.46, row - 0.46),
                    0.92,
                    0.92,
                    fill=False,
                    edgecolor="red",
                    linewidth=1.6,
                )
                axes.add_patch(outline)


def _accuracy_separators(axes, grid: HybridGrid, n_inserted: int | None) -> None:
    """Set off the linear column and the delays h <= n/2 with vertical lines."""
    if grid.columns and grid.columns[0][0] == "linear" and len(grid.columns) > 1:
        axes.axvline(0.5, color="white", linewidth=3.0)
    if n_inserted is None:
        return
    short = [i for i, (_, h) in enumerate(grid.columns) if 2 * h <= int(n_inserted)]
    if short and short[-1] < len(grid.columns) - 1:
        axes.axvline(short[-1] + 0.5, color="white", linewidth=1.5, linestyle="--")


@dataclass(frozen=True)
class HybridGrid:
    """One layer's hybrids of one rank policy, laid out as rows N and columns h.

    ``columns`` holds ("linear", 0) first where the fully linear variant is present,
    then ("delay", h) for each delay in ascending order. ``records[i][j]`` is the
    hybrid record of row ``trajectories[i]`` and column ``columns[j]``, or None.
    """

    rank: str
    trajectories: list[int]
    columns: list[tuple[str, int]]
    records: list[list[Mapping[str, Any] | None]]

    @property
    def column_labels(self) -> list[str]:
        """Return "linear" or the delay h of each column."""
        return ["linear" if kind == "linear" else str(h) for kind, h in self.columns]

    def accuracies(self) -> np.ndarray:
        """Return the accuracies in percent, NaN where a cell is missing or failed."""
        values = np.full((len(self.trajectories), len(self.columns)), np.nan)
        for row, records in enumerate(self.records):
            for column, record in enumerate(records):
                if record is not None and record.get("accuracy") is not None:
                    values[row, column] = 100 * float(record["accuracy"])
        return values

    def linear_steps(self) -> list[int | None]:
        """Return each column's count of linear steps, None where no record has it."""
        counts = []
        for column in range(len(self.columns)):
            steps = [
                records[column].get("linear_steps")
                for records in self.records
                if records[column] is not None
            ]
            known = [int(step) for step in steps if step is not None]
            counts.append(known[0] if known else None)
        return counts


def _column_of(hybrid: Mapping[str, Any]) -> tuple[str, int]:
    if hybrid["variant"] == "linear":
        return ("linear", 0)
    return ("delay", int(hybrid["delay"]))


def hybrid_grids(hybrids: Sequence[Mapping[str, Any]]) -> list[HybridGrid]:
    """Lay out one layer's hybrid records as grids, one per rank policy.

    Parameters
    ----------
    hybrids : sequence of mapping
        Hybrid records in the schema of ``results.json`` (``variant``, ``delay``,
        ``trajectories``, ``rank_policy`` and, when it finished, ``accuracy``).

    Returns
    -------
    list of HybridGrid
        In order of the rank policies' text form.
    """
    grids = []
    for rank in sorted({rank_text(dict(h)) for h in hybrids}):
        chosen = [h for h in hybrids if rank_text(dict(h)) == rank]
        trajectories = sorted({int(h["trajectories"]) for h in chosen})
        columns = sorted(
            {_column_of(h) for h in chosen}, key=lambda c: (c[0] != "linear", c[1])
        )
        records: list[list[Mapping[str, Any] | None]] = [
            [None] * len(columns) for _ in trajectories
        ]
        for hybrid in chosen:
            row = trajectories.index(int(hybrid["trajectories"]))
            records[row][columns.index(_column_of(hybrid))] = hybrid
        grids.append(HybridGrid(rank, trajectories, columns, records))
    return grids
