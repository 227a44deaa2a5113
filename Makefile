# The two commands of the README are `make demo` and `make test`. Everything else is a step of them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
PYTEST_ARGS ?=

.PHONY: all venv java-runtime test pytest pytest-mitogen sanity lint changelog-lint molecule demo bench acceptance clean

all: test

# Create or reuse .venv; reinstall only when a requirements file or pyproject.toml changed.
venv: $(VENV)/.installed
$(VENV)/.installed: requirements.txt requirements-node.txt requirements-mitogen.txt requirements-eda.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade 'pip>=24'
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

test: venv pytest pytest-mitogen sanity lint changelog-lint molecule

# ansible-rulebook (the event-driven mode's test) runs its rule engine on Java 17 or later. A fresh
# Debian or Ubuntu machine (CI runs as root) gets it from apt; elsewhere install one by hand.
java-runtime:
	@command -v java >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && apt-get update -qq \
	  && { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless \
	       || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jre-headless; }; } \
	  || echo "no Java runtime and none could be installed: the ansible-rulebook test will fail (install Java 17 or later)"

pytest: venv java-runtime
	$(BIN)/python -m pytest -n 2 -m "not fleet and not acceptance" $(PYTEST_ARGS)

# The rollout's end-to-end tests again under Mitogen's mitogen_linear strategy (docs/scale.md), a
# selection to hold CI's budget (about 2 to 3 minutes on 2 cores): check mode and API faults, a failed
# node's rescue (delegate_to and run_once throughout). All of them: GPUOPS_ANSIBLE_STRATEGY=mitogen_linear
# pytest tests/integration/rollout.
MITOGEN_TESTS := tests/integration/rollout/test_rollout.py::test_check_mode_rerun_api_faults_and_strategy_switch \
	tests/integration/rollout/test_rollout.py::test_pdb_that_never_allows_eviction_leaves_the_node_failed_and_tainted
pytest-mitogen: venv
	GPUOPS_ANSIBLE_STRATEGY=mitogen_linear $(BIN)/python -m pytest -n 2 $(MITOGEN_TESTS) $(PYTEST_ARGS)

# The 20-node x 8-GPU rolling reconfigure and driver upgrade on the simulated cluster, and the longest
# end-to-end scenarios (the driver upgrade's failure at each step among them); kept out of `make test`
# to hold CI to its time budget.
acceptance: venv java-runtime
	$(BIN)/python -m pytest -n 2 -m "fleet or acceptance" tests/integration $(PYTEST_ARGS)

sanity: venv
	$(BIN)/python tests/sanity/run_sanity.py

lint: venv
	$(BIN)/ansible-lint --offline

changelog-lint: venv
	$(BIN)/antsibull-changelog lint

molecule: venv
	tests/molecule/run_all.sh

demo: venv
	$(BIN)/python -m gpuops_sim demo

bench: venv
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .tmp tests/output
