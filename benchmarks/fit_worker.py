"""Time DMD implementations on benchmark cases in a long-lived process.

Usage: ``python fit_worker.py``. The run script starts one such process per
interpreter and implementation: the project's interpreter for koopman-hybrid and
PyDMD, and the PyKoopman environment's interpreter for PyKoopman. It imports nothing
from the project or the benchmark folder unless a task names koopman-hybrid.

The process reads one task per line of standard input, as JSON: the implementation,
the .npy files of X and Y (or of the joined series for the libraries'
delay-embedding front ends), the rank, the delay and the minimum number of timed
runs. For each task it writes one JSON line to standard output: ``{"result": ...,
"error": null}`` or ``{"result": null, "error": "..."}``. The result holds the
wall-clock seconds of every timed run, the peak resident memory growth of every run
in KiB, the eigenvalues and the library version. Anything the libraries print goes
to standard error, so it cannot corrupt the replies.
"""

from __future__ import annotations

import cProfile
import gc
import io
import json
import os
import pstats
import sys
import time
import warnings

import numpy as np

# A first untimed run absorbs one-off costs (lazy imports, BLAS thread start-up).
# A fit slower than this is timed from its first run, because those costs are then
# negligible and a warm-up would add minutes to the largest cases.
WARMUP_LIMIT_S = 2.0
# Fast fits are repeated until their timed runs add up to this many seconds, up to
# MAX_RUNS runs, so the median of sub-millisecond fits is not timer noise.
TARGET_TOTAL_S = 1.0
MAX_RUNS = 25
PROFILE_LINES = 12

_CLEAR_REFS = "/proc/self/clear_refs"


def _memory_kib() -> dict[str, int]:
    """Read VmRSS (current) and VmHWM (peak since reset) of this process in KiB."""
    values = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux 4.0 and later). Return False if refused."""
    try:
        with open(_CLEAR_REFS, "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


def _fit_function(task: dict):
    """Return (fit, eigenvalues, version): a closure that fits one fresh model."""
    implementation = task["implementation"]
    rank = int(task["rank"])

    if implementation in ("koopman-hybrid", "pydmd", "pykoopman"):
        X = np.load(task["x_path"])
        Y = np.load(task["y_path"])
    else:
        series = np.load(task["series_path"])
        delay = int(task["delay"])

    if implementation == "koopman-hybrid":
        import koopman_hybrid
        from koopman_hybrid.dmd import DMD, RankPolicy

        def fit():
            return DMD(rank=RankPolicy.fixed(rank)).fit(X, Y)

        def eigenvalues(model):
            return model.eigenvalues_

        return fit, eigenvalues, koopman_hybrid.__version__

    if implementation in ("pydmd", "pydmd-hankel"):
        from importlib.metadata import version

        import pydmd

        if implementation == "pydmd":

            def fit():
                return pydmd.DMD(svd_rank=rank, exact=True).fit(X, Y)

        else:

            def fit():
                return pydmd.HankelDMD(svd_rank=rank, exact=True, d=delay + 1).fit(
                    series
                )

        def eigenvalues(model):
            return model.eigs

        return fit, eigenvalues, version("pydmd")

    if implementation in ("pykoopman", "pykoopman-timedelay"):
        from importlib.metadata import version

        import pykoopman
        from pykoopman.observables import Identity, TimeDelay
        from pykoopman.regression import EDMD

        if implementation == "pykoopman":
            # PyKoopman takes samples as rows.
            x_rows, y_rows = X.T, Y.T

            def fit():
                model = pykoopman.Koopman(
                    observables=Identity(), regressor=EDMD(svd_rank=rank)
                )
                return model.fit(x_rows, y_rows)

        else:
            series_rows = series.T

            def fit():
                model = pykoopman.Koopman(
                    observables=TimeDelay(delay=1, n_delays=delay),
                    regressor=EDMD(svd_rank=rank),
                )
                return model.fit(series_rows)

        def eigenvalues(model):
            return model.lamda_array

        return fit, eigenvalues, version("pykoopman")

    raise ValueError(f"unknown implementation {implementation!r}.")


def _profile_once(fit) -> list[dict]:
    """Profile one fit and return the entries with the largest own time."""
    profiler = cProfile.Profile()
    profiler.enable()
    fit()
    profiler.disable()
    stats = pstats.Stats(profiler, stream=io.StringIO())
    rows = []
    for (filename, line, function), (_, calls, own, cumulative, _) in sorted(
        stats.stats.items(), key=lambda item: item[1][2], reverse=True
    )[:PROFILE_LINES]:
        where = f"{filename}:{line}" if line else filename
        rows.append(
            {
                "function": function,
                "where": where,
                "calls": calls,
                "own_seconds": own,
                "cumulative_seconds": cumulative,
            }
        )
    return rows


def run(task: dict) -> dict:
    fit, eigenvalues_of, library_version = _fit_function(task)
    min_runs = int(task["min_runs"])

    peak_method = "VmHWM after clear_refs"
    if not _reset_peak():
        peak_method = "VmHWM without reset (an upper bound)"

    def timed_fit():
        gc.collect()
        _reset_peak()
        before = _memory_kib()
        started = time.perf_counter()
        model = fit()
        elapsed = time.perf_counter() - started
        after = _memory_kib()
        return model, elapsed, after["VmHWM"] - before["VmRSS"]

    model, first_seconds, first_peak = timed_fit()
    eigenvalues = np.asarray(eigenvalues_of(model), dtype=np.complex128)
    extra = {}
    for name in ("svd_method_", "rank_"):
        if hasattr(model, name):
            extra[name.rstrip("_")] = getattr(model, name)
    del model

    seconds = []
    peak_kib = []
    if first_seconds > WARMUP_LIMIT_S:
        seconds.append(first_seconds)
        peak_kib.append(first_peak)
    while len(seconds) < min_runs or (
        sum(seconds) < TARGET_TOTAL_S and len(seconds) < MAX_RUNS
    ):
        model, elapsed, peak = timed_fit()
        seconds.append(elapsed)
        peak_kib.append(peak)
        del model

    profile = _profile_once(fit) if task.get("profile") else None
    return {
        "implementation": task["implementation"],
        "library_version": library_version,
        "seconds": seconds,
        "peak_kib": peak_kib,
        "peak_method": peak_method,
        "warmup_run": first_seconds <= WARMUP_LIMIT_S,
        "eigenvalues_real": eigenvalues.real.tolist(),
        "eigenvalues_imag": eigenvalues.imag.tolist(),
        "numpy_version": np.__version__,
        "python": sys.version.split()[0],
        "profile": profile,
        **extra,
    }


def main() -> None:
    # Replies go to a copy of the original standard output. File descriptor 1 then
    # points to standard error, so output of the libraries, even from C, lands there.
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    # Eigenvalues outside the unit circle and rank notes are expected on this data.
    warnings.simplefilter("ignore")
    for line in sys.stdin:
        task = json.loads(line)
        try:
            reply = {"result": run(task), "error": None}
        except Exception as error:
            # One failed case is reported and the next task still runs.
            reply = {"result": None, "error": f"{type(error).__name__}: {error}"}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


if __name__ == "__main__":
    main()
