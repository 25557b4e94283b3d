"""Resumable sweeps on a tiny Yin-Yang run: cells, interruption, reruns."""

from __future__ import annotations

import dataclasses
import json

import pytest

from koopman_hybrid import sweep
from koopman_hybrid.experiment import HybridSpec
from koopman_hybrid.presets import default_config
from koopman_hybrid.sweep import (
    FigurePlan,
    SweepGrid,
    SweepPlan,
    cell_file,
    cell_key,
    default_plan,
    read_cell,
    run_sweep,
)

# Two layers times (two delays plus the linear variant) times two N.
N_CELLS = 2 * 3 * 2


def tiny_base():
    config = default_config("yinyang")
    return dataclasses.replace(
        config,
        train=dataclasses.replace(config.train, epochs=150),
        scaling=dataclasses.replace(config.scaling, n_inserted=3, epochs=5),
    )


def tiny_plan():
    grid = SweepGrid(layers=(1, 3), delays=(1, 3), trajectories=(50, 200))
    figures = FigurePlan(
        eigenvalue_delays=(1, 3),
        eigenvalue_trajectories=(50, 200),
        singular_vector_delays=(0, 2),
        singular_vector_trajectories=4,
    )
    return SweepPlan("yinyang", grid, figures)


def run_tiny(out_dir):
    return run_sweep(tiny_plan(), out_dir, base_config=tiny_base(), progress=False)


def stable_layers(results):
    """Return the per-layer results without wall times, which differ between runs."""
    layers = []
    for layer in results["layers"]:
        hybrids = [
            {k: v for k, v in hybrid.items() if k != "seconds"}
            for hybrid in layer["hybrids"]
        ]
        layers.append({k: v for k, v in layer.items() if k != "scaling_loss"})
        layers[-1]["hybrids"] = hybrids
    return layers


class CallCounter:
    """Wrap evaluate_hybrid: record each call and optionally stop after a few."""

    def __init__(self, real, stop_after=None):
        self.real = real
        self.stop_after = stop_after
        self.calls = []

    def __call__(self, state, spec, *args, **kwargs):
        if self.stop_after is not None and len(self.calls) == self.stop_after:
            raise KeyboardInterrupt
        self.calls.append((state.layer, spec))
        return self.real(state, spec, *args, **kwargs)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return run_tiny(tmp_path_factory.mktemp("uninterrupted"))


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """Run a sweep that is killed after two cells, then the same sweep again."""
    out_dir = tmp_path_factory.mktemp("resumed")
    real = sweep.evaluate_hybrid
    first = CallCounter(real, stop_after=2)
    second = CallCounter(real)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sweep, "evaluate_hybrid", first)
        with pytest.raises(KeyboardInterrupt):
            run_tiny(out_dir)
        files_after_interrupt = sorted(p.name for p in (out_dir / "cells").iterdir())
        patch.setattr(sweep, "evaluate_hybrid", second)
        result = run_tiny(out_dir)
    return {
        "out_dir": out_dir,
        "first": first.calls,
        "second": second.calls,
        "files_after_interrupt": files_after_interrupt,
        "result": result,
    }


def test_interrupt_keeps_finished_cells(resumed):
    assert len(resumed["files_after_interrupt"]) == 2


def test_resume_computes_only_missing_cells(resumed):
    assert len(resumed["second"]) == N_CELLS - 2


def test_resume_recomputes_no_finished_cell(resumed):
    assert set(resumed["first"]).isdisjoint(resumed["second"])


def test_resume_matches_uninterrupted_run(resumed, uninterrupted):
    assert stable_layers(resumed["result"].results) == stable_layers(
        uninterrupted.results
    )


def test_resume_original_accuracy_matches(resumed, uninterrupted):
    resumed_accuracy = resumed["result"].results["original_accuracy"]
    assert resumed_accuracy == uninterrupted.results["original_accuracy"]


def test_one_file_per_cell(resumed):
    names = [p.name for p in (resumed["out_dir"] / "cells").iterdir()]
    assert len(names) == N_CELLS
    assert not [name for name in names if name.startswith(".")]


def test_finished_sweep_reruns_nothing(uninterrupted, monkeypatch):
    counter = CallCounter(sweep.evaluate_hybrid)
    monkeypatch.setattr(sweep, "evaluate_hybrid", counter)
    rerun = run_tiny(uninterrupted.out_dir)
    assert counter.calls == []
    assert stable_layers(rerun.results) == stable_layers(uninterrupted.results)


def test_damaged_cell_is_recomputed(uninterrupted, monkeypatch):
    config = uninterrupted.config
    spec = HybridSpec(3, 200)
    path = cell_file(uninterrupted.out_dir / "cells", 1, spec)
    path.write_text('{"key": ')
    counter = CallCounter(sweep.evaluate_hybrid)
    monkeypatch.setattr(sweep, "evaluate_hybrid", counter)
    run_tiny(uninterrupted.out_dir)
    assert counter.calls == [(1, spec)]
    assert read_cell(path, cell_key(config, 1, spec)) is not None


def test_cell_with_other_settings_is_recomputed(uninterrupted, monkeypatch):
    spec = HybridSpec(1, 50, variant="delay")
    path = cell_file(uninterrupted.out_dir / "cells", 3, spec)
    payload = json.loads(path.read_text())
    payload["key"] = "0" * 16
    path.write_text(json.dumps(payload))
    counter = CallCounter(sweep.evaluate_hybrid)
    monkeypatch.setattr(sweep, "evaluate_hybrid", counter)
    run_tiny(uninterrupted.out_dir)
    assert counter.calls == [(3, spec)]


def test_cell_key_changes_with_settings(uninterrupted):
    config = uninterrupted.config
    other = dataclasses.replace(config, pad_value=-5.0)
    spec = HybridSpec(1, 50)
    assert cell_key(config, 1, spec) != cell_key(other, 1, spec)


def test_results_json_schema(uninterrupted):
    written = json.loads((uninterrupted.out_dir / "results.json").read_text())
    assert written["dataset"] == "yinyang"
    assert [layer["layer"] for layer in written["layers"]] == [1, 3]
    for name in ("original_accuracy", "seconds", "settings", "plan", "versions"):
        assert name in written


def test_results_hybrid_fields(uninterrupted):
    hybrids = uninterrupted.results["layers"][0]["hybrids"]
    assert len(hybrids) == N_CELLS // 2
    by_key = {(h["variant"], h["delay"], h["trajectories"]): h for h in hybrids}
    # n = 3 inserted layers: h = 3 runs 3 of them and then n + 1 - h = 1 linear step.
    assert by_key[("delay", 3, 200)]["nonlinear_layers_run"] == 3
    assert by_key[("delay", 3, 200)]["linear_steps"] == 1
    assert by_key[("linear", 0, 50)]["nonlinear_layers_run"] == 0
    assert by_key[("linear", 0, 50)]["linear_steps"] == 4


def test_sweep_keeps_layer_states(uninterrupted):
    state = uninterrupted.states[3]
    # N = 200 trajectories of n + 2 = 5 states of width d_in = 4 (layer 3: 4 -> 3).
    assert state.trajectories.shape == (200, 5, 4)


def test_delay_above_inserted_layers_rejected_before_training(tmp_path):
    plan = tiny_plan().with_grid(delays=(4,))
    with pytest.raises(ValueError, match="delay 4"):
        run_sweep(plan, tmp_path, base_config=tiny_base(), progress=False)
    assert not (tmp_path / "model.safetensors").exists()


def test_too_many_trajectories_rejected_before_training(tmp_path):
    plan = tiny_plan().with_grid(trajectories=(5000,))
    with pytest.raises(ValueError, match="5000 trajectories"):
        run_sweep(plan, tmp_path, base_config=tiny_base(), progress=False)
    assert not (tmp_path / "model.safetensors").exists()


def test_plan_json_round_trip():
    plan = default_plan("mnist")
    assert SweepPlan.from_json(json.loads(json.dumps(plan.to_json()))) == plan


@pytest.mark.parametrize("dataset", ["yinyang", "mnist"])
@pytest.mark.parametrize("quick", [False, True])
def test_default_plan_eigenvalue_panels_in_grid(dataset, quick):
    plan = default_plan(dataset, quick=quick)
    assert set(plan.figures.eigenvalue_delays) <= set(plan.grid.delays)
    assert set(plan.figures.eigenvalue_trajectories) <= set(plan.grid.trajectories)


def test_with_grid_refits_eigenvalue_panels():
    plan = default_plan("mnist").with_grid(delays=(3, 4), trajectories=(100, 200, 300))
    assert plan.figures.eigenvalue_delays == (3, 4)
    assert plan.figures.eigenvalue_trajectories == (100, 300)


def test_cell_files_distinct_per_cell(tmp_path):
    config = tiny_plan().experiment_config(tiny_base())
    specs = config.hybrid_specs()
    names = {cell_file(tmp_path, layer, spec) for layer in (1, 3) for spec in specs}
    assert len(names) == 2 * len(specs)
