# Everything set up from a fresh machine: the virtualenv is created on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
DEMO_OUT ?= out/demo

.PHONY: venv infra demo test bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

demo: venv
	CZ_AGENT_STORE_URL=sqlite:///$(abspath $(DEMO_OUT))/runs.db $(BIN)/cz-agent allocate \
		--bill demo/bill-2026-10.csv --rules demo/rules.yaml --usage demo/usage-2026-10.csv \
		--period 2026-10 --out $(DEMO_OUT)/report-2026-10.csv

# The real components the integration tests start: Prometheus (Debian package), etcd and kube-apiserver
# (built from the Go module proxy once, then cached under ~/.cache/cz-agent).
infra:
	scripts/install-prometheus.sh
	scripts/install-postgres.sh
	scripts/kube-binaries.sh >/dev/null
	scripts/helm-tools.sh >/dev/null
	scripts/install-chromium.sh

test: venv infra
	$(BIN)/python -m pytest

# Benchmarks (tens of minutes): writes bench/RESULTS.md, bench/RESULTS-usage.md and bench/RESULTS-serve.md.
# make test runs only a smoke of them.
bench: venv
	$(BIN)/python bench/bill_import.py
	scripts/install-prometheus.sh
	$(BIN)/python bench/usage_fetch.py
	$(BIN)/python bench/serve_footprint.py

clean:
	rm -rf $(VENV) out .pytest_cache .hypothesis
