# Two commands do everything on a fresh machine:
#   make demo   - install, generate the demo plant data, fit, score, evaluate, plot
#   make test   - install everything the tests need (Kafka jars, Prometheus, C++ test deps), run every test
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
BIN := $(VENV)/bin
DEMO_DIR ?= demo-out
TOOLS_DIR ?= .tools

.PHONY: demo test install venv tools ctest fuzz cross pytest lint clean wheel wheel-aarch64
FUZZ_SECONDS ?= 30

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

venv: $(PY)

install: $(PY)
	$(PIP) install --quiet -e '.[dev]'

demo: install
	$(BIN)/memae-ts demo-data $(DEMO_DIR)/history.csv --days 7 --no-faults --seed 1
	$(BIN)/memae-ts demo-data $(DEMO_DIR)/live.csv --days 3 --seed 2
	$(BIN)/memae-ts fit $(DEMO_DIR)/history.csv -o $(DEMO_DIR)/model --epochs 40 --seed 7
	$(BIN)/memae-ts info $(DEMO_DIR)/model
	$(BIN)/memae-ts score $(DEMO_DIR)/model $(DEMO_DIR)/live.csv -o $(DEMO_DIR)/scores.csv
	$(BIN)/memae-ts evaluate $(DEMO_DIR)/model $(DEMO_DIR)/live.csv --label-column anomaly
	$(BIN)/memae-ts plot $(DEMO_DIR)/model $(DEMO_DIR)/live.csv --label-column anomaly -o $(DEMO_DIR)/plot.png
	$(BIN)/memae-ts demo-data $(DEMO_DIR)/plant.csv --days 3 --assets 3 --seed 2
	$(BIN)/memae-ts plot $(DEMO_DIR)/model $(DEMO_DIR)/plant.csv --asset-column asset --label-column anomaly \
		-o $(DEMO_DIR)/plant.png
	$(BIN)/memae-ts plot $(DEMO_DIR)/model $(DEMO_DIR)/plant.csv --asset-column asset --label-column anomaly \
		-o $(DEMO_DIR)/plant.html
	@echo "Demo done: scores in $(DEMO_DIR)/scores.csv, pictures in $(DEMO_DIR)/plot.png, plant.png, plant.html"

# A manylinux wheel in dist/ that installs without a compiler (pip install dist/memae_ts-*.whl,
# plus '[edge]' on a gateway); scripts/build-wheel.sh says how.
wheel: install
	PY=$(PY) bash scripts/build-wheel.sh dist

# The same for aarch64 gateways, cross-built here and checked under qemu against this machine's
# runtime (Debian's arm64 CPython unpacked into .tools; scripts/build-wheel-aarch64.sh says how).
wheel-aarch64: install
	PY=$(PY) MEMAE_TS_TOOLS=$(abspath $(TOOLS_DIR)) bash scripts/build-wheel-aarch64.sh dist

# Test-only tools (Kafka broker jars from Maven Central, Prometheus and Mosquitto from Debian, GoogleTest,
# Chromium for the interactive plot test).
tools:
	bash scripts/install-test-tools.sh $(TOOLS_DIR)

# C++ tests: release and ASan/UBSan builds, aarch64/armhf cross builds under qemu, and each
# libFuzzer target for FUZZ_SECONDS (scripts/run-ctest.sh says what each part does).
ctest: install
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash scripts/run-ctest.sh

# One part alone: `make fuzz FUZZ_SECONDS=600` for a longer libFuzzer run, `make cross`.
fuzz: install
	CROSS=0 FUZZ_SECONDS=$(FUZZ_SECONDS) bash scripts/run-ctest.sh

cross: install
	FUZZ_SECONDS=0 bash scripts/run-ctest.sh

pytest: install
	MEMAE_TS_TOOLS=$(abspath $(TOOLS_DIR)) $(BIN)/pytest -q

lint: install
	$(BIN)/ruff check memae_ts connectors edge tests bench

test: install tools ctest lint pytest

clean:
	rm -rf build $(DEMO_DIR) .pytest_cache
