"""Command-line interface: ``koopman-hybrid reproduce {yinyang,mnist,all}``."""

from __future__ import annotations

import json
import logging
import shlex
from pathlib import Path

import click

from .datasets import DATASETS
from .presets import default_config, override_config


def _parse_int_list(value: str | None, option: str) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        items = tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a comma-separated list of integers (example: 1,2,3)",
            param_hint=option,
        ) from None
    if not items:
        raise click.BadParameter(
            "the list is empty: give at least one integer (example: 1,2,3)",
            param_hint=option,
        )
    # A repeated value would only fit and test the same hybrid twice.
    return tuple(dict.fromkeys(items))


@click.group()
@click.version_option(package_name="koopman-hybrid")
@click.option("-v", "--verbose", is_flag=True, help="Log every step (INFO level).")
def main(verbose: bool) -> None:
    """Replace layers of trained MLPs by DMD-fitted linear operators and measure them."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@main.command()
@click.argument("dataset", type=click.Choice([*DATASETS, "all"]))
@click.option(
    "--full",
    is_flag=True,
    help="Run the report's sweep (every layer, delay h, N and rank of the grid), draw "
    "the figures and write report.md. 'all' always does this.",
)
@click.option(
    "--quick",
    is_flag=True,
    help="With the report: a small grid and few epochs, a few minutes for 'all', to "
    "try the pipeline. Implies --full.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output folder for results, trained networks and the report. "
    "[default: runs/DATASET, runs/report for 'all']",
)
@click.option(
    "--layers",
    default=None,
    help="Comma-separated hidden layers to replace. [default: 1,2,3]",
)
@click.option(
    "--delay",
    "delays",
    default=None,
    help="Comma-separated delays h: each hybrid runs h inserted layers, then "
    "n + 1 - h linear steps. With the report, replaces the grid's delays. "
    "[default: the preset's, see README]",
)
@click.option(
    "--trajectories",
    default=None,
    help="Comma-separated numbers of trajectories N (training inputs) to fit "
    "DMD on. [default: the preset's, see README]",
)
@click.option(
    "--rank",
    "ranks",
    default=None,
    help="Comma-separated DMD rank policies: an integer, 'energy:F' (smallest rank "
    "keeping fraction F of the energy), 'svht' (Gavish-Donoho threshold) or "
    "'tolerance' (every singular value above numerical precision). "
    "[default: svht]",
)
@click.option(
    "--inserted-layers",
    type=click.IntRange(min=1),
    default=None,
    help="Number n of Linear+ReLU layers inserted before the replaced layer. "
    "[default: 10]",
)
@click.option(
    "--linearity",
    type=click.FloatRange(min=0, max=1e6),
    default=None,
    help="Weight of the scaling penalty on the error of an affine recurrence rolled "
    "out over the states, which makes short-delay hybrids work; 0 turns it off. "
    "[default: 0, off]",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0, max=2**31 - 1),
    default=None,
    help="Seed for training and scaling. Yin-Yang trains the seeds SEED to SEED + 4 "
    "and keeps the best on training data. [default: 0]",
)
@click.option(
    "--device",
    type=click.Choice(["cpu", "cuda"]),
    default="cpu",
    show_default=True,
    help="Device for training and evaluation.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="MNIST only: folder with the four IDX files (raw or .gz). Without it the "
    "files are fetched once into the cache.",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where fetched MNIST files are kept. [default: $KOOPMAN_HYBRID_CACHE, "
    "else ~/.cache/koopman-hybrid]",
)
def reproduce(
    dataset: str,
    full: bool,
    quick: bool,
    out: Path | None,
    layers: str | None,
    delays: str | None,
    trajectories: str | None,
    ranks: str | None,
    inserted_layers: int | None,
    linearity: float | None,
    seed: int | None,
    device: str,
    data_dir: Path | None,
    cache_dir: Path | None,
) -> None:
    """Train DATASET's network, replace hidden layers by DMD, print the accuracies.

    With --full (or DATASET 'all'), run the report's whole sweep instead and write
    report.md with tables, figures, CSV and JSON. An interrupted sweep resumes: run
    the same command again and it skips the cells already done.
    """
    layer_list = _parse_int_list(layers, "--layers")
    delay_list = _parse_int_list(delays, "--delay")
    trajectory_list = _parse_int_list(trajectories, "--trajectories")
    rank_list = _parse_rank_list(ranks)
    if dataset == "all" or full or quick:
        _reproduce_report(
            dataset,
            quick=quick,
            out=out,
            grid_changes={
                "layers": layer_list,
                "delays": delay_list,
                "trajectories": trajectory_list,
                "ranks": rank_list,
            },
            inserted_layers=inserted_layers,
            linearity=linearity,
            seed=seed,
            device=device,
            data_dir=data_dir,
            cache_dir=cache_dir,
        )
        return

    from .experiment import run_reproduction
    from .table import format_results

    out = out if out is not None else Path("runs") / dataset
    try:
        config = override_config(
            default_config(dataset),
            layers=layer_list,
            delays=delay_list,
            trajectories=trajectory_list,
            ranks=rank_list,
            n_inserted=inserted_layers,
            linearity=linearity,
            seed=seed,
            device=device,
        )
        results = run_reproduction(config, out, data_dir=data_dir, cache_dir=cache_dir)
    except (ValueError, OSError, RuntimeError) as error:
        raise click.ClickException(_error_text(error, out)) from error
    click.echo(format_results(results))
    click.echo(f"\nwrote {out / 'results.json'}")


def _error_text(error: Exception, out: Path) -> str:
    """Return the message for an error of a run, naming --out for file-system errors."""
    if isinstance(error, OSError) and not isinstance(error, FileNotFoundError):
        return (
            f"cannot write to the output folder {out} ({error.strerror or error}): "
            "choose a writable --out"
        )
    return str(error)


def _parse_rank_list(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    from .dmd import RankPolicy

    items = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    if not items:
        raise click.BadParameter(
            "the list is empty: give at least one policy (example: svht,10)",
            param_hint="--rank",
        )
    for item in items:
        try:
            RankPolicy.parse(item)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--rank") from None
    return items


def _command_line(context: click.Context) -> str:
    """Rebuild the command line from the parsed options, for the report's header."""
    words = ["koopman-hybrid", context.info_name or "reproduce"]
    for name, value in context.params.items():
        if name == "dataset":
            words.append(value)
        elif value is True:
            words.append("--" + name.replace("_", "-"))
        elif value is not None and value is not False:
            option = {"delays": "delay", "ranks": "rank"}.get(name, name)
            words += ["--" + option.replace("_", "-"), str(value)]
    return shlex.join(words)


def _reproduce_report(
    dataset: str,
    *,
    quick: bool,
    out: Path | None,
    grid_changes: dict,
    inserted_layers: int | None,
    linearity: float | None,
    seed: int | None,
    device: str,
    data_dir: Path | None,
    cache_dir: Path | None,
) -> None:
    """Run the sweeps, figures and report for one data set or for all of them."""
    from .report import run_report, targets_text
    from .sweep import default_plan

    datasets = list(DATASETS) if dataset == "all" else [dataset]
    if out is None:
        out = Path("runs") / ("report" if dataset == "all" else dataset)
    changes = {name: value for name, value in grid_changes.items() if value is not None}
    plans = {}
    base_configs = {}
    for name in datasets:
        plan = default_plan(name, quick=quick)
        plans[name] = plan.with_grid(**changes) if changes else plan
        try:
            base_configs[name] = override_config(
                default_config(name),
                n_inserted=inserted_layers,
                linearity=linearity,
                seed=seed,
            )
        except ValueError as error:
            raise click.ClickException(str(error)) from error
    command = _command_line(click.get_current_context())
    try:
        report_path = run_report(
            datasets,
            out,
            quick=quick,
            plans=plans,
            base_configs=base_configs,
            data_dir=data_dir,
            cache_dir=cache_dir,
            device=device,
            command=command,
        )
    except (ValueError, OSError, RuntimeError) as error:
        raise click.ClickException(_error_text(error, out)) from error
    except KeyboardInterrupt:
        click.echo(
            f"\ninterrupted: finished cells are kept under {out}; run the same command "
            "again to resume",
            err=True,
        )
        raise SystemExit(130) from None
    report = json.loads((report_path.parent / "report.json").read_text())
    click.echo(targets_text(report["datasets"]))
    click.echo(f"\nwrote {report_path}")


if __name__ == "__main__":
    main()
