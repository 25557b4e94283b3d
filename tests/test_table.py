"""The results table that the CLI prints."""

from __future__ import annotations

from koopman_hybrid.table import format_results

RESULTS = {
    "dataset": "yinyang",
    "original_accuracy": 0.9865,
    "layers": [
        {
            "layer": 2,
            "scaled_accuracy": 0.985,
            "least_squares_accuracy": 0.8825,
            "hybrids": [
                {
                    "variant": "delay",
                    "delay": 5,
                    "trajectories": 3000,
                    "rank_policy": {"kind": "energy", "fraction": 0.999},
                    "rank_used": 18,
                    "nonlinear_layers_run": 5,
                    "linear_steps": 6,
                    "accuracy": 0.9535,
                }
            ],
        }
    ],
    "seconds": {"training": 54.4, "scaling": 12.0},
}


def test_table_hybrid_row():
    lines = format_results(RESULTS).splitlines()
    hybrid_row = lines[-3].split()
    assert hybrid_row == [
        "2", "delay", "5", "3000", "energy:0.999", "18", "5", "6", "95.35", "%"
    ]


def test_table_original_and_baseline():
    text = format_results(RESULTS)
    assert text.startswith("yinyang: original accuracy 98.65 %")
    assert "lstsq" in text
    assert "88.25 %" in text
    assert text.endswith("time: training 54 s, scaling 12 s")
