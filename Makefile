# The two set-up commands: `make demo` (the main job on the embedded default) and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint bench browser clean weights

# torch first and pinned: the CPU build lies on local disk; unpinned, pip pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip check
	touch $(STAMP)

venv: $(STAMP)

# Debian's Chromium drives the web-map tests (playwright's own browser download is blocked here).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian chromium for the browser tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "WARNING: could not install chromium; browser tests will be skipped with a reason"; }

demo: venv
	$(PY) -m ray_jobs.demo $(DEMO_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy bench  # the benchmark scripts: a stale call there would otherwise show only on a GPU machine

test: venv browser lint
	$(PY) -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

# The committed CPU-preset weights that `make demo` fine-tunes (about an hour on 2 cores; see docs/convergence.md).
weights: venv
	$(PY) bench/convergence.py --seeds 0 --weights-out weights --out bench/results/convergence-weights.json

bench: venv
	@for f in bench/[!_]*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
