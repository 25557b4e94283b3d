"""Plain-text table of a results dictionary, as the CLI prints it."""

from __future__ import annotations

from typing import Any

from .dmd import RankPolicy

# Column titles and widths; "rank" is the policy asked for, "r" the rank it chose.
COLUMNS = (
    ("layer", 5),
    ("variant", 7),
    ("h", 3),
    ("N", 6),
    ("rank", 12),
    ("r", 5),
    ("nonlin", 6),
    ("linear", 6),
    ("accuracy", 8),
)


def format_results(results: dict[str, Any]) -> str:
    """Format ``results`` (the content of results.json) as an aligned text table."""
    header = _row([title for title, _ in COLUMNS])
    lines = [
        f"{results['dataset']}: original accuracy {_percent(results['original_accuracy'])}",
        "",
        header,
        "-" * len(header),
    ]
    for layer in results["layers"]:
        number = layer["layer"]
        lines.append(
            _row([number, "scaled", "", "", "", "", "", "", _percent(layer["scaled_accuracy"])])
        )
        lines.append(
            _row(
                [number, "lstsq", "", "", "", "", 0, 1]
                + [_percent(layer["least_squares_accuracy"])]
            )
        )
        for hybrid in layer["hybrids"]:
            policy = str(RankPolicy.from_json(hybrid["rank_policy"]))
            lines.append(
                _row(
                    [
                        number,
                        hybrid["variant"],
                        hybrid["delay"],
                        hybrid["trajectories"],
                        policy,
                        hybrid["rank_used"],
                        hybrid["nonlinear_layers_run"],
                        hybrid["linear_steps"],
                        _percent(hybrid["accuracy"]),
                    ]
                )
            )
    seconds = ", ".join(f"{k} {v:.0f} s" for k, v in results["seconds"].items())
    lines += ["", f"time: {seconds}"]
    return "\n".join(lines)


def _row(cells: list[Any]) -> str:
    # Text columns are left-aligned, numbers right-aligned.
    parts = []
    for cell, (title, width) in zip(cells, COLUMNS):
        text = str(cell)
        left = title in ("variant", "rank")
        parts.append(text.ljust(width) if left else text.rjust(width))
    return "  ".join(parts).rstrip()


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.2f} %"
