# The README's two commands are `make run` and `make test`; each does all the set-up it needs.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
PIP_INSTALL := $(BIN)/pip install -c constraints.txt
STAMP := $(VENV)/.installed
# faulthandler stays on past pytest's own (which ends with the session): a crash while the interpreter shuts down
# prints every thread's stack instead of a bare "Segmentation fault".
PYTEST := PYTHONFAULTHANDLER=1 $(BIN)/pytest

.PHONY: install run test lint test-integration test-slow browser test-browser clean

# Order matters: the CPU torch build first, then DeepSpeed built against it without build isolation
# (DS_BUILD_OPS=0: ops are JIT-compiled on first use), then this package with its extras.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) torch
	DS_BUILD_OPS=0 $(PIP_INSTALL) --no-build-isolation deepspeed
	$(PIP_INSTALL) -e '.[train,dev]'
	touch $(STAMP)

install: $(STAMP)

# The main job: the default pretraining run (orchestrator/conf/config.yaml) on local Ray, 2 CPU DeepSpeed ranks,
# SQLite MLflow in ./cpr_runs; it ends with a STOP by the marginal-return rule.
run: $(STAMP)
	$(BIN)/cpr submit

# Style, then the architecture's import contracts (pyproject.toml [tool.importlinter]).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

# The README's test command: lint, unit and CLI tests (pytest's default selection; no engine is started), one
# pytest worker per core (the blueprint tail fits and privacy accounting are CPU-bound).
test: lint
	$(PYTEST) -n auto

# Real jobs: Ray, DeepSpeed ranks, MLflow in a temp dir, a fresh venv.
test-integration: $(STAMP)
	$(PYTEST) -m "integration and not slow and not browser"

test-slow: $(STAMP)
	$(PYTEST) -m slow

# Debian's Chromium and its WebDriver (no browser download at run time); needs root or sudo.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver; }

# The MLflow UI and a run's report opened in headless Chromium; screenshots land in artifacts/screenshots/.
test-browser: $(STAMP) browser
	$(PYTEST) -m browser

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
