"""The command line: `reproduce all` and `--full` report mode, and bad options."""

from __future__ import annotations

import re

from click.testing import CliRunner

from koopman_hybrid.cli import main


def invoke(*args):
    return CliRunner().invoke(main, ["reproduce", *args])


def test_reproduce_all_help_lists_options():
    result = invoke("all", "--help")
    assert result.exit_code == 0
    for option in ("--full", "--quick", "--out", "--delay", "--data-dir", "--cache-dir"):
        assert option in result.output


def test_reproduce_help_names_all():
    result = invoke("--help")
    assert "yinyang|mnist|all" in result.output


def test_unknown_dataset_rejected():
    result = invoke("everything")
    assert result.exit_code == 2
    assert "everything" in result.output


def test_bad_delay_list_rejected(tmp_path):
    result = invoke("all", "--out", str(tmp_path), "--delay", "1,x")
    assert result.exit_code == 2
    assert "1,x" in result.output


def test_bad_rank_rejected(tmp_path):
    result = invoke("all", "--out", str(tmp_path), "--rank", "bogus")
    assert result.exit_code == 2
    assert "bogus" in result.output


def test_bad_device_rejected(tmp_path):
    result = invoke("all", "--out", str(tmp_path), "--device", "tpu")
    assert result.exit_code == 2
    assert "tpu" in result.output


def test_zero_inserted_layers_rejected(tmp_path):
    result = invoke("yinyang", "--full", "--out", str(tmp_path), "--inserted-layers", "0")
    assert result.exit_code == 2
    assert "--inserted-layers" in result.output


def test_delay_above_inserted_layers_rejected_before_work(tmp_path):
    # MNIST comes second in 'all': the error must come before Yin-Yang trains.
    result = invoke("all", "--out", str(tmp_path), "--delay", "11")
    assert result.exit_code == 1
    assert "delay 11" in result.output
    assert list(tmp_path.iterdir()) == []


def test_input_layer_rejected_before_work(tmp_path):
    result = invoke("all", "--quick", "--out", str(tmp_path), "--layers", "0")
    assert result.exit_code == 1
    assert list(tmp_path.iterdir()) == []


def test_quick_report_end_to_end(tmp_path):
    out = tmp_path / "report"
    result = invoke(
        "yinyang",
        "--quick",
        "--out",
        str(out),
        "--layers",
        "3",
        "--delay",
        "1,3",
        "--trajectories",
        "50",
        "--inserted-layers",
        "3",
    )
    assert result.exit_code == 0, result.output
    assert f"wrote {out / 'report.md'}" in result.output
    text = (out / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    pngs = sorted(p.relative_to(out).as_posix() for p in (out / "figures").glob("*.png"))
    assert sorted(links) == pngs
    assert "--inserted-layers 3" in text


def test_negative_linearity_rejected(tmp_path):
    result = invoke("yinyang", "--linearity", "-1", "--out", str(tmp_path))
    assert result.exit_code == 2
    assert "--linearity" in result.output
    assert list(tmp_path.iterdir()) == []


def test_negative_seed_rejected(tmp_path):
    result = invoke("yinyang", "--seed", "-1", "--out", str(tmp_path / "run"))
    assert result.exit_code == 2
    assert "--seed" in result.output


def test_nan_linearity_is_one_line_error(tmp_path):
    result = invoke("yinyang", "--linearity", "nan", "--out", str(tmp_path / "run"))
    assert result.exit_code == 1
    assert result.output.startswith("Error: linearity must be a finite number")
    assert not (tmp_path / "run").exists()


def test_out_below_a_file_is_one_line_error(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    out = blocker / "run"
    result = invoke("yinyang", "--layers", "1", "--delay", "1", "--out", str(out))
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: cannot write to the output folder {out}")


def test_too_many_trajectories_leaves_no_files(tmp_path):
    out = tmp_path / "run"
    result = invoke("yinyang", "--trajectories", "999999", "--out", str(out))
    assert result.exit_code == 1
    assert "999999 trajectories" in result.output
    assert not out.exists()


def test_repeated_list_values_run_once(tmp_path):
    from koopman_hybrid.cli import _parse_int_list

    assert _parse_int_list("1,1,3", "--layers") == (1, 3)
