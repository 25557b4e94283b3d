"""Plain-text table of a results dictionary, as the CLI prints it."""

from __future__ import annotations

from typing import Any


def format_results(results: dict[str, Any]) -> str:
    """Format ``results`` (the content of results.json) as an aligned text table."""
    header = (
        f"{'layer':>5}  {'variant':<7}  {'h':>3}  {'N':>6}  {'rank':>5}  "
        f"{'nonlin':>6}  {'linear':>6}  {'accuracy':>8}"
    )
    lines = [
        f"{results['dataset']}: original accuracy {_percent(results['original_accuracy'])}",
        "",
        header,
        "-" * len(header),
    ]
    for layer in results["layers"]:
        number = layer["layer"]
        lines.append(
            f"{number:>5}  {'scaled':<7}  {'':>3}  {'':>6}  {'':>5}  {'':>6}  {'':>6}  "
            f"{_percent(layer['scaled_accuracy']):>8}"
        )
        lines.append(
            f"{number:>5}  {'lstsq':<7}  {'':>3}  {'':>6}  {'':>5}  {0:>6}  {1:>6}  "
            f"{_percent(layer['least_squares_accuracy']):>8}"
        )
        for hybrid in layer["hybrids"]:
            lines.append(
                f"{number:>5}  {hybrid['variant']:<7}  {hybrid['delay']:>3}  "
                f"{hybrid['trajectories']:>6}  {hybrid['rank_used']:>5}  "
                f"{hybrid['nonlinear_layers_run']:>6}  {hybrid['linear_steps']:>6}  "
                f"{_percent(hybrid['accuracy']):>8}"
            )
    seconds = ", ".join(f"{k} {v:.0f} s" for k, v in results["seconds"].items())
    lines += ["", f"time: {seconds}"]
    return "\n".join(lines)


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.2f} %"
