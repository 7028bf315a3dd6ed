# Everything set up from a fresh machine: the virtualenv is created on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The stamp names the install: a change to pyproject.toml or to the lock installs again.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements-test.lock | sha256sum | cut -c1-12)
DEMO_OUT ?= out/demo
# uv resolves the lock files (one binary from PyPI, fast, universal resolution with hashes); pip installs them.
UV_VERSION := 0.13.9
UV_DIR := build/uv-$(UV_VERSION)
UV := $(UV_DIR)/bin/uv
# `make lock` moves every pin to the newest version pyproject.toml allows; `make lock LOCK_FLAGS=` keeps the pins
# and only follows a change of pyproject.toml.
LOCK_FLAGS ?= --upgrade

.PHONY: venv lock dashboard infra demo test test-fast bench clean

venv: $(STAMP)

# Exactly the hashed lock's packages, then the project itself without dependencies.
$(STAMP): pyproject.toml requirements-test.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-test.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	rm -f $(VENV)/.installed-*
	touch $@

$(UV):
	$(PYTHON) -m venv $(UV_DIR)
	$(UV_DIR)/bin/python -m pip install --quiet uv==$(UV_VERSION)

# requirements-test.lock: [project.dependencies] and the `test` extra; requirements.lock (the image's):
# [project.dependencies] alone, constrained by the test lock so both pin the same versions. Both are resolved for
# every platform (--universal) from Python 3.11 up, with the hashes of every file, so `pip install
# --require-hashes` takes them on Linux x86_64 and aarch64 alike. The commands, run from the repository's root
# (uv also prints the lock it writes, hence the /dev/null below):
#   uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes --upgrade --extra test --output-file requirements-test.lock
#   uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes --upgrade --constraint requirements-test.lock --output-file requirements.lock
LOCK := $(UV) pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes $(LOCK_FLAGS)
lock: $(UV)
	$(LOCK) --extra test --output-file requirements-test.lock >/dev/null
	$(LOCK) --constraint requirements-test.lock --output-file requirements.lock >/dev/null

# The chart's Grafana dashboard is written by grafana-foundation-sdk: edit the generator, then run this and commit
# both; tests/deploy/test_dashboard.py checks the JSON is the generator's, byte for byte.
dashboard: venv
	$(BIN)/python deploy/helm/cz-allocation-agent/dashboards/generate.py

demo: venv
	CZ_AGENT_STORE_URL=sqlite:///$(abspath $(DEMO_OUT))/runs.db $(BIN)/cz-agent allocate \
		--bill demo/bill-2026-10.csv --rules demo/rules.yaml --usage demo/usage-2026-10.csv \
		--period 2026-10 --out $(DEMO_OUT)/report-2026-10.csv

# The real components the integration tests start: Prometheus (Debian package), etcd and kube-apiserver
# (built from the Go module proxy once, then cached under ~/.cache/cz-agent), the object stores (moto from
# PyPI in a virtualenv of its own, Azurite from npm, fake-gcs-server from the Go module proxy), and Trino (Maven
# Central's server tarball, its Hive connector alone extracted; it runs on a Java 24 or later found on the machine),
# and the test node: Debian's containerd, runc and CNI plugins, kubelet, kubectl, kube-controller-manager and
# kube-scheduler (Go module proxy, cached), the agent's image built from the Dockerfile by buildah on a debootstrap
# rootfs, and a Prometheus with Kubernetes service discovery (Go module proxy, cached).
infra:
	scripts/install-prometheus.sh
	scripts/install-postgres.sh
	scripts/install-node.sh
	scripts/kube-binaries.sh >/dev/null
	scripts/kube-binaries.sh node >/dev/null
	scripts/node-images.sh >/dev/null
	scripts/prometheus-kubernetes.sh >/dev/null
	scripts/helm-tools.sh >/dev/null
	scripts/object-stores.sh >/dev/null
	scripts/trino.sh >/dev/null
	scripts/install-chromium.sh

test: venv infra
	$(BIN)/python -m pytest

# Without `make infra`: no real server, agent process, chart or benchmark, no test over 5 s; the import contracts run.
test-fast: venv
	$(BIN)/python -m pytest -m "not integration and not deploy and not bench and not slow"

# Benchmarks (tens of minutes): writes bench/RESULTS.md, bench/RESULTS-parquet.md, bench/RESULTS-usage.md,
# bench/RESULTS-serve.md, bench/RESULTS-pushdown.md (its Trino comes from scripts/trino.sh) and
# bench/RESULTS-forecast.md.
# make test runs only a smoke of them.
bench: venv
	$(BIN)/python bench/bill_import.py
	$(BIN)/python bench/parquet_reader.py
	scripts/install-prometheus.sh
	$(BIN)/python bench/usage_fetch.py
	$(BIN)/python bench/serve_footprint.py
	$(BIN)/python bench/pushdown.py
	$(BIN)/python bench/forecast_backtest.py

clean:
	rm -rf $(VENV) out .pytest_cache .hypothesis
