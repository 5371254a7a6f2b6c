# Two commands do everything on a fresh machine:  make run  |  make test
VENV ?= .venv
HOST ?= 127.0.0.1
PORT ?= 8000
DOMAIN ?= messageservice.local
PYTHON ?= python3

.PHONY: run test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

# Set up, migrate, create the portal (idempotent) and serve on the embedded SQLite default.
run: $(VENV)/.installed
	$(VENV)/bin/messageservice init --domain $(DOMAIN)
	$(VENV)/bin/messageservice serve --host $(HOST) --port $(PORT)

# Set up and run the whole suite: lint, then every test on SQLite and on a PostgreSQL it starts itself.
test: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: $(VENV)/.installed
	$(VENV)/bin/python bench/rest_bench.py

clean:
	rm -rf $(VENV) var .pytest_cache
