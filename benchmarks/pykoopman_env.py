"""Build the separate virtual environment that runs PyKoopman, once.

PyKoopman 1.2.1 pins numpy <= 1.26, scipy <= 1.11.2, scikit-learn 1.1.3 and
pydmd 0.4.1, which conflict with the project's environment, so it gets its own at
benchmarks/.venv-pykoopman. Its declared requirements also pull torch 2.1 with the
CUDA 12 libraries (several GB) and its documentation and test tools (Jupyter, Sphinx,
pytest). The EDMD path that the benchmark times uses none of them, but importing
pykoopman imports torch and lightning. So the build installs the numerical pins
exactly, the project's CPU torch and lightning 2.0.9 for the import, and pykoopman
itself without its declared dependencies.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

VENV_DIR = Path(__file__).resolve().parent / ".venv-pykoopman"
PYKOOPMAN_SPEC = "pykoopman==1.2.1"
# PyKoopman 1.2.1's own pins for the libraries its EDMD path runs, plus what its
# modules import at import time. setuptools < 81 still ships pkg_resources, which
# pykoopman's __init__ imports.
RUNTIME_SPECS = (
    "numpy==1.26.0",
    "scipy==1.11.2",
    "scikit-learn==1.1.3",
    "pydmd==0.4.1",
    "optht==0.2.0",
    "derivative~=0.6.0",
    "prettytable==3.9.0",
    "matplotlib",
    "setuptools<81",
    "lightning==2.0.9.post0",
)
# The same CPU build of torch as the Makefile's TORCH_SPEC, overridable the same way.
DEFAULT_TORCH_SPEC = "torch==2.13.0"
# Cost of the first build. One build on a shared 2-core machine took 5.3 minutes
# and 1.5 GB, with torch from a local wheel. It is printed before each build.
BUILD_ESTIMATE = "about 1 to 10 minutes and 1.5 GB, depending on the package cache"
# Written last, so an interrupted build is detected and redone.
MARKER = "benchmark-environment-complete"
BUILD_TIMEOUT_S = 1800
CHECK_SCRIPT = (
    "import warnings; warnings.simplefilter('ignore'); "
    "import pykoopman; from pykoopman.observables import Identity, TimeDelay; "
    "from pykoopman.regression import EDMD; print(pykoopman.__version__)"
)


def python_path() -> Path:
    return VENV_DIR / "bin" / "python"


def _specs() -> list[str]:
    torch_spec = os.environ.get("TORCH_SPEC", DEFAULT_TORCH_SPEC)
    return [*RUNTIME_SPECS, torch_spec]


def _marker_text() -> str:
    return "\n".join([PYKOOPMAN_SPEC, *_specs()]) + "\n"


def _is_complete() -> bool:
    marker = VENV_DIR / MARKER
    if not marker.is_file() or marker.read_text() != _marker_text():
        return False
    check = subprocess.run(
        [str(python_path()), "-c", CHECK_SCRIPT], capture_output=True, text=True
    )
    return check.returncode == 0


def _run_logged(command: list[str], log) -> None:
    log.write("$ " + " ".join(command) + "\n")
    log.flush()
    subprocess.run(
        command,
        stdout=log,
        stderr=subprocess.STDOUT,
        check=True,
        timeout=BUILD_TIMEOUT_S,
    )


def _first_error(log_path: Path) -> str:
    """Return the log's first line that starts with "ERROR", as a sentence, or ""."""
    errors = [
        line.strip()
        for line in log_path.read_text(errors="replace").splitlines()
        if line.startswith("ERROR")
    ]
    return f"Its first error: {errors[0]} " if errors else ""


def ensure_environment() -> tuple[Path | None, str]:
    """Return (interpreter, note), building the environment if it is missing.

    The interpreter is None when the build failed. The note then gives the failed
    step, the first error and the build log's path, which the run script prints
    when it skips the PyKoopman rows.
    """
    if _is_complete():
        return python_path(), "reused the existing environment"

    if sys.version_info < (3, 11):
        return None, (
            f"PyKoopman 1.2.1 needs Python >= 3.11, but the benchmark runs on "
            f"{sys.version.split()[0]}. Run it from a Python 3.11 environment."
        )

    print(
        f"Building the PyKoopman environment at {VENV_DIR} once ({BUILD_ESTIMATE})...",
        flush=True,
    )
    started = time.perf_counter()
    if VENV_DIR.exists():
        shutil.rmtree(VENV_DIR)
    # The base interpreter, not this virtual environment's, seeds the new one.
    base_python = getattr(sys, "_base_executable", sys.executable)
    created = subprocess.run(
        [base_python, "-m", "venv", str(VENV_DIR)], capture_output=True, text=True
    )
    if created.returncode != 0:
        return None, (
            f"creating the PyKoopman environment with {base_python} -m venv failed: "
            f"{created.stderr.strip()}"
        )

    log_path = VENV_DIR / "build.log"
    pip = [str(python_path()), "-m", "pip", "install", "--quiet"]
    steps = (
        ("installing its pinned libraries", [*pip, *_specs()]),
        ("installing pykoopman", [*pip, "--no-deps", PYKOOPMAN_SPEC]),
        ("importing pykoopman", [str(python_path()), "-c", CHECK_SCRIPT]),
    )
    with open(log_path, "w") as log:
        for step, command in steps:
            try:
                _run_logged(command, log)
            except subprocess.CalledProcessError as error:
                reason = f"exited with status {error.returncode}"
            except subprocess.TimeoutExpired:
                reason = f"timed out after {BUILD_TIMEOUT_S} s"
            except OSError as error:
                reason = f"could not start ({error})"
            else:
                continue
            return None, (
                f"building the PyKoopman environment failed while {step}: the "
                f"command {reason}. {_first_error(log_path)}The full log is "
                f"{log_path}. Run the benchmark again to retry, or pass "
                "--skip-pykoopman."
            )

    (VENV_DIR / MARKER).write_text(_marker_text())
    minutes = (time.perf_counter() - started) / 60
    print(f"PyKoopman environment ready after {minutes:.1f} min.", flush=True)
    return python_path(), f"built in {minutes:.1f} min"
