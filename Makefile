# Two commands do everything on a fresh machine:  make run  |  make test
VENV ?= .venv
HOST ?= 127.0.0.1
PORT ?= 8000
DOMAIN ?= messageservice.local
PYTHON ?= python3
PROVIDER_PORT ?= 9100

.PHONY: run serve test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

# Set up, migrate, create the portal (idempotent) and serve on the embedded SQLite default, with the demo
# SMS provider (examples/demo_provider) beside it: installed, a first message sent and delivered, and the
# console shows how to send more (its login and password at the end). Running it again reuses the same app.
# Ctrl-C stops both.
run: $(VENV)/.installed
	PYTHONPATH=examples $(VENV)/bin/python -m demo_provider.launch --host $(HOST) --port $(PORT) \
		--provider-port $(PROVIDER_PORT) --domain $(DOMAIN)

# The server alone, for a provider of your own.
serve: $(VENV)/.installed
	$(VENV)/bin/messageservice init --domain $(DOMAIN)
	$(VENV)/bin/messageservice serve --host $(HOST) --port $(PORT)

# Set up and run the whole suite: lint, then every test on SQLite and on a PostgreSQL it starts itself, in
# TEST_WORKERS parallel processes (pytest-xdist; each worker runs a PostgreSQL of its own; the tests of one
# xdist_group, a module with costly shared processes, run in one worker), then the few tests
# that assert a latency (`-m alone`) by themselves. Bytecode caches are written even where the environment
# says not to: every worker would otherwise compile (and assertion-rewrite) the whole code base again.
TEST_WORKERS ?= 3
test: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	env -u PYTHONDONTWRITEBYTECODE $(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadgroup -m "not alone"
	env -u PYTHONDONTWRITEBYTECODE $(VENV)/bin/pytest -m alone

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: $(VENV)/.installed
	$(VENV)/bin/python bench/rest_bench.py

clean:
	rm -rf $(VENV) var .pytest_cache
