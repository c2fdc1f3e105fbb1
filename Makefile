# Every target bootstraps .venv from the pinned requirements; nothing needs to be installed by hand but Python 3.11.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
INVENTORY ?= inventories/production

.PHONY: venv demo test lint bench bench-sim soak provision lab-up lab-down clean

$(STAMP): requirements.txt requirements-dev.txt worker/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e worker
	touch $(STAMP)

venv: $(STAMP)

# The simulator plus the bot in dry run, on loopback, no credentials.
demo: $(STAMP)
	$(PY) -m copier.demo

# polysim runs asyncio and the copier runs gevent: separate pytest processes keep them from patching each other.
# The compressed chaos soak (issue 5's acceptance run, about 6 minutes) is part of the suite.
test: $(STAMP)
	$(PY) -m pytest -q tests/polysim
	$(PY) -m pytest -q tests/copier tests/e2e
	$(MAKE) --no-print-directory lint
	$(PY) -m pytest -q tests/ansible
	$(MAKE) --no-print-directory soak

lint: $(STAMP)
	ANSIBLE_CONFIG=$(CURDIR)/ansible/ansible.cfg $(VENV)/bin/ansible-playbook -i inventories/production ansible/site.yml --syntax-check
	ANSIBLE_CONFIG=$(CURDIR)/ansible/ansible.cfg PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/ansible-lint -c ansible/.ansible-lint --offline --profile production ansible/site.yml roles inventories

bench: $(STAMP)
	$(PY) -m copier.bench $(BENCH_ARGS)

# The simulator's own throughput (order POSTs/s, RTDS frames/s) on this machine; reports what it measured.
bench-sim: $(STAMP)
	$(PY) -m polysim.bench

soak: $(STAMP)
	$(PY) -m copier.soak $(if $(DURATION),--duration $(DURATION),)

provision: $(STAMP)
	ansible/bin/provision $(INVENTORY) $(PROVISION_ARGS)

lab-up: $(STAMP)
	ansible/lab/lab-up

lab-down:
	ansible/lab/lab-down

clean:
	rm -rf $(VENV) var
