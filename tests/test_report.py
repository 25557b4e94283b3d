"""The report writer on hand-made results: tables, links, CSV and JSON."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest

from koopman_hybrid.plotting import plot_eigenvalues
from koopman_hybrid.report import (
    CSV_COLUMNS,
    FigureEntry,
    results_rows,
    summarize,
    targets_text,
    write_report,
)

ORIGINAL = 0.985


def hybrid(variant, delay, n, accuracy):
    return {
        "variant": variant,
        "delay": delay,
        "trajectories": n,
        "rank": None,
        "rank_policy": {"kind": "tolerance"},
        "rank_used": 5,
        "accuracy": accuracy,
        "nonlinear_layers_run": delay,
        "linear_steps": 11 - delay,
        "spectral_radius": 1.0,
        "n_unstable": 0,
        "seconds": 0.1,
    }


def layer(number, short_accuracy, long_accuracy):
    # Delay 5 is the longest "short" delay for n = 10; delay 10 is not short.
    return {
        "layer": number,
        "scaled_accuracy": 0.984,
        "scaling_loss": 0.01,
        "least_squares_accuracy": 0.95,
        "hybrids": [
            hybrid("delay", 2, 100, short_accuracy - 0.01),
            hybrid("delay", 5, 1000, short_accuracy),
            hybrid("delay", 10, 1000, long_accuracy),
            hybrid("linear", 0, 1000, 0.9),
        ],
    }


def make_results():
    return {
        "dataset": "yinyang",
        "original_accuracy": ORIGINAL,
        "layers": [
            layer(1, 0.982, 0.983),
            layer(2, 0.97, 0.975),
            layer(3, 0.983, 0.99),
        ],
        "seconds": {"training": 12.0, "dmd_and_evaluation": 70.0},
        "settings": {"scaling": {"n_inserted": 10}, "trajectories": [100, 1000]},
    }


@pytest.fixture
def report(tmp_path):
    figures_dir = tmp_path / "figures"
    existing = plot_eigenvalues([[("A", np.array([0.5, 1.2]))]], figures_dir / "e.png")
    entries = [
        FigureEntry("yinyang", "eigenvalues", existing, "eigenvalue caption"),
        FigureEntry("yinyang", "missing", figures_dir / "gone.png", "missing caption"),
    ]
    path = write_report(
        tmp_path,
        {"yinyang": make_results()},
        entries,
        command="koopman-hybrid reproduce yinyang --full",
        settings={"datasets": {"yinyang": {"plan": {"quick": False}}}},
        seconds=100.0,
    )
    return tmp_path, path.read_text()


def test_summary_best_hybrid_any_delay():
    summary = summarize(make_results())
    assert summary["best"]["accuracy"] == 0.99
    assert summary["best_layer"] == 3


def test_summary_short_delay_excludes_long():
    # Layer 3's best overall (h = 10) is not short; its best short hybrid is h = 5.
    layer_three = summarize(make_results())["layers"][2]
    assert layer_three["best_short"]["delay"] == 5


def test_summary_gap_in_points():
    layer_two = summarize(make_results())["layers"][1]
    assert layer_two["best_short_gap"] == pytest.approx(-1.5)


def test_summary_within_target_flags():
    flags = [entry["within_target"] for entry in summarize(make_results())["layers"]]
    assert flags == [True, False, True]


def test_summary_targets_against_paper():
    summary = summarize(make_results())
    # Original 98.5 % >= 98.4 %, best hybrid 99.0 % >= 97.3 %.
    assert summary["original_target_met"]
    assert summary["best_target_met"]


def test_summary_skips_failed_cells():
    results = make_results()
    results["layers"][0]["hybrids"][1]["accuracy"] = None
    layer_one = summarize(results)["layers"][0]
    assert layer_one["best_short"]["delay"] == 2
    assert layer_one["failed_cells"] == 1


def test_report_has_tables(report):
    _, text = report
    for heading in (
        "## Targets",
        "### Yin-Yang: this run against the paper",
        "### Yin-Yang: each hidden layer against the original network",
        "### Yin-Yang: accuracy of every hybrid (%)",
        "## Time per stage",
        "## Versions",
    ):
        assert heading in text


def test_report_gives_paper_numbers(report):
    _, text = report
    assert "| original network | 98.50 % | 98.4 % |" in text
    assert "| scaled network, layer 1 | 98.40 % | 98.89 % |" in text


def test_report_names_layer_short_of_target(report):
    _, text = report
    assert "Layer 2 stops short of the target" in text
    assert "Layer 1 stops short" not in text


def test_report_links_existing_figures_only(report):
    out_dir, text = report
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert links == ["figures/e.png"]
    assert all((out_dir / link).is_file() for link in links)


def test_report_grid_table_row(report):
    _, text = report
    # Layer 1, N = 1000: linear 90.00, h = 2 missing, h = 5 98.20, h = 10 98.30.
    assert "| 1000 | 90.00 | – | 98.20 | 98.30 |" in text


def test_csv_parses_with_every_row(report):
    out_dir, _ = report
    with open(out_dir / "results.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    # One original row, then per layer: scaled, least squares and four hybrids.
    assert len(rows) == 1 + 3 * (2 + 4)
    assert tuple(rows[0].keys()) == CSV_COLUMNS


def test_csv_hybrid_values(report):
    out_dir, _ = report
    with open(out_dir / "results.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    hybrid_row = next(r for r in rows if r["kind"] == "hybrid")
    assert hybrid_row["rank_policy"] == "tolerance"
    assert float(hybrid_row["accuracy"]) == pytest.approx(0.972)


def test_json_files_written(report):
    out_dir, _ = report
    report_json = json.loads((out_dir / "report.json").read_text())
    assert report_json["datasets"]["yinyang"]["original_accuracy"] == ORIGINAL
    assert json.loads((out_dir / "settings.json").read_text())["datasets"]
    assert "numpy" in json.loads((out_dir / "versions.json").read_text())


def test_results_rows_count():
    rows = results_rows(make_results())
    assert [row["kind"] for row in rows[:4]] == [
        "original",
        "scaled",
        "least_squares",
        "hybrid",
    ]


def test_targets_text_marks_missed_layer():
    text = targets_text({"yinyang": make_results()})
    missed = [line for line in text.splitlines() if line.startswith("MISSED")]
    assert len(missed) == 1
    assert "layer 2" in missed[0]


def test_report_for_quick_run_warns(tmp_path):
    path = write_report(tmp_path, {"yinyang": make_results()}, quick=True)
    assert "**Quick run:**" in path.read_text()


def test_report_grid_table_linear_steps_row(report):
    _, text = report
    # n = 10: h linear steps are n + 1 - h, and the fully linear variant has 11.
    assert "| linear steps | 11 | 9 | 6 | 1 |" in text


def test_shortfall_names_longer_delay(report):
    _, text = report
    # Layer 2: h = 10 reaches 97.5 %, 1.0 point below the original 98.5 %.
    assert "h = 10 reaches 97.50 % (−1.00 points)" in text


def test_shortfall_counts_unstable_hybrids(tmp_path):
    results = make_results()
    best_short = results["layers"][1]["hybrids"][1]
    best_short.update(n_unstable=2, spectral_radius=1.1)
    text = write_report(tmp_path, {"yinyang": results}).read_text()
    # Short hybrids of layer 2: h = 2, h = 5 and the linear one; only h = 5 is
    # unstable. Its 6 linear steps grow a mode by 1.1^6 = 1.77.
    assert "1 of the 3 hybrids with h ≤ 5 has DMD eigenvalues outside" in text
    assert "1.77-fold over its 6 linear steps" in text


def test_report_flags_hybrid_behind_least_squares(tmp_path):
    results = make_results()
    results["layers"][0]["least_squares_accuracy"] = 0.99
    text = write_report(tmp_path, {"yinyang": results}).read_text()
    assert "does not beat it for layer 1." in text
    assert not summarize(results)["layers"][0]["beats_least_squares"]
