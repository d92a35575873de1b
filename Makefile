# jobber: `make demo` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
# The venv every recipe runs in. .venv holds the locked install; `make test-oldest` and
# `make test-latest` run the same recipes in .venv-oldest and .venv-latest (VENV=...).
VENV ?= .venv
PY = $(VENV)/bin/python
# Every version the dev, test, demo and binder installs use, made by uv from pyproject.toml.
LOCK := requirements/lock.txt
# uv, pinned in the lock, from the locked venv: it makes the lock and the other two venvs.
UV := .venv/bin/uv
DEMO_DIR ?= $(HOME)/.jobber-demo
PORT ?= 8888

# nbval, with kernels that turn a warning from jobber's modules into an error: IPYTHONDIR is
# a fresh profile whose startup folder holds tests/ipython_startup/.
NBVAL = ipd=$$(mktemp -d) && mkdir -p $$ipd/profile_default/startup && \
	cp tests/ipython_startup/*.py $$ipd/profile_default/startup/ && \
	IPYTHONDIR=$$ipd $(PY) -m pytest -q -p no:cacheprovider --nbval

# JupyterLab 4.6 sends widget messages over kernel subshells, which ipykernel 7 drops after
# a notebook is closed and reopened (a Stop button then does nothing): keep them on the shell.
define LAB_SETTINGS
mkdir -p $(1)/share/jupyter/lab/settings
echo '{"@jupyterlab/apputils-extension:kernels-settings": {"commsOverSubshells": "disabled"}}' \
  > $(1)/share/jupyter/lab/settings/overrides.json
endef

.PHONY: demo test lint labextension test-systemd-user test-unit test-wheel test-notebooks test-e2e test-demo test-unprivileged test-cgroup-v2 bench clean venv test-slurm \
	lock test-import test-oldest test-latest

venv: $(VENV)/.installed labextension

# The locked install: the lock changes, the venv follows (pip moves every package to its pin).
.venv/.installed: pyproject.toml $(LOCK)
	test -x .venv/bin/python || $(PYTHON) -m venv .venv
	.venv/bin/python -m pip install -q -c $(LOCK) -e '.[dev,notebook,server]'
	$(call LAB_SETTINGS,.venv)
	touch $@

# The Jobs panel's JupyterLab extension (labextension/): jlpm (JupyterLab's own yarn, from the
# venv) installs labextension/yarn.lock as it is, then @jupyter/builder (what `jupyter
# labextension build` runs in JupyterLab 4.6) bundles it into jobber_lab/labextension/, which
# the venv's share/jupyter/labextensions/jobber-lab links to (as `jupyter labextension
# develop` does). Skipped when the bundle is newer than all it is built from. A wheel built
# from a clean clone builds it the same way (setup.py).
LABEXT := jobber_lab/labextension/package.json
LABEXT_SOURCES := $(addprefix labextension/,package.json yarn.lock .yarnrc.yml tsconfig.json install.json) \
	$(wildcard labextension/src/*.ts labextension/style/* labextension/schema/*.json) \
	jobber_magics/_jobview.js jobber_magics/_jobview.css
labextension: $(LABEXT) .venv/share/jupyter/labextensions/jobber-lab

$(LABEXT): $(LABEXT_SOURCES) | .venv/.installed
	cd labextension && PATH=$(CURDIR)/.venv/bin:$$PATH jlpm install --immutable && PATH=$(CURDIR)/.venv/bin:$$PATH jlpm build
	touch $@

# An editable install copies no data files: the server extension's enable file too.
.venv/share/jupyter/labextensions/jobber-lab: | .venv/.installed
	rm -rf $@ && mkdir -p $(@D) && ln -s $(CURDIR)/jobber_lab/labextension $@
	install -D -m 644 jupyter-config/jupyter_server_config.d/jobber_lab.json .venv/etc/jupyter/jupyter_server_config.d/jobber_lab.json

# make lock: the newest versions pyproject.toml allows, for every Python it supports.
lock: .venv/.installed
	$(UV) pip compile -q pyproject.toml --extra dev --extra notebook --extra server \
	  --universal --python-version 3.10 --upgrade --custom-compile-command 'make lock' -o $(LOCK)
	$(UV) pip compile -q requirements/build.in \
	  --universal --python-version 3.10 --upgrade --custom-compile-command 'make lock' -o requirements/build.txt

# The lowest version of each dependency pyproject.toml allows (uv's lowest-direct resolution;
# the dev extra's test tools at their locked versions), or the newest of each (no lock): made
# anew by each `make test-oldest` / `make test-latest`.
.venv-oldest/.installed .venv-latest/.installed: pyproject.toml .venv/.installed
	rm -rf $(@D)
	$(PYTHON) -m venv $(@D)
	$(if $(findstring oldest,$@),.venv/bin/python .ci/dev_pins.py pyproject.toml $(LOCK) > $(@D)/dev-pins.txt)
	$(UV) pip install -q --python $(@D)/bin/python $(if $(findstring oldest,$@),--resolution lowest-direct -c $(@D)/dev-pins.txt) \
	  -e '.[dev,notebook,server]'
	$(UV) pip freeze -q --python $(@D)/bin/python --exclude-editable > $(@D)/installed.txt
	@grep -iE '^(cryptography|ipython|ipywidgets|ipykernel|anywidget|aiohttp)==' $(@D)/installed.txt | \
	  tr '\n' ' ' | sed 's|^|$(@D): |'; echo
	$(call LAB_SETTINGS,$(@D))
	touch $@

## make demo: a demo certificate pool, then JupyterLab on localhost at the quickstart notebook
demo: venv
	test -f $(DEMO_DIR)/client.pem || $(VENV)/bin/jobber certs init-demo $(DEMO_DIR)
	$(VENV)/bin/jupyter trust notebooks/*.ipynb
	JOBBER_ROOT=$(DEMO_DIR) JOBBER_CERT=$(DEMO_DIR)/client.pem \
	  $(VENV)/bin/jupyter lab --no-browser --ip=127.0.0.1 --port=$(PORT) \
	  --ServerApp.root_dir=$(CURDIR) $(if $(filter 0,$(shell id -u)),--allow-root) \
	  --LabApp.default_url=/lab/tree/notebooks/01-quickstart.ipynb

## make test: every test, notebooks included; the cgroup v2 suite runs in a VM
test: lint test-import test-unit test-wheel test-notebooks test-e2e test-lab test-demo test-unprivileged test-cgroup-v2 test-systemd-user test-slurm

# The code's own rules (pyproject.toml [tool.ruff]): pyflakes, pycodestyle, bugbear, imports.
lint: venv
	$(VENV)/bin/ruff check jobber jobber_magics jobber_lab tests benchmarks setup.py .ci

# A user sees nothing on stderr at `import jobber` or from the CLI: no warning, whatever the
# versions installed (the locked ones here, the oldest and newest in test-oldest/test-latest).
test-import: venv
	@err=$$($(PY) -W error -c 'import jobber, jobber_magics' 2>&1 >/dev/null) && \
	  err=$$err$$($(VENV)/bin/jobber --help 2>&1 >/dev/null) && [ -z "$$err" ] || \
	  { echo "test-import: import jobber, jobber_magics or jobber --help failed or wrote to stderr in $(VENV):"; \
	    echo "$$err"; exit 1; }
	@echo "test-import: import jobber, jobber_magics and jobber --help: nothing on stderr ($(VENV))"

# The lower bounds in pyproject.toml hold: the unit tests and notebooks with the lowest
# version of each dependency. test-latest: with the newest, to see drift before a user does.
test-oldest test-latest:
	rm -f .venv-$(@:test-%=%)/.installed
	$(MAKE) -k test-import test-unit test-notebooks VENV=.venv-$(@:test-%=%)

test-unit: venv
	$(PY) -m pytest -q tests

# The package as pip installs it (about a minute): the wheel, in a fresh venv outside the
# checkout, holds every subpackage and launcher.c; `jobber run` and the job tests pass there.
test-wheel: venv
	.ci/wheel.sh

# The notebooks run against a fresh demo pool (04-slurm runs in test-slurm, with a cluster).
test-notebooks: venv
	set -e; d=$$(mktemp -d); trap 'rm -rf "$$d"' EXIT; \
	$(VENV)/bin/jobber certs init-demo $$d/pki >/dev/null; \
	nbs="notebooks/01-quickstart.ipynb notebooks/02-resource-limits.ipynb notebooks/03-remote.ipynb notebooks/05-lifecycle.ipynb notebooks/06-sweeps.ipynb notebooks/07-python-jobs.ipynb"; \
	JOBBER_ROOT=$$d/pki JOBBER_CERT=$$d/pki/client.pem JOBBER_JOBS_DIR=$$d/jobs \
	  $(NBVAL) $$nbs

# The notebook experience in a real browser: JupyterLab + headless Chromium (Playwright, e2e/);
# screenshots in artifacts/e2e/. Installs Debian's chromium and e2e/node_modules if missing.
test-e2e: venv
	.ci/e2e.sh

# The Jobs panel in a real browser: the wheel built and installed with [notebook] in a fresh
# venv, two JupyterLabs from it (tenants A and B, one jobs dir), Playwright (e2e/lab/).
.PHONY: test-lab
test-lab: venv
	.ci/lab_e2e.sh

# `make demo` as a new user meets it: fresh clone, venv and HOME (about 40 s).
test-demo:
	e2e/make_demo_check.sh

# The "none" backend for real: the same jobs as an unprivileged user (no writable cgroup).
test-unprivileged: venv
	.ci/unprivileged.sh

# The cgroup v2 backend for real: a pure cgroup v2 kernel under qemu (about a minute).
# Python runs ~20x slower under emulation: skip the heavy pytest plugins, and run the job
# tests with the compiled launcher only (the Python one is covered on this host).
test-cgroup-v2: venv
	PYTEST_ADDOPTS="-p no:nbval -p no:schemathesis -p no:hypothesispytest -p no:cacheprovider" \
	  .ci/cgroup_v2_vm.sh --timeout 2400 -- $(PY) -m pytest -q -rs tests/test_isolation.py tests/test_jobs.py tests/test_local_backend.py tests/test_gpus.py \
	  tests/test_throttling.py tests/test_queues.py tests/test_sandbox.py tests/contract/test_queues.py tests/test_usage.py \
	  tests/test_function_jobs.py::TestConfined tests/contract/test_functions.py \
	  -k "not python and not killed_submitter and not 20_jobs" -m "not slurm and not remote"

# An ordinary user on a systemd host, for real: systemd as PID 1 in the cgroup v2 VM, a
# lingering user manager, the job tests as that user (uid 2000) in the cgroup jobber gets
# delegated by it. Twice: with the drop-in that delegates io too (every limit enforced),
# and with Debian's default delegation (cpu memory pids: io reported as not enforced).
# Then two such users at once, each out of the other's reach (the test acts as both, as root).
test-systemd-user: venv
	JOBBER_TEST_DELEGATED=all PYTEST_ADDOPTS="-p no:nbval -p no:schemathesis -p no:hypothesispytest -p no:cacheprovider" \
	  .ci/systemd_user_vm.sh --timeout 1200 -- $(PY) -m pytest -q -rs tests/test_systemd.py tests/test_jobs.py \
	  tests/test_isolation.py -k "not python"
	JOBBER_TEST_DELEGATED=default PYTEST_ADDOPTS="-p no:nbval -p no:schemathesis -p no:hypothesispytest -p no:cacheprovider" \
	  .ci/systemd_user_vm.sh --default-delegation --timeout 600 -- $(PY) -m pytest -q -rs tests/test_systemd.py
	PYTEST_ADDOPTS="-p no:nbval -p no:schemathesis -p no:hypothesispytest -p no:cacheprovider" \
	  .ci/systemd_user_vm.sh --default-delegation --extra-user data2 --timeout 900 -- $(PY) -m pytest -q -rs \
	  tests/test_systemd_users.py

# The Slurm backend for real: a one-node cluster on this machine (about a second once
# installed), its tests, the contract suite's Slurm runs (which fail rather than fall back
# to the fake Slurm) and notebook, then the cluster is stopped whatever the outcome.
test-slurm: venv
	.ci/slurm_up.sh
	$(PY) -m pytest -q -rs tests/test_slurm.py && $(PY) -m pytest -q -m slurm tests/test_magics.py && \
	  JOBBER_TEST_SLURM=cluster $(PY) -m pytest -q -rs -m slurm tests/contract && \
	  $(NBVAL) notebooks/04-slurm.ipynb; \
	  status=$$?; .ci/slurm_down.sh; exit $$status

# Every table compares with a baseline measured in the same run; Slurm's needs its cluster.
bench: venv
	status=0; for b in benchmarks/bench_core.py benchmarks/bench_certificates.py \
	    benchmarks/bench_magics.py benchmarks/bench_server.py benchmarks/bench_functions.py benchmarks/bench_lab.py; do \
	  echo "== $$b"; $(PY) $$b || status=1; done; \
	echo "== benchmarks/bench_core.py start, in the cgroup v2 VM (emulated: compare the ratios)"; \
	.ci/cgroup_v2_vm.sh -- $(PY) benchmarks/bench_core.py start 2>/dev/null | grep '^|' || status=1; \
	echo "== benchmarks/bench_slurm.py"; .ci/slurm_up.sh >/dev/null && { $(PY) benchmarks/bench_slurm.py || status=1; }; \
	.ci/slurm_down.sh >/dev/null; exit $$status

clean:
	rm -rf .venv .venv-oldest .venv-latest build *.egg-info jobber_lab/labextension labextension/node_modules labextension/lib labextension/tsconfig.tsbuildinfo
