"""Figure functions on tiny inputs: each writes a PNG without a display."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from koopman_hybrid.plotting import (
    count_outside_unit_circle,
    hankel_matrix,
    hybrid_grids,
    plot_accuracy_grid,
    plot_decision_boundaries,
    plot_eigenvalues,
    plot_right_singular_vectors,
    plot_trajectory,
    right_singular_vectors,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def no_display(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("MPLBACKEND", raising=False)


def assert_png(path):
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 1000


def tiny_results():
    hybrids = []
    for variant, delays in (("delay", (1, 3)), ("linear", (0,))):
        for delay in delays:
            for n in (50, 200):
                hybrids.append(
                    {
                        "variant": variant,
                        "delay": delay,
                        "trajectories": n,
                        "rank": None,
                        "rank_policy": {"kind": "tolerance"},
                        "accuracy": 0.9 + 0.01 * delay + n / 10000,
                    }
                )
    layer = {
        "layer": 1,
        "scaled_accuracy": 0.95,
        "least_squares_accuracy": 0.9,
        "hybrids": hybrids,
    }
    return {
        "dataset": "yinyang",
        "original_accuracy": 0.96,
        "layers": [layer, dict(layer, layer=2)],
    }


def test_trajectory_figure_written(tmp_path):
    rng = np.random.default_rng(0)
    scaled = rng.random((6, 5))
    original = scaled[:, [0, -1]]
    path = plot_trajectory(original, scaled, tmp_path / "t.png", pad_value=-0.5)
    assert path == tmp_path / "t.png"
    assert_png(path)


def test_trajectory_figure_wide_layer(tmp_path):
    # 256 rows is MNIST's first hidden layer: no per-cell numbers, still a PNG.
    rng = np.random.default_rng(1)
    scaled = rng.random((256, 12))
    path = plot_trajectory(scaled[:, [0, -1]], scaled, tmp_path / "wide.png")
    assert_png(path)


def test_trajectory_rejects_mismatched_rows(tmp_path):
    with pytest.raises(ValueError, match="rows"):
        plot_trajectory(np.zeros((4, 2)), np.zeros((5, 6)), tmp_path / "t.png")


def test_trajectory_rejects_three_original_columns(tmp_path):
    with pytest.raises(ValueError, match="2 columns"):
        plot_trajectory(np.zeros((4, 3)), np.zeros((4, 6)), tmp_path / "t.png")
    assert not (tmp_path / "t.png").exists()


def test_decision_boundaries_written(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 2)
    rng = np.random.default_rng(2)
    points = rng.random((40, 2)).astype(np.float32)
    labels = (points[:, 0] > 0.5).astype(np.int64)
    path = plot_decision_boundaries(
        [[("original", model), ("copy", model)], [None, ("again", model)]],
        points,
        labels,
        tmp_path / "b.png",
        resolution=20,
    )
    assert_png(path)


def test_decision_boundaries_rejects_3d_points(tmp_path):
    model = torch.nn.Linear(3, 2)
    with pytest.raises(ValueError, match="n_points, 2"):
        plot_decision_boundaries(
            [[("m", model)]], np.zeros((4, 3)), np.zeros(4), tmp_path / "b.png"
        )


def test_eigenvalues_figure_written(tmp_path):
    inside = np.exp(1j * np.linspace(0, np.pi, 5)) * 0.5
    outside = np.array([1.2, 3.0 + 1.0j])
    panels = [
        [("A", inside), ("B", np.concatenate([inside, outside]))],
        [None, ("C", inside)],
    ]
    path = plot_eigenvalues(
        panels,
        tmp_path / "e.png",
    )
    assert_png(path)


def test_eigenvalues_rejects_empty_panel(tmp_path):
    with pytest.raises(ValueError, match="non-empty"):
        plot_eigenvalues([[("A", np.array([]))]], tmp_path / "e.png")


def test_count_outside_unit_circle():
    # 1.0 itself (the constant observable's eigenvalue) is on the circle, not outside.
    values = np.array([0.5, 1.0, 1.0 + 1e-12, 1.01, -2.0, 0.9j])
    assert count_outside_unit_circle(values) == 2


def test_hankel_matrix_layout():
    # Two trajectories of three states with one feature each: [0, 1, 2] and [3, 4, 5].
    trajectories = np.arange(6, dtype=float).reshape(2, 3, 1)
    expected = np.array([[0, 1, 3, 4], [1, 2, 4, 5]], dtype=float)
    np.testing.assert_array_equal(hankel_matrix(trajectories, 1), expected)


def test_right_singular_vectors_rebuild_rank_one():
    # A rank-one matrix u v^T has v / |v| as its only right singular vector.
    v = np.array([1.0, -2.0, 3.0, 0.5])
    matrix = np.outer([2.0, 1.0], v)
    vectors, shares = right_singular_vectors(matrix, 1)
    # The largest entry of v is positive, so the sign fix keeps v's own sign.
    np.testing.assert_allclose(vectors[0], v / np.linalg.norm(v), atol=1e-12)
    assert shares[0] == pytest.approx(1.0)


def test_singular_vectors_figure_written(tmp_path):
    rng = np.random.default_rng(3)
    trajectories = {
        "layer 1": rng.random((4, 7, 3)),
        "layer 3": rng.random((4, 7, 2)),
    }
    path = plot_right_singular_vectors(trajectories, [0, 2, 5], tmp_path / "v.png")
    assert_png(path)


def test_singular_vectors_rejects_too_long_delay(tmp_path):
    trajectories = {"layer 1": np.ones((2, 4, 3))}
    with pytest.raises(ValueError, match="delay"):
        plot_right_singular_vectors(trajectories, [4], tmp_path / "v.png")


def test_accuracy_grid_written(tmp_path):
    path = plot_accuracy_grid(tiny_results(), tmp_path / "a.png")
    assert_png(path)


def test_accuracy_grid_skips_failed_cells(tmp_path):
    results = tiny_results()
    results["layers"][0]["hybrids"][0]["accuracy"] = None
    path = plot_accuracy_grid(results, tmp_path / "a.png")
    assert_png(path)


def test_accuracy_grid_rejects_no_hybrid(tmp_path):
    results = tiny_results()
    for layer in results["layers"]:
        layer["hybrids"] = []
    with pytest.raises(ValueError, match="no hybrid"):
        plot_accuracy_grid(results, tmp_path / "a.png")


def test_failed_plot_leaves_no_file(tmp_path):
    with pytest.raises(ValueError):
        plot_eigenvalues([[("A", np.array([np.nan]))]], tmp_path / "e.png")
    assert list(tmp_path.iterdir()) == []


def test_headless_process_writes_png(tmp_path):
    # A fresh interpreter without DISPLAY or MPLBACKEND, so that no backend was
    # chosen before the module is imported.
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "MPLBACKEND")}
    env["MPLCONFIGDIR"] = str(tmp_path / "mpl")
    script = (
        "import sys, numpy as np\n"
        "from koopman_hybrid.plotting import plot_eigenvalues\n"
        "plot_eigenvalues([[('A', np.array([0.5, 1.5]))]], sys.argv[1])\n"
    )
    target = tmp_path / "headless.png"
    subprocess.run(
        [sys.executable, "-c", script, str(target)], env=env, check=True, timeout=120
    )
    assert_png(target)


def test_hybrid_grids_layout():
    grid = hybrid_grids(tiny_results()["layers"][0]["hybrids"])[0]
    assert grid.columns == [("linear", 0), ("delay", 1), ("delay", 3)]
    assert grid.trajectories == [50, 200]
    # accuracy = 0.9 + 0.01 h + N / 10000, in percent; the linear variant has h = 0.
    expected = 100 * np.array([[0.905, 0.915, 0.935], [0.92, 0.93, 0.95]])
    np.testing.assert_allclose(grid.accuracies(), expected, rtol=1e-12)
