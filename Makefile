# saliencylab course. Two commands a newcomer needs (see README): `make lab` and `make test`.
# Every target sets itself up: the venv is created and filled on first use.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.saliencylab-installed
PYTEST_WORKERS ?= 2

.PHONY: setup lab test test-fast release slides grade feedback bench clean-grading

setup: $(STAMP)

# Re-run the install when the dependency list changes. constraints.txt pins the versions the
# course is tested with (the package itself states only lower bounds).
$(STAMP): lib/pyproject.toml constraints.txt tools/setup_kernel.py tools/sandbox.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet "pip>=23.2"
	$(PY) -m pip install --quiet -c constraints.txt -e "lib[course,test]"
	$(PY) tools/setup_kernel.py
	-$(PY) tools/sandbox.py install
	@touch $(STAMP)

# LAB_ROOT / LAB_ARGS let the browser test start this same server on a copy of the course.
LAB_ROOT ?= $(CURDIR)
LAB_ARGS ?=
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)
lab: setup
	$(VENV)/bin/jupyter lab --ServerApp.root_dir="$(LAB_ROOT)" --LabApp.default_url=/lab/tree/notebooks $(ALLOW_ROOT) $(LAB_ARGS)

# One thread per process: the xdist workers and the notebook kernels they start already fill
# both cores, and oversubscribed torch threads made runs many times slower here.
TEST_ENV := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
test: setup
	$(TEST_ENV) $(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadgroup

# Library tests only (seconds, no notebook execution).
test-fast: setup
	$(TEST_ENV) $(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadgroup -m "not notebooks" --ignore=solutions

release: setup
	$(PY) tools/nbtools.py stamp
	$(PY) tools/release.py

# One reveal.js deck per lesson, slides/NN_topic.slides.html, from the solutions' stored outputs
# (nothing is run: re-run an edited lesson with tools/nbtools.py execute first). The decks load
# reveal.js and MathJax from slides/ itself, so they open from the disk without a network.
slides: setup
	$(PY) tools/slides.py build

# JOBS=N submissions at a time (default: one per core); SCHEDULER=tcp://host:8786 sends them to a
# Dask cluster; FORCE=1 regrades submissions that have not changed since the last run.
grade: setup
	JOBS="$(JOBS)" SCHEDULER="$(SCHEDULER)" FORCE="$(FORCE)" $(PY) tools/grade.py

# After grading written answers by hand in formgrader: every student's feedback with those scores.
feedback: setup
	$(PY) tools/grade.py --feedback

bench: setup
	$(PY) bench/bench_attribution.py

# Removes nbgrader's working state (never in git); submissions are kept.
clean-grading:
	rm -rf autograded feedback gradebook.db grades.csv .grading
