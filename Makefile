# Two entry points for a fresh Debian machine, run as root:
#   make demo   - sets everything up, then runs the lab demo
#   make test   - sets everything up, then runs the whole test suite (unit .. interop)
VENV ?= .venv
PY := $(VENV)/bin/python
APT_PACKAGES := iproute2 nftables conntrack ucarp tshark keepalived tcpdump iputils-ping arping isc-dhcp-client python3-venv chromium
STAMP_APT := $(VENV)/.apt-done
STAMP_PIP := $(VENV)/.pip-done

.PHONY: setup demo test lint bench clean

setup: $(STAMP_APT) $(STAMP_PIP)

$(STAMP_APT):
	@mkdir -p $(VENV)
	@if [ "$$(id -u)" != 0 ]; then echo "make: run as root (apt-get and network namespaces need it)"; exit 2; fi
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null
	@touch $@

$(STAMP_PIP): pyproject.toml
	@[ -x $(PY) ] || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

demo: setup
	$(VENV)/bin/carpsim demo

test: setup
	$(VENV)/bin/ruff check carpsim tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -p no:cacheprovider --timeout=600

bench: setup
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
