# Two entry points for people (README): `make demo` and `make test`. Both build
# the same virtual environment from pyproject.toml; `make test` also installs
# Debian's chromium for the browser tier (root, as on CI machines).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install demo up test test-fast lint system-deps clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[train,dev]'
	touch $(STAMP)

install: $(STAMP)

# Debian packages the test tiers drive for real: chromium (browser tier) and
# docker-compose 1.29 (validates docker-compose.yml offline; no engine needed).
SYSTEM_DEPS := chromium docker-compose
system-deps:
	@missing=""; for p in $(SYSTEM_DEPS); do command -v $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing:$$missing (sudo apt-get install$$missing); their tests will skip"; fi; fi

demo: install
	$(BIN)/shardsense demo

up: install
	$(BIN)/shardsense up

test: install system-deps lint
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -q -m "unit" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy shardsense producers stream_processors planner_service dash_app infra benchmarks
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .shardsense build *.egg-info
