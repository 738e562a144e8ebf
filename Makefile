# One command per job: `make report` rebuilds the study, `make test` checks it. Both set everything up.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= full
# The verified copy beside the checkout, when there is one; otherwise the notebooks download (Kaggle, then GitHub).
SHARED_DATA := $(wildcard $(CURDIR)/../shared/data/bccd)
BLOODLIB_DATA ?= $(SHARED_DATA)
export BLOODLIB_DATA
ARGS ?=
# RESUME=1 continues the last incomplete run, RESUME=<run-id> that one (run --resume); the run's profile unless
# PROFILE is given
RESUME ?=
RESUMING := $(filter-out 0 no false,$(RESUME))
RESUME_ARGS := $(if $(RESUMING),--resume $(filter-out 1 yes true,$(RESUMING)))
PROFILE_ARGS := $(if $(and $(RESUMING),$(filter file,$(origin PROFILE))),,--profile $(PROFILE))

.PHONY: venv test-venv report publish smoke test layers unit notebooks sync notebooks-sync benchmark lab clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name bloodcells --display-name "Python (bloodcells)"
	touch $@

# pytest, nbmake and selenium on top of the study's packages: only the test targets need them.
test-venv: $(VENV)/.test-installed

$(VENV)/.test-installed: requirements-test.txt $(VENV)/.installed
	$(PY) -m pip install --quiet -r requirements-test.txt
	touch $@

## make report [PROFILE=smoke] [ARGS="-p image_size 96 -p epochs 40"] [RESUME=1]: run notebooks 01-09 into
## report/runs/<run-id>/; a complete run is promoted into report/ (index.html, pages/, results.md)
report: venv
	$(PY) -m bloodlib run $(PROFILE_ARGS) $(ARGS) $(RESUME_ARGS)

## make publish: the full study, then its report staged for commit (index, pages, the run's results; no checkpoints)
publish: report
	$(PY) -m bloodlib publish

smoke:
	$(MAKE) report PROFILE=smoke

## make test: the import layers, unit tests, then every notebook under nbmake with the smoke profile
test: layers unit notebooks

# each stage of src/bloodlib imports only from the stages below it (pyproject.toml, [tool.importlinter])
layers: test-venv
	$(VENV)/bin/lint-imports

# two workers of one thread each (pytest-xdist; a test file stays on one worker, so its module fixtures are made
# once): the tests wait on kernels and subprocesses as much as they compute
UNIT_WORKERS ?= 2
unit: test-venv
	OMP_NUM_THREADS=1 $(PY) -m pytest -n $(UNIT_WORKERS) --dist loadfile tests

# the library's progress bars go to outputs/nbmake/progress.log, not into the executed notebooks
notebooks: test-venv
	rm -f outputs/nbmake/progress.log
	BLOODLIB_PROFILE=smoke BLOODLIB_OUTPUT=$(CURDIR)/outputs/nbmake BLOODLIB_CACHE=$(CURDIR)/outputs/nbmake/cache \
	BLOODLIB_PROGRESS_LOG=$(CURDIR)/outputs/nbmake/progress.log $(PY) -m pytest --nbmake --nbmake-timeout=900 notebooks/

benchmark: venv
	$(PY) benchmarks/throughput.py

lab: venv
	$(VENV)/bin/jupyter lab notebooks/

## make sync: after editing a notebook's .py (or its .ipynb outside JupyterLab), bring its pair up to date
sync: venv
	$(VENV)/bin/jupytext --sync notebooks/[0-9][0-9]_*.ipynb

## make notebooks-sync: after editing notebooks/templates/training.py (or a model's title, description or citation in
## bloodlib.models.registry), rewrite notebooks 04-06 (.py and .ipynb); never edit those three by hand
notebooks-sync: venv
	$(PY) -m bloodlib.pipeline.notebooks

clean:
	rm -rf outputs .pytest_cache
