# The two commands a new user runs: `make demo` (the CLD toy pipeline) and `make test` (the test suite).
# Both create/update a local virtualenv: torch is installed first, pinned (a CPU wheel), then the project.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: demo test typecheck docs bench table8 clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test,docs,images,mcmc,pretrained,safetensors]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/toy_train.py --out outputs/demo

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --durations=15

typecheck: $(STAMP)
	$(PY) -m mypy splitdyn splitdyn_cld

docs: $(STAMP)
	$(PY) -m sphinx -W --keep-going -b html docs docs/_build/html
	$(PY) -m sphinx -W --keep-going -b doctest docs docs/_build/doctest

bench: $(STAMP)
	$(PY) benchmarks/bench_accuracy.py --quick
	$(PY) benchmarks/bench_step_cost.py --quick
	$(PY) benchmarks/report.py

table8: $(STAMP)
	$(PY) examples/toy_analytic_sampling.py --json outputs/table8_uniform.json
	$(PY) examples/toy_analytic_sampling.py --grid quadratic --json outputs/table8_quadratic.json

clean:
	rm -rf $(VENV) docs/_build outputs
