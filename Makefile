# Two commands for a new user:  `make demo` (whole pipeline on the local default)  and  `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ZYDA2_DATA ?= $(abspath ../shared/data)
export ZYDA2_DATA

.PHONY: install demo lint test bench clean browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip check
	touch $(STAMP)

install: $(STAMP)

QUALITY_MODEL := runs/models/quality-fasttext.ftz

$(QUALITY_MODEL): $(STAMP)
	$(PY) zyda2.py train-quality $(ZYDA2_DATA)/quality/labels.jsonl --output $@ > /dev/null

# The demo's input is decided here, not in the recipe, so that `make -n demo` only prints (a recipe
# that calls $(MAKE) is run even under -n).
ifneq ($(wildcard $(ZYDA2_DATA)/sources),)
DEMO_CONFIG := configs/local.yaml
DEMO_NEEDS  := $(QUALITY_MODEL)
else
DEMO_CONFIG := configs/hub-sample.yaml
DEMO_NEEDS  :=
endif

demo: $(STAMP) $(DEMO_NEEDS)
	$(if $(DEMO_NEEDS),,@echo "no $(ZYDA2_DATA)/sources: streaming a small sample of the Hub datasets")
	$(PY) zyda2.py run $(DEMO_CONFIG) --overwrite

# Headless Chromium for the run report's browser test (tests/stats): Debian packages, installed when missing.
browser:
	@test -x /usr/bin/chromium && test -x /usr/bin/chromedriver || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y --no-install-recommends chromium chromium-driver; }

# Lint first (ruff, configured in pyproject.toml's [tool.ruff]): a finding fails the run before the tests start.
lint: $(STAMP)
	$(PY) -m ruff check .

test: $(STAMP) lint browser
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m benchmarks

clean:
	rm -rf runs .pytest_cache
