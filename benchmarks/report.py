"""Machine description and the BENCHMARKS.md page, rendered from the results."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import cases
import numpy as np
import pykoopman_env
import scipy
import torch

REPOSITORY = Path(__file__).resolve().parent.parent

# The goal on the largest case: equal eigenvalues to this relative difference, a
# speed-up of at least GOAL_SPEEDUP over each library, and at most GOAL_FLOOR_RATIO
# times the thin-SVD floor.
GOAL_EIGENVALUE_DIFF = 1e-6
GOAL_SPEEDUP = 5.0
GOAL_FLOOR_RATIO = 2.0

_PYKOOPMAN_VERSIONS_SCRIPT = """
import json, warnings
warnings.simplefilter("ignore")
from importlib.metadata import version
import numpy
blas = numpy.show_config(mode="dicts")["Build Dependencies"]["blas"]
names = ("pykoopman", "numpy", "scipy", "scikit-learn", "pydmd", "torch", "lightning")
info = {name: version(name) for name in names}
info["numpy_blas"] = f"{blas['name']} {blas['version']}"
print(json.dumps(info))
"""


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return None


def _torch_blas() -> str:
    settings = torch.__config__.show()
    blas = re.search(r"BLAS_INFO=(\w+)", settings)
    lapack = re.search(r"LAPACK_INFO=(\w+)", settings)
    return (
        f"BLAS {blas.group(1) if blas else 'unknown'}, "
        f"LAPACK {lapack.group(1) if lapack else 'unknown'}, "
        f"{torch.get_num_threads()} threads"
    )


def machine_info() -> dict:
    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "numpy_blas": f"{blas['name']} {blas['version']}",
        "torch_blas": _torch_blas(),
    }


def versions(interpreters: dict[str, Path]) -> dict:
    main = {
        "python": sys.version.split()[0],
        "koopman-hybrid": version("koopman-hybrid"),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "torch": torch.__version__,
        "pydmd": version("pydmd"),
    }
    result = {"project_environment": main, "pykoopman_environment": None}
    if "pykoopman" in interpreters:
        finished = subprocess.run(
            [str(interpreters["pykoopman"]), "-c", _PYKOOPMAN_VERSIONS_SCRIPT],
            capture_output=True,
            text=True,
        )
        if finished.returncode == 0:
            result["pykoopman_environment"] = json.loads(finished.stdout)
    return result


def _number(value, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}g}"


def _ratio(numerator, denominator) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def _by_case(entries: list[dict]) -> dict:
    table = {}
    for entry in entries:
        key = (entry["d"], entry["h"], entry["N"])
        table.setdefault(key, {})[entry["implementation"]] = entry
    return table


def _field(rows: dict, implementation: str, name: str):
    entry = rows.get(implementation)
    return None if entry is None else entry[name]


def _fit_table(entries: list[dict]) -> list[str]:
    lines = [
        "| d | h | N | X shape | r | route | koopman-hybrid s | PyDMD s | "
        "PyKoopman s | x PyDMD | x PyKoopman | koopman-hybrid MB | PyDMD MB | "
        "PyKoopman MB | eig diff PyDMD | eig diff PyKoopman |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | "
        "--- | --- | --- | --- |",
    ]
    for (d, h, N), rows in _by_case(entries).items():
        any_entry = next(iter(rows.values()))
        ours = _field(rows, "koopman-hybrid", "seconds")
        pydmd_s = _field(rows, "pydmd", "seconds")
        pykoopman_s = _field(rows, "pykoopman", "seconds")
        route = _field(rows, "koopman-hybrid", "svd_method") or "n/a"
        lines.append(
            f"| {d} | {h} | {N} | {any_entry['n_features']} x {any_entry['n_pairs']} "
            f"| {any_entry['rank']} | {route} "
            f"| {_number(ours)} | {_number(pydmd_s)} | {_number(pykoopman_s)} "
            f"| {_number(_ratio(pydmd_s, ours), 2)} "
            f"| {_number(_ratio(pykoopman_s, ours), 2)} "
            f"| {_number(_field(rows, 'koopman-hybrid', 'peak_mb'))} "
            f"| {_number(_field(rows, 'pydmd', 'peak_mb'))} "
            f"| {_number(_field(rows, 'pykoopman', 'peak_mb'))} "
            f"| {_number(_field(rows, 'pydmd', 'max_eigenvalue_rel_diff'), 2)} "
            f"| {_number(_field(rows, 'pykoopman', 'max_eigenvalue_rel_diff'), 2)} |"
        )
    return lines


def _largest_case(
    entries: list[dict], run_info: dict
) -> tuple[dict, dict, dict, float]:
    """Return the floor record, the largest case, its rows and koopman-hybrid's time."""
    floor = run_info["floor"]
    case = floor["case"]
    rows = _by_case(entries).get((case["d"], case["h"], case["N"]), {})
    return floor, case, rows, _field(rows, "koopman-hybrid", "seconds")


def _goal_section(entries: list[dict], run_info: dict) -> list[str]:
    floor, case, rows, ours = _largest_case(entries, run_info)
    lines = [
        f"Largest case: d = {case['d']}, h = {case['h']}, N = {case['N']} "
        f"(X is {floor['m']} x {floor['n']}, rank "
        f"{_field(rows, 'koopman-hybrid', 'rank')}, fit route "
        f"{_field(rows, 'koopman-hybrid', 'svd_method')}).",
        "",
        "| check | goal | reached | met |",
        "| --- | --- | --- | --- |",
    ]
    for implementation, name in (("pydmd", "PyDMD"), ("pykoopman", "PyKoopman")):
        theirs = _field(rows, implementation, "seconds")
        speedup = _ratio(theirs, ours)
        diff = _field(rows, implementation, "max_eigenvalue_rel_diff")
        lines.append(
            f"| speed-up over {name} | >= {GOAL_SPEEDUP:g} | {_number(speedup, 3)} "
            f"| {_verdict(speedup, lambda value: value >= GOAL_SPEEDUP)} |"
        )
        lines.append(
            f"| eigenvalue difference to {name} | <= {GOAL_EIGENVALUE_DIFF:g} "
            f"| {_number(diff, 2)} "
            f"| {_verdict(diff, lambda value: value <= GOAL_EIGENVALUE_DIFF)} |"
        )
    floor_ratio = _ratio(ours, floor["thin_svd_floor_seconds"])
    lines.append(
        f"| time / thin-SVD floor | <= {GOAL_FLOOR_RATIO:g} "
        f"| {_number(floor_ratio, 3)} "
        f"| {_verdict(floor_ratio, lambda value: value <= GOAL_FLOOR_RATIO)} |"
    )
    return lines


def _summary_lines(entries: list[dict], run_info: dict) -> list[str]:
    """Return one paragraph with the ratios reached on the largest case."""
    floor, case, rows, ours = _largest_case(entries, run_info)
    parts = []
    for implementation, name in (("pydmd", "PyDMD"), ("pykoopman", "PyKoopman")):
        speedup = _ratio(_field(rows, implementation, "seconds"), ours)
        diff = _field(rows, implementation, "max_eigenvalue_rel_diff")
        if speedup is None:
            parts.append(f"{name} did not run")
        else:
            parts.append(
                f"a speed-up of {speedup:.3g} over {name} (eigenvalues within "
                f"{_number(diff, 2)} relative)"
            )
    floor_ratio = _ratio(ours, floor["thin_svd_floor_seconds"])
    return [
        f"Result on the largest case (d = {case['d']}, h = {case['h']}, "
        f"N = {case['N']}, X of {floor['m']} x {floor['n']}): koopman-hybrid's fit "
        f"took {_number(ours)} s, {parts[0]}, {parts[1]}, and "
        f"{_number(floor_ratio, 3)} times the thin-SVD floor of "
        f"{floor['thin_svd_floor_seconds']:.3g} s. The goal was a speed-up of at "
        f"least {GOAL_SPEEDUP:g} over both at eigenvalues within "
        f"{GOAL_EIGENVALUE_DIFF:g} relative, and at most {GOAL_FLOOR_RATIO:g} times "
        "the floor.",
    ]


def _verdict(value, test) -> str:
    if value is None:
        return "not measured"
    return "yes" if test(value) else "no"


def _floor_section(entries: list[dict], run_info: dict) -> list[str]:
    floor, case, rows, ours = _largest_case(entries, run_info)
    small, large, _ = floor["matmul_shape"]
    return [
        f"X of the largest case is {floor['m']} x {floor['n']}, so M = {large} and "
        f"k = {small}.",
        "",
        "| quantity | value |",
        "| --- | --- |",
        f"| thin SVD, 6 M k^2 + 20 k^3 | {floor['thin_svd_flops']:.3g} flop |",
        f"| SVD with full U, 4 M^2 k + 22 k^3 (for reference) | "
        f"{floor['full_svd_flops']:.3g} flop |",
        f"| Gram route lower bound, k^2 M + 4/3 k^3 | {floor['gram_flops']:.3g} flop |",
        f"| float64 matmul ({small} x {large}) @ ({large} x {small}), numpy | "
        f"{floor['numpy_gflops_per_s']:.1f} GFLOP/s |",
        f"| same, torch | {floor['torch_gflops_per_s']:.1f} GFLOP/s |",
        f"| floor: thin-SVD count / faster rate | "
        f"{floor['thin_svd_floor_seconds']:.2f} s |",
        f"| Gram lower bound / faster rate | {floor['gram_floor_seconds']:.2f} s |",
        f"| koopman-hybrid fit (median) | {_number(ours)} s |",
        f"| fit / thin-SVD floor | "
        f"{_number(_ratio(ours, floor['thin_svd_floor_seconds']), 3)} |",
        "",
        "The operation counts are those of Golub and Van Loan, Matrix Computations, "
        "3rd ed. (1996), section 5.4.5 (R-SVD), and section 8.3 for the 4/3 k^3 of the "
        "tridiagonal reduction. The rate is the best of three products of the stated "
        "shape, measured before and after the fits "
        f"({_rates_text(floor)}), and the faster measurement sets the floor. "
        "LAPACK's SVD runs well below the matrix-multiply rate, because its "
        "bidiagonal reduction is half matrix-vector work, so a plain thin SVD cannot "
        "reach this floor. koopman-hybrid's Gram route does not compute the thin SVD: "
        "it forms the k x k Gram matrix, reduces it to tridiagonal form, and computes "
        "eigenvectors only for the r kept singular values, so it can finish below "
        "the floor (a ratio under 1).",
    ]


def _rates_text(floor: dict) -> str:
    rates = floor.get("rates_gflops_per_s_before_and_after")
    if not rates:
        return "one measurement"
    return f"{rates[0]:.1f} and {rates[1]:.1f} GFLOP/s"


def _profile_section(run_info: dict) -> list[str]:
    profile = run_info.get("profile")
    if not profile:
        return ["No profile was recorded (koopman-hybrid did not run on this case)."]
    lines = [
        f"One extra koopman-hybrid fit on {profile['case']} under cProfile, the "
        "functions with the largest own time (torch and numpy kernels appear as "
        "their Python entry points):",
        "",
        "| function | where | calls | own s | cumulative s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in profile["rows"]:
        where = row["where"].replace(str(REPOSITORY) + "/", "")
        where = re.sub(r".*/site-packages/", "", where)
        lines.append(
            f"| `{row['function']}` | `{where}` | {row['calls']} "
            f"| {row['own_seconds']:.3f} | {row['cumulative_seconds']:.3f} |"
        )
    return lines


def _front_end_section(run_info: dict) -> list[str]:
    lines = [
        "| d | h | N | r | pairs in the joined series | spurious pairs | "
        "spurious fraction | eig diff HankelDMD | eig diff TimeDelay | "
        "spectral radius per trajectory | HankelDMD | TimeDelay |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in run_info["front_ends"]:
        lines.append(
            f"| {row['d']} | {row['h']} | {row['N']} | {row['rank']} "
            f"| {row['joined_pairs']} | {row['spurious_pairs']} "
            f"| {row['spurious_fraction']:.3f} "
            f"| {_number(row.get('pydmd-hankel_max_eigenvalue_rel_diff'), 2)} "
            f"| {_number(row.get('pykoopman-timedelay_max_eigenvalue_rel_diff'), 2)} "
            f"| {_number(row.get('per_trajectory_spectral_radius'), 4)} "
            f"| {_number(row.get('pydmd-hankel_spectral_radius'), 4)} "
            f"| {_number(row.get('pykoopman-timedelay_spectral_radius'), 4)} |"
        )
    return lines


def _load_text(run_info: dict) -> str:
    before = run_info["load_average_before"][0]
    after = run_info["load_average_after"][0]
    samples = run_info.get("load_average_samples") or []
    text = (
        f"The 1-minute load average was {before:.1f} at the start and {after:.1f} "
        "at the end."
    )
    if samples:
        text += (
            f" Sampled after each of the {len(samples)} worker tasks, it ranged from "
            f"{min(samples):.1f} to {max(samples):.1f}, median "
            f"{float(np.median(samples)):.1f}."
        )
    return text


def _machine_section(run_info: dict) -> list[str]:
    machine = run_info["machine"]
    project = run_info["versions"]["project_environment"]
    pykoopman = run_info["versions"]["pykoopman_environment"]
    memory = machine["memory_gib"]
    lines = [
        f"- CPU: {machine['cpu_model']}, {machine['cpu_count']} cores"
        + (f", {memory:.0f} GiB memory" if memory else "")
        + f" ({run_info['platform']}).",
        f"- The {machine['cpu_count']} cores were shared with other jobs during the "
        f"run. {_load_text(run_info)} Absolute times carry that noise. The "
        "implementations ran interleaved, case by case, so they saw similar load.",
        f"- Project environment: Python {project['python']}, koopman-hybrid "
        f"{project['koopman-hybrid']}, numpy {project['numpy']} "
        f"({machine['numpy_blas']}), scipy {project['scipy']}, torch "
        f"{project['torch']} ({machine['torch_blas']}), PyDMD {project['pydmd']}.",
    ]
    if pykoopman:
        lines.append(
            f"- PyKoopman environment (benchmarks/.venv-pykoopman): PyKoopman "
            f"{pykoopman['pykoopman']}, numpy {pykoopman['numpy']} "
            f"({pykoopman['numpy_blas']}), scipy {pykoopman['scipy']}, scikit-learn "
            f"{pykoopman['scikit-learn']}, its pinned PyDMD {pykoopman['pydmd']}, "
            f"torch {pykoopman['torch']} and lightning {pykoopman['lightning']} "
            "(imported by pykoopman, unused by EDMD)."
        )
    else:
        lines.append(f"- PyKoopman: not run ({run_info['pykoopman_environment']}).")
    lines.append(
        f"- Finished {run_info['finished']} after {run_info['total_minutes']:.1f} "
        "minutes."
    )
    return lines


def render(entries: list[dict], run_info: dict) -> str:
    """Render the record page as Markdown."""
    quick_note = (
        ["", "This is a --quick smoke run on a small grid, not the record."]
        if run_info["quick"]
        else []
    )
    failures = run_info["failures"] or ["none"]
    lines = [
        "# DMD fit benchmark",
        "",
        "This page records how long the DMD fit of koopman-hybrid takes against "
        "PyDMD and PyKoopman on the same snapshot pairs, how much memory it uses, "
        "whether the eigenvalues agree, and what the libraries' own delay-embedding "
        "front ends do to data made of many short trajectories. `make bench` "
        "(`python benchmarks/run.py`) regenerates it together with "
        "`benchmarks/results/dmd_fit.json` and `benchmarks/results/run_info.json`. "
        "`--quick` runs a small grid in about a minute and writes under "
        "`benchmarks/results/quick/`, and `--skip-pykoopman` leaves PyKoopman out.",
        *quick_note,
        "",
        *_summary_lines(entries, run_info),
        "",
        "## Machine",
        "",
        *_machine_section(run_info),
        "",
        "## Method",
        "",
        *_method_lines(run_info),
        "",
        "## Goal on the largest case",
        "",
        *_goal_section(entries, run_info),
        "",
        "## Floor",
        "",
        *_floor_section(entries, run_info),
        "",
        "## Fit time, memory and eigenvalues",
        "",
        "Seconds are medians, `x PyDMD` and `x PyKoopman` are their time divided by "
        "koopman-hybrid's, MB is the peak resident memory growth during one fit in "
        "10^6 bytes, and the eigenvalue differences are relative to koopman-hybrid's "
        "spectral radius. The route is the SVD route that koopman-hybrid's "
        '`svd_method="auto"` chose.',
        "",
        *_fit_table(entries),
        "",
        "## Where koopman-hybrid's time goes",
        "",
        *_profile_section(run_info),
        "",
        "## Library front ends on the joined series",
        "",
        *_front_end_text(),
        "",
        *_front_end_section(run_info),
        "",
        "## Failures",
        "",
        *[f"- {failure}" for failure in failures],
        "",
    ]
    return "\n".join(lines)


def _method_lines(run_info: dict) -> list[str]:
    return [
        f"- Data: for each width d and number of trajectories N, one seeded random "
        f"ReLU layer stack s_(t+1) = relu(W s_t + b) with W = "
        f"{cases.IDENTITY_WEIGHT} I + noise (entry standard deviation "
        f"{cases.COUPLING}/sqrt(d)) and b of standard deviation {cases.BIAS_SCALE} "
        f"runs N inputs drawn uniformly from [0, 1]^d through n = "
        f"{cases.N_INSERTED_LAYERS} inserted layers, giving T = {cases.N_STATES} "
        "float32 states per trajectory (benchmarks/cases.py). About a third of the "
        "units are zero in the last state.",
        "- Snapshot pairs: built once per case with "
        "`koopman_hybrid.delay.snapshot_pairs(trajectories, h)`, inside each "
        "trajectory only: X and Y have (h + 1) d rows and N (T - h - 1) columns. "
        "They are cast once to float64, and all three implementations get the same "
        "float64 arrays.",
        f"- Rank: r = min(k, {run_info['rank_cap']}) for every case and every "
        "implementation, where k is the numerical rank of the float32 X as "
        "`RankPolicy.tolerance()` defines it for float32 input: the number of "
        "singular values above s_1 max(m, n) eps_32. Without the cap, r reaches the "
        "thousands on the largest cases, where the trailing singular values are near "
        "float32 round-off and the eigenvalues of any two correct implementations "
        "differ.",
        "- Calls timed (construction and fit, nothing else): "
        "`koopman_hybrid.dmd.DMD(rank=RankPolicy.fixed(r)).fit(X, Y)`; "
        "`pydmd.DMD(svd_rank=r, exact=True).fit(X, Y)`; "
        "`pykoopman.Koopman(observables=Identity(), "
        "regressor=EDMD(svd_rank=r)).fit(X.T, Y.T)` (samples as rows). Each fit "
        "includes what the library computes in fit, such as PyDMD's amplitudes and "
        "PyKoopman's eigenvector inverse.",
        '- koopman-hybrid runs with its default `svd_method="auto"`, and the fit '
        "table's route column names the route it took. The Gram route forms the "
        "smaller of X X^T and X^T X with one BLAS syrk, reduces it to tridiagonal "
        "form with LAPACK dsytrd (scipy's OpenBLAS), and computes eigenvectors only "
        "for the r kept singular values. The direct route runs torch's thin SVD "
        "(MKL). PyDMD and PyKoopman both run numpy's thin SVD (OpenBLAS).",
        f"- Threads: every fit and the floor's matrix product ran with "
        f"{run_info['threads']} BLAS and OpenMP thread(s) (OMP_NUM_THREADS, "
        "MKL_NUM_THREADS and OPENBLAS_NUM_THREADS, set by benchmarks/run.py; change "
        "with --threads). One is the default because, with the 2 cores shared with "
        "other jobs, a 2-thread torch SVD of a 384 x 600 matrix took from 0.05 s to "
        "7.7 s from one call to the next, against 0.03 s to 0.09 s with one thread.",
        "- Timing: one long-lived worker process per implementation "
        "(benchmarks/fit_worker.py), which takes the cases in turn, so no library "
        "shares a process with another. The implementations run interleaved, case "
        "by case. For each case the worker loads X and Y, then runs one untimed "
        "warm-up fit unless it takes over 2 s, in which case it is the first timed "
        f"run. Then at least {run_info['min_runs']} timed fits, repeated up to 25 "
        "until they add up to 1 s. The table gives the median.",
        "- Memory: before each fit the worker resets the kernel's peak-RSS counter "
        "(writing 5 to /proc/self/clear_refs) and reads VmRSS. After the fit it reads "
        "VmHWM. The difference, maximised over the timed fits, is the peak growth, "
        "which includes BLAS, LAPACK and torch allocations that tracemalloc cannot "
        "see. The input arrays are loaded before and are not counted. The workers run "
        "with MALLOC_MMAP_THRESHOLD_=131072, so glibc maps every block over 128 KiB "
        "with mmap and returns it to the system when it is freed, and one case's "
        "arrays cannot hide the next case's growth.",
        "- Eigenvalues: each library's eigenvalues are matched to koopman-hybrid's by "
        "minimum-cost assignment on |lambda_i - mu_j| (scipy's "
        "linear_sum_assignment), and the table gives max_i |lambda_i - mu_pi(i)| / "
        "max_i |lambda_i|.",
        "- PyKoopman 1.2.1 pins old numpy, scipy, scikit-learn and PyDMD, so it runs "
        "in its own environment, benchmarks/.venv-pykoopman, built on the first run. "
        "Its declared requirements would also pull torch 2.1 with the CUDA libraries "
        "(several GB) and its documentation tools. The build keeps the numerical "
        "pins, installs the project's CPU torch and lightning 2.0.9 because "
        "importing pykoopman imports them, and installs pykoopman itself without "
        "dependencies (benchmarks/pykoopman_env.py). The first build takes "
        f"{pykoopman_env.BUILD_ESTIMATE}. "
        f"This run: {run_info['pykoopman_environment']}.",
    ]


def _front_end_text() -> list[str]:
    return [
        "A user who has many short trajectories and feeds them to PyDMD's "
        "`HankelDMD(svd_rank=r, exact=True, d=h + 1)` or to PyKoopman's "
        "`Koopman(observables=TimeDelay(delay=1, n_delays=h), "
        "regressor=EDMD(svd_rank=r))` must join them into one series of N T states, "
        "because both take one time series. Of its N T - h - 1 pairs of consecutive "
        "delay windows, N (T - h - 1) lie inside one trajectory, so (N - 1)(h + 1) "
        "pairs mix the end of one trajectory with the start of the next. The run "
        "checks this formula against a direct count. The eigenvalue columns compare "
        "each front end, at the same rank r, with koopman-hybrid's per-trajectory "
        "fit of the same case (same matching and scale as above). In the fit table, "
        "the same libraries fed the per-trajectory pairs agree with koopman-hybrid, "
        "so the difference here is what the mixed pairs add.",
    ]
