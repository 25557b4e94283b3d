# Set-up and entry points. Every target installs what it needs into .venv/.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch: a plain "torch" requirement can pull a CUDA build of several GB.
TORCH_SPEC ?= torch==2.13.0

.PHONY: install run test bench clean

$(BIN)/koopman-hybrid: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

install: $(BIN)/koopman-hybrid

run: install
	$(BIN)/koopman-hybrid reproduce yinyang

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) runs .pytest_cache
