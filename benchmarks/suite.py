"""The benchmark run behind benchmarks/run.py: fit every case, compare, write results.

Each implementation runs in its own long-lived worker process (fit_worker.py), so no
library's state leaks into another's timing, and the interpreter and library start-up
(over ten seconds each on a loaded 2-core machine) is paid once, not per case.
"""

from __future__ import annotations

import json
import os
import platform
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BENCHMARK_DIR = Path(__file__).resolve().parent
REPOSITORY = BENCHMARK_DIR.parent

import cases
import floor
import pykoopman_env
import report

from koopman_hybrid.delay import snapshot_pairs
from koopman_hybrid.files import atomic_write_json, atomic_write_text

IMPLEMENTATIONS = ("koopman-hybrid", "pydmd", "pykoopman")
MIN_RUNS = 5
# Front ends fed the joined series: a few representative cases, not the whole grid,
# because each is only there to measure the error that the mixed pairs add.
FRONT_END_CASES = (
    cases.Case(8, 1, 1000),
    cases.Case(8, 5, 1000),
    cases.Case(8, 10, 1000),
    cases.Case(64, 1, 1000),
    cases.Case(64, 5, 1000),
    cases.Case(64, 10, 1000),
    cases.Case(256, 5, 1000),
)
QUICK_FRONT_END_CASES = (cases.Case(8, 1, 100), cases.Case(64, 5, 100))
# A worker that runs longer than this is stopped and its row is recorded as failed.
WORKER_TIMEOUT_S = 1800
BYTES_PER_KIB = 1024
BYTES_PER_MB = 1_000_000


# glibc's malloc maps blocks larger than this many bytes with mmap, so free returns
# them to the system. Setting the threshold also turns off its dynamic adjustment,
# which would keep one case's freed arrays in the heap and hide the next case's peak
# memory growth (glibc manual, "Malloc Tunable Parameters").
MMAP_THRESHOLD_BYTES = 131072
LOG_TAIL_LINES = 5


class _Worker:
    """A long-lived fit_worker.py process for one implementation.

    It is started on the first task, and started again after it dies or times out.
    """

    def __init__(
        self, interpreter: Path, log_path: Path, load_samples: list[float]
    ) -> None:
        self.interpreter = interpreter
        self.log_path = log_path
        self.process = None
        # The 1-minute load average after every task, shared by all workers.
        self.load_samples = load_samples

    def _start(self) -> None:
        environment = dict(os.environ)
        environment["PYTHONPATH"] = str(REPOSITORY / "src")
        environment["MALLOC_MMAP_THRESHOLD_"] = str(MMAP_THRESHOLD_BYTES)
        with open(self.log_path, "a") as log:
            self.process = subprocess.Popen(
                [str(self.interpreter), str(BENCHMARK_DIR / "fit_worker.py")],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=environment,
            )

    def _log_tail(self) -> str:
        lines = self.log_path.read_text(errors="replace").strip().splitlines()
        return "\n".join(lines[-LOG_TAIL_LINES:])

    def run(self, task: dict) -> tuple[dict | None, str | None]:
        """Run one task. Return (result, None) or (None, error text)."""
        try:
            return self._run(task)
        finally:
            self.load_samples.append(os.getloadavg()[0])

    def _run(self, task: dict) -> tuple[dict | None, str | None]:
        if self.process is None or self.process.poll() is not None:
            self._start()
        self.process.stdin.write(json.dumps(task) + "\n")
        self.process.stdin.flush()

        ready, _, _ = select.select([self.process.stdout], [], [], WORKER_TIMEOUT_S)
        if not ready:
            self.stop()
            return None, f"timed out after {WORKER_TIMEOUT_S} s"
        line = self.process.stdout.readline()
        if not line:
            status = self.process.wait()
            self.process = None
            return None, f"worker exited with status {status}: {self._log_tail()}"
        reply = json.loads(line)
        return reply["result"], reply["error"]

    def stop(self) -> None:
        """Stop the process, if it runs."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def _eigenvalues(result: dict) -> np.ndarray:
    return np.asarray(result["eigenvalues_real"]) + 1j * np.asarray(
        result["eigenvalues_imag"]
    )


def _entry(case: cases.Case, rank: int, numerical_rank: int, result: dict) -> dict:
    seconds = result["seconds"]
    return {
        "implementation": result["implementation"],
        "d": case.d,
        "h": case.h,
        "N": case.N,
        "rank": rank,
        "seconds": float(np.median(seconds)),
        "peak_mb": max(result["peak_kib"]) * BYTES_PER_KIB / BYTES_PER_MB,
        "max_eigenvalue_rel_diff": None,
        "numerical_rank": numerical_rank,
        "n_features": case.n_features,
        "n_pairs": case.n_pairs,
        "runs": len(seconds),
        "seconds_min": float(min(seconds)),
        "seconds_max": float(max(seconds)),
        "warmup_run": result["warmup_run"],
        "svd_method": result.get("svd_method"),
        "library_version": result["library_version"],
    }


def _largest(grid: list[cases.Case]) -> cases.Case:
    """Return the case with the most thin-SVD flops."""
    return max(
        grid, key=lambda case: floor.thin_svd_flops(case.n_features, case.n_pairs)
    )


def _fit_grid(
    grid: list[cases.Case],
    workers: dict[str, _Worker],
    folder: Path,
    largest: cases.Case,
    results_path: Path,
) -> tuple[list[dict], dict, dict, list[str]]:
    """Fit every case with every available implementation.

    Returns the JSON entries, the reference eigenvalues and ranks per case, the
    profile of koopman-hybrid on the largest case, and the failures. The entries are
    also written to ``results_path`` after every case, so a run that is stopped early
    keeps what it measured.
    """
    entries = []
    references = {}
    profile = None
    failures = []
    trajectories = {}

    for case in grid:
        key = (case.d, case.N)
        if key not in trajectories:
            trajectories = {key: cases.make_trajectories(case.d, case.N)}
        X32, Y32 = snapshot_pairs(trajectories[key], case.h)
        rank, numerical_rank = cases.benchmark_rank(X32)
        x_path = folder / "X.npy"
        y_path = folder / "Y.npy"
        np.save(x_path, np.ascontiguousarray(X32, dtype=np.float64))
        np.save(y_path, np.ascontiguousarray(Y32, dtype=np.float64))
        del X32, Y32

        reference = None
        line = [f"{case.label()} ({case.n_features} x {case.n_pairs}, r={rank}):"]
        for implementation in IMPLEMENTATIONS:
            if implementation not in workers:
                continue
            task = {
                "implementation": implementation,
                "label": case.label(),
                "x_path": str(x_path),
                "y_path": str(y_path),
                "rank": rank,
                "min_runs": MIN_RUNS,
                "profile": implementation == "koopman-hybrid" and case == largest,
            }
            result, error = workers[implementation].run(task)
            if error is not None:
                failures.append(f"{implementation} on {case.label()}: {error}")
                line.append(f"{implementation} FAILED")
                continue
            entry = _entry(case, rank, numerical_rank, result)
            eigenvalues = _eigenvalues(result)
            if implementation == "koopman-hybrid":
                reference = eigenvalues
                entry["max_eigenvalue_rel_diff"] = 0.0
                if result["profile"] is not None:
                    profile = {"case": case.label(), "rows": result["profile"]}
            elif reference is not None:
                entry["max_eigenvalue_rel_diff"] = _compare(reference, eigenvalues)
            entries.append(entry)
            line.append(f"{implementation} {entry['seconds']:.3g} s")
        references[case] = (reference, rank)
        atomic_write_json(results_path, entries)
        print(" ".join(line), flush=True)
    return entries, references, profile, failures


def _compare(reference: np.ndarray, eigenvalues: np.ndarray) -> float | None:
    if reference.shape != eigenvalues.shape:
        return None
    return cases.max_eigenvalue_rel_diff(reference, eigenvalues)


def _front_ends(
    front_end_cases,
    references: dict,
    workers: dict[str, _Worker],
    folder: Path,
) -> tuple[list[dict], list[str]]:
    """Fit the libraries' delay-embedding front ends on the joined series."""
    rows = []
    failures = []
    for case in front_end_cases:
        spurious = cases.spurious_pairs_formula(case)
        counted = cases.spurious_pairs_counted(case)
        if spurious != counted:
            raise RuntimeError(
                f"spurious pair formula gives {spurious} but counting gives {counted} "
                f"for {case.label()}; the formula in cases.py is wrong."
            )
        reference, rank = references.get(case, (None, None))
        row = {
            "d": case.d,
            "h": case.h,
            "N": case.N,
            "rank": rank,
            "joined_pairs": cases.joined_pairs(case),
            "spurious_pairs": spurious,
            "spurious_fraction": spurious / cases.joined_pairs(case),
            "per_trajectory_spectral_radius": (
                float(np.abs(reference).max()) if reference is not None else None
            ),
        }
        if reference is None:
            rows.append(row)
            continue

        trajectories = cases.make_trajectories(case.d, case.N)
        series = trajectories.reshape(case.N * cases.N_STATES, case.d).T
        series_path = folder / "series.npy"
        np.save(series_path, np.ascontiguousarray(series, dtype=np.float64))
        for implementation, front_end in (
            ("pydmd", "pydmd-hankel"),
            ("pykoopman", "pykoopman-timedelay"),
        ):
            if implementation not in workers:
                continue
            task = {
                "implementation": front_end,
                "label": case.label(),
                "series_path": str(series_path),
                "rank": rank,
                "delay": case.h,
                "min_runs": 1,
            }
            result, error = workers[implementation].run(task)
            if error is not None:
                failures.append(f"{front_end} on {case.label()}: {error}")
                continue
            eigenvalues = _eigenvalues(result)
            row[f"{front_end}_max_eigenvalue_rel_diff"] = _compare(
                reference, eigenvalues
            )
            row[f"{front_end}_spectral_radius"] = float(np.abs(eigenvalues).max())
            row[f"{front_end}_seconds"] = float(np.median(result["seconds"]))
        rows.append(row)
        print(
            f"front ends {case.label()}: spurious fraction "
            f"{row['spurious_fraction']:.3f}",
            flush=True,
        )
    return rows, failures


def main(arguments) -> None:
    """Run the benchmark with the options that run.py parsed."""
    started = time.perf_counter()
    load_before = os.getloadavg()
    results_dir = BENCHMARK_DIR / "results"
    if arguments.quick:
        results_dir = results_dir / "quick"
        page_path = results_dir / "BENCHMARKS.md"
    else:
        page_path = REPOSITORY / "BENCHMARKS.md"

    interpreters = {
        "koopman-hybrid": Path(sys.executable),
        "pydmd": Path(sys.executable),
    }
    pykoopman_note = "skipped with --skip-pykoopman"
    if not arguments.skip_pykoopman:
        interpreter, pykoopman_note = pykoopman_env.ensure_environment()
        if interpreter is None:
            print(f"PyKoopman rows skipped: {pykoopman_note}", flush=True)
        else:
            interpreters["pykoopman"] = interpreter

    grid = cases.grid(arguments.quick)
    largest = _largest(grid)
    # The floor's rate is measured before and after the fits, and the faster of the
    # two is kept, because load from other jobs slows a measurement and a slower rate
    # would lengthen the floor and flatter the ratio to it.
    print("Measuring the matrix-multiply rate for the floor...", flush=True)
    floor_before = floor.measure(largest.n_features, largest.n_pairs)
    front_end_cases = QUICK_FRONT_END_CASES if arguments.quick else FRONT_END_CASES
    load_samples = []
    with tempfile.TemporaryDirectory(prefix="kh-bench-") as temporary:
        folder = Path(temporary)
        workers = {
            implementation: _Worker(
                interpreter, folder / f"{implementation}.log", load_samples
            )
            for implementation, interpreter in interpreters.items()
        }
        try:
            entries, references, profile, failures = _fit_grid(
                grid, workers, folder, largest, results_dir / "dmd_fit.json"
            )
            front_ends, front_end_failures = _front_ends(
                front_end_cases, references, workers, folder
            )
        finally:
            for worker in workers.values():
                worker.stop()
    failures += front_end_failures

    print("Measuring the matrix-multiply rate for the floor again...", flush=True)
    floor_after = floor.measure(largest.n_features, largest.n_pairs)
    floor_info = max(
        floor_before, floor_after, key=lambda info: info["rate_gflops_per_s"]
    )
    floor_info["rates_gflops_per_s_before_and_after"] = [
        floor_before["rate_gflops_per_s"],
        floor_after["rate_gflops_per_s"],
    ]
    floor_info["case"] = {"d": largest.d, "h": largest.h, "N": largest.N}

    run_info = {
        "quick": arguments.quick,
        "machine": report.machine_info(),
        "versions": report.versions(interpreters),
        "pykoopman_environment": pykoopman_note,
        "grid": [case.label() for case in grid],
        "min_runs": MIN_RUNS,
        "threads": arguments.threads,
        "rank_cap": cases.RANK_CAP,
        "floor": floor_info,
        "profile": profile,
        "front_ends": front_ends,
        "failures": failures,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "load_average_samples": load_samples,
        "total_minutes": (time.perf_counter() - started) / 60,
        "finished": time.strftime("%Y-%m-%d %H:%M %Z"),
        "platform": platform.platform(),
    }
    atomic_write_json(results_dir / "dmd_fit.json", entries)
    atomic_write_json(results_dir / "run_info.json", run_info)
    atomic_write_text(page_path, report.render(entries, run_info))
    print(f"Wrote {results_dir / 'dmd_fit.json'} and {page_path}.", flush=True)
    for failure in failures:
        print(f"FAILED: {failure}", flush=True)
