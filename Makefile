# Every target bootstraps .venv from the pinned requirements; nothing needs to be installed by hand but Python 3.11.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
INVENTORY ?= inventories/production
# The conformance suite's clients: the official Python SDKs in their own venv (their eth-* pins differ from the
# runtime's), the official TypeScript clients from the lockfile.
CVENV := .venv-conformance
CSTAMP := $(CVENV)/.installed
NODE_DIR := tests/conformance/node
NODE_STAMP := $(NODE_DIR)/node_modules/.installed

.PHONY: venv demo test conformance lint bench bench-sim bench-signing bench-week soak soak-week provision lab-up lab-down clean

# Two distributions: worker/ is the product (what runs on the VPS), worker/lab/ the simulator and the lab tools.
$(STAMP): requirements.txt requirements-dev.txt worker/pyproject.toml worker/lab/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e worker -e worker/lab
	touch $(STAMP)

$(CSTAMP): tests/conformance/requirements.txt worker/lab/pyproject.toml
	test -x $(CVENV)/bin/python || $(PYTHON) -m venv $(CVENV)
	$(CVENV)/bin/python -m pip install -q --upgrade pip
	$(CVENV)/bin/python -m pip install -q -r tests/conformance/requirements.txt
	$(CVENV)/bin/python -m pip install -q --no-deps -e worker/lab      # the suites' shared wait (polylab.waiting)
	touch $(CSTAMP)

$(NODE_STAMP): $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	cd $(NODE_DIR) && npm ci --no-audit --no-fund --ignore-scripts
	touch $(NODE_STAMP)

venv: $(STAMP) $(CSTAMP) $(NODE_STAMP)

# The simulator plus the bot in dry run, on loopback, no credentials.
demo: $(STAMP)
	$(PY) -m polylab.demo

# polysim runs asyncio and the copier runs gevent: separate pytest processes keep them from patching each other.
# The compressed chaos soak (about 6 minutes) is part of the suite.
# The Ansible lab host spends its time waiting on its container, so it runs beside the suites that judge no timing
# (the simulator's, conformance, the copier's unit tests, lint); the end-to-end suite and the soak, which judge
# delays, run alone after it.
test: $(STAMP) $(CSTAMP) $(NODE_STAMP)
	@mkdir -p var
	@$(PY) -m pytest -q tests/ansible > var/test-ansible.log 2>&1 & lab=$$!; \
	 $(PY) -m pytest -q tests/polysim && $(MAKE) --no-print-directory conformance \
	   && $(PY) -m pytest -q tests/copier && $(MAKE) --no-print-directory lint; rc=$$?; \
	 wait $$lab; lab_rc=$$?; echo "--- tests/ansible (beside the suites above):"; cat var/test-ansible.log; \
	 exit $$(( rc || lab_rc ))
	$(PY) -m pytest -q tests/e2e
	$(MAKE) --no-print-directory soak

# polysim driven by the official clients (polysim runs from .venv, the clients from .venv-conformance and Node).
conformance: $(STAMP) $(CSTAMP) $(NODE_STAMP)
	POLYSIM_PYTHON=$(CURDIR)/$(PY) $(CVENV)/bin/python -m pytest -q tests/conformance

lint: $(STAMP)
	$(VENV)/bin/ruff check --config worker/pyproject.toml worker tests
	cd worker && ../$(VENV)/bin/mypy copier
	cd worker/lab && ../../$(VENV)/bin/mypy polysim polylab
	ANSIBLE_CONFIG=$(CURDIR)/ansible/ansible.cfg $(VENV)/bin/ansible-playbook -i inventories/production ansible/site.yml --syntax-check
	ANSIBLE_CONFIG=$(CURDIR)/ansible/ansible.cfg PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/ansible-lint -c ansible/.ansible-lint --offline --profile production ansible/site.yml roles inventories

bench: $(STAMP)
	$(PY) -m polylab.bench $(BENCH_ARGS)

# A week's store written through the copier's own Store API (WEEK_ARGS: --scale 10, --no-retention, --days N), its
# growth per day, and `copier report --since 7d` timed on it (fails over 2 s); docs/perf/README.md has the figures.
bench-week: $(STAMP)
	$(PY) -m polylab.weekstore $(WEEK_ARGS)

# The simulator's own throughput (order POSTs/s, RTDS frames/s) on this machine; reports what it measured.
bench-sim: $(STAMP)
	$(PY) -m polysim.bench

# One V2 order signed by the copier's path and by the unified official SDK (docs/perf/signing.md).
bench-signing: $(STAMP) $(CSTAMP)
	$(PY) -m polylab.bench_signing --path current
	$(CVENV)/bin/python -P worker/lab/polylab/bench_signing.py --path unified --polysim-python $(CURDIR)/$(PY)

# SOAK_ARGS: more options of the run (--compressed-seconds 60, --workdir DIR, --seed N).
soak: $(STAMP)
	$(PY) -m polylab.soak $(if $(DURATION),--duration $(DURATION),) $(SOAK_ARGS)

# A week of market time at 225x under supervisord with chaos (about 50 minutes): SOAK_WEEK_ARGS="--ten-x", "--days 1".
soak-week: $(STAMP)
	$(PY) -m polylab.soakweek $(SOAK_WEEK_ARGS)

provision: $(STAMP)
	ansible/bin/provision $(INVENTORY) $(PROVISION_ARGS)

lab-up: $(STAMP)
	ansible/lab/lab-up

lab-down:
	ansible/lab/lab-down

clean:
	rm -rf $(VENV) $(CVENV) $(NODE_DIR)/node_modules var
