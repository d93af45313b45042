# Entry points. On a fresh Debian machine, as root:
#   make demo   - sets everything up (apt + venv), then runs the lab demo
#   make test   - sets everything up, then lint, format check, mypy and every test tier
#   make bench  - sets everything up, then benchmarks/run_all.py (lab benchmarks only as root)
# Without root and without apt (a venv and PyPI are enough):
#   make check  - ruff, ruff format --check, mypy and the pure tiers (unit, property, sim)
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
APT_PACKAGES := iproute2 nftables conntrack ucarp tshark keepalived tcpdump iputils-ping arping isc-dhcp-client isc-dhcp-server python3-venv chromium
STAMP_APT := $(VENV)/.apt-done
STAMP_PIP := $(VENV)/.pip-done
# Everything the tests, the lab report and the benchmarks use; a real host installs only `.`.
EXTRAS := dev,lab
PURE_TIERS := tests/unit tests/property tests/sim
LINT_PATHS := carpsim tests benchmarks

.PHONY: setup venv demo test check lint bench clean

setup: $(STAMP_APT) $(STAMP_PIP)

venv: $(STAMP_PIP)

$(STAMP_APT):
	@mkdir -p $(VENV)
	@if [ "$$(id -u)" != 0 ]; then echo "make: run as root (apt-get and network namespaces need it; 'make check' does not)"; exit 2; fi
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null
	@touch $@

$(STAMP_PIP): pyproject.toml
	@[ -x $(PY) ] || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	@touch $@

demo: setup
	$(BIN)/carpsim demo

lint: $(STAMP_PIP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy

# The pure tiers never need root; the marker filter keeps out any test that does (netns), and
# the few slow pure properties (make test runs them) so this stays well under a minute.
check: lint
	$(BIN)/pytest -p no:cacheprovider -q --timeout=120 -m 'not netns and not interop and not slow' $(PURE_TIERS)

test: setup lint
	$(BIN)/pytest -p no:cacheprovider --timeout=600

bench: setup
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
