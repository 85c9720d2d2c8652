# The two commands a newcomer needs: `make run` (the simulated hall) and `make test`.
# Both build .venv/ from setup.py; `make test` also installs the system packages the suite
# uses. `make bench` prints the performance table (not part of `make test`).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# System packages: Mosquitto (the tests' and simulator's private broker), GNU Unifont (the board),
# Chromium and a CJK font for the config page's browser tests (Chinese renders as boxes without one).
APT_PACKAGES := mosquitto mosquitto-clients fonts-unifont chromium fonts-wqy-zenhei
# On a Raspberry Pi the venv sees apt's python3-lgpio (PEP 668 forbids a system-wide pip).
VENV_FLAGS := $(shell grep -qs "Raspberry Pi" /proc/device-tree/model && echo --system-site-packages)

.PHONY: run test bench venv system-packages translations clean

venv: $(VENV)/.installed

$(VENV)/.installed: setup.py
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed (found " + sys.version.split()[0] + ")")'
	$(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

system-packages:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else \
	  echo "missing system packages; run:  sudo apt-get install$$missing"; exit 1; \
	fi

run: venv
	@command -v mosquitto >/dev/null || test -x /usr/sbin/mosquitto || \
	  echo "note: mosquitto is not installed, so events are recorded and queued only (sudo apt-get install mosquitto)"
	$(VENV)/bin/hall-appliance simulate --config config/simulator.toml

test: venv system-packages
	$(PY) -m pytest

# The performance table: the core (press latency, backlog drain, recording rate, memory,
# start to READY), the pin edge to the outbox, and the LED board's frame cost; each figure
# beside its baseline measured in the same run. Not part of `make test`.
# All three always run; make fails at the end if any figure missed its target.
bench: venv system-packages
	@status=0; \
	$(PY) bench/bench.py || status=$$?; \
	$(PY) bench/edge_bench.py || status=$$?; \
	$(PY) bench/board_bench.py || status=$$?; \
	exit $$status

# After changing a message on the config page: extract, merge into the catalog, compile.
# Translate what is new in the .po, run this again, and commit the .po and the .mo.
WEB := appliance/web
translations: venv
	$(VENV)/bin/pybabel extract -F $(WEB)/babel.cfg -k _l -k lazy_gettext --sort-output -o $(WEB)/messages.pot $(WEB)
	$(VENV)/bin/pybabel update -i $(WEB)/messages.pot -d $(WEB)/translations --no-fuzzy-matching --ignore-obsolete
	$(VENV)/bin/pybabel compile -d $(WEB)/translations --statistics
	rm $(WEB)/messages.pot

clean:
	rm -rf $(VENV) .sim .pytest_cache
