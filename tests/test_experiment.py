"""End-to-end runs of the main job on Yin-Yang with a tiny budget."""

from __future__ import annotations

import dataclasses
import json

import pytest
from click.testing import CliRunner

from koopman_hybrid.cli import main
from koopman_hybrid.experiment import run_reproduction
from koopman_hybrid.presets import default_config, override_config


def tiny_config(**overrides):
    config = default_config("yinyang")
    config = dataclasses.replace(
        config,
        train=dataclasses.replace(config.train, epochs=150),
        scaling=dataclasses.replace(config.scaling, n_inserted=3, epochs=5),
        layers=(1, 3),
        delays=(1, 3),
        trajectories=(50, 200),
        seed_candidates=1,
    )
    return override_config(config, **overrides)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    results = run_reproduction(tiny_config(), out)
    return out, results


def test_results_json_matches_returned(tiny_run):
    out, results = tiny_run
    written = json.loads((out / "results.json").read_text())
    assert written == json.loads(json.dumps(results))


def test_results_schema(tiny_run):
    _, results = tiny_run
    assert results["dataset"] == "yinyang"
    assert 0.0 <= results["original_accuracy"] <= 1.0
    assert [layer["layer"] for layer in results["layers"]] == [1, 3]
    for stage in ("data", "training", "scaling", "trajectories"):
        assert stage in results["seconds"]


def test_hybrid_records_linear_share(tiny_run):
    _, results = tiny_run
    hybrids = results["layers"][0]["hybrids"]
    # Two delays times two N for the delay variant, then the linear variant per N.
    assert len(hybrids) == 6
    by_key = {(h["variant"], h["delay"], h["trajectories"]): h for h in hybrids}
    delay_three = by_key[("delay", 3, 200)]
    assert delay_three["nonlinear_layers_run"] == 3
    assert delay_three["linear_steps"] == 1
    linear = by_key[("linear", 0, 200)]
    assert linear["nonlinear_layers_run"] == 0
    assert linear["linear_steps"] == 4
    assert linear["rank"] is None


def test_hybrid_fields(tiny_run):
    _, results = tiny_run
    for layer in results["layers"]:
        assert 0.0 <= layer["scaled_accuracy"] <= 1.0
        assert 0.0 <= layer["least_squares_accuracy"] <= 1.0
        for hybrid in layer["hybrids"]:
            assert 0.0 <= hybrid["accuracy"] <= 1.0
            assert hybrid["rank_used"] >= 1
            assert hybrid["spectral_radius"] >= 0.0


def test_rerun_reuses_networks_and_repeats_numbers(tiny_run, tmp_path):
    out, first = tiny_run
    second = run_reproduction(tiny_config(), out)
    assert second["original_accuracy"] == first["original_accuracy"]
    assert [layer["hybrids"] for layer in second["layers"]] == [
        layer["hybrids"] for layer in first["layers"]
    ]
    assert [layer["scaling_loss"] for layer in second["layers"]] == [None, None]
    # A fresh folder trains again from the same seed: the same numbers on CPU.
    fresh = run_reproduction(tiny_config(), tmp_path)
    assert fresh["original_accuracy"] == first["original_accuracy"]
    assert [layer["hybrids"] for layer in fresh["layers"]] == [
        layer["hybrids"] for layer in first["layers"]
    ]


def test_delay_above_inserted_layers_rejected_before_training(tmp_path):
    config = tiny_config(delays=(5,))
    with pytest.raises(ValueError, match="delay 5"):
        run_reproduction(config, tmp_path)
    assert not (tmp_path / "model.safetensors").exists()


def test_cli_help_lists_options():
    result = CliRunner().invoke(main, ["reproduce", "--help"])
    assert result.exit_code == 0
    for option in (
        "--out",
        "--layers",
        "--delay",
        "--trajectories",
        "--rank",
        "--inserted-layers",
        "--seed",
        "--device",
        "--data-dir",
    ):
        assert option in result.output


def test_cli_rejects_bad_layer_list(tmp_path):
    result = CliRunner().invoke(
        main, ["reproduce", "yinyang", "--out", str(tmp_path), "--layers", "1,x"]
    )
    assert result.exit_code != 0
    assert "1,x" in result.output


def test_cli_rejects_input_layer(tmp_path):
    result = CliRunner().invoke(
        main, ["reproduce", "yinyang", "--out", str(tmp_path), "--layers", "0"]
    )
    assert result.exit_code != 0
    assert "0" in result.output
    assert not (tmp_path / "model.safetensors").exists()


def test_other_widths_in_same_folder_train_again(tmp_path):
    config = tiny_config(layers=(1,), delays=(1,), trajectories=(50,))
    run_reproduction(config, tmp_path)
    wider = dataclasses.replace(config, widths=(2, 10, 6, 4, 3, 2))

    results = run_reproduction(wider, tmp_path)

    metadata_widths = json.loads((tmp_path / "config.json").read_text())["widths"]
    assert metadata_widths == [2, 10, 6, 4, 3, 2]
    assert results["layers"][0]["layer"] == 1


def test_too_many_trajectories_rejected_before_training(tmp_path):
    config = tiny_config(trajectories=(5000,))

    with pytest.raises(ValueError, match="5000 trajectories"):
        run_reproduction(config, tmp_path)

    assert not (tmp_path / "model.safetensors").exists()


def test_override_linearity_and_inserted_layers():
    config = override_config(default_config("yinyang"), linearity=2.0, n_inserted=3)

    assert config.scaling.linearity == 2.0
    assert config.scaling.n_inserted == 3
    # The penalty's delay cannot exceed the number of inserted layers.
    assert config.scaling.linearity_delay == 3
