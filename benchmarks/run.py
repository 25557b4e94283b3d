"""Benchmark the DMD fit of koopman-hybrid against PyDMD and PyKoopman.

Run ``python benchmarks/run.py`` (``make bench``) with the project's environment. It
writes benchmarks/results/dmd_fit.json and benchmarks/results/run_info.json and
regenerates BENCHMARKS.md. ``--quick`` runs a small grid in about a minute and writes
under benchmarks/results/quick/ instead, leaving the record page alone.
``--skip-pykoopman`` leaves out PyKoopman and its environment.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# BLAS and OpenMP read their thread counts when they load, so these variables are set
# here, before anything imports numpy or torch, and the worker processes inherit them.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# One thread by default: on a 2-core machine shared with other jobs, a 2-thread
# torch SVD of a 384 x 600 matrix took from 0.05 s to 7.7 s from one call to the
# next, and 0.03 s to 0.09 s with one thread.
DEFAULT_THREADS = 1


def _parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="run a small grid (about a minute) and write under "
        "benchmarks/results/quick/",
    )
    parser.add_argument(
        "--skip-pykoopman",
        action="store_true",
        help="leave out PyKoopman and do not build its environment",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=DEFAULT_THREADS,
        help="BLAS and OpenMP threads for every fit and for the floor "
        f"(default {DEFAULT_THREADS})",
    )
    arguments = parser.parse_args()
    if arguments.threads < 1:
        parser.error(f"--threads must be at least 1, got {arguments.threads}.")
    return arguments


def main() -> None:
    arguments = _parse_arguments()
    for name in THREAD_VARIABLES:
        os.environ[name] = str(arguments.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parent))

    import suite

    suite.main(arguments)


if __name__ == "__main__":
    main()
