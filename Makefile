# The two commands of the README: `make demo` (set up, then run the main job) and
# `make test` (set up, then run the whole test suite). Everything lives in .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: venv demo demo-memory test lint typecheck layers images unit vm bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# The main job: the local lab (root). It stays up afterwards; `kipsec lab down` removes it.
demo: venv
	$(BIN)/kipsec lab up
	$(BIN)/kipsec lab apply -f examples/operator/psk-mesh.yaml
	$(BIN)/kipsec lab status --wait 90
	$(BIN)/kipsec lab traffic
	$(BIN)/kipsec lab status
	@echo "The lab stays up: .venv/bin/kipsec lab status | traffic | apply -f examples/operator/... | down"

# Two IKEv2 peers in one process, no root needed.
demo-memory: venv
	$(BIN)/kipsec-sidecar demo

lint: venv
	$(BIN)/ruff check sidecar operator lab tests bench deploy
	$(BIN)/ruff format --check sidecar operator lab tests bench deploy

typecheck: venv
	$(BIN)/mypy

layers: venv
	$(BIN)/lint-imports

# The sidecar and operator images, built with podman (root): a cached mmdebstrap base, a
# cached wheelhouse, no network inside the build (images/build.sh); prints their sizes.
images: venv
	./images/build.sh

# Everything but the VM tier: the fast loop while developing.
unit: venv
	$(BIN)/pytest -m "not vm" --durations=25

# Kernel datapath (XFRM) tests: each module boots a VM under software emulation.
vm: venv
	$(BIN)/pytest -m vm --durations=15

test: lint typecheck layers unit vm

# In-process benchmarks; the namespace ones (root) are listed in bench/README.md.
bench: venv
	$(BIN)/python bench/esp_throughput.py
	$(BIN)/python bench/ike_handshakes.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
