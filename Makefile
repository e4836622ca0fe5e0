# The two commands a user needs: `make run` (the demo stack) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install run test lint unit bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

run: install
	$(BIN)/python -m authz_service.devstack.run

lint: install
	$(BIN)/ruff check authz_service tests benchmarks scripts
	$(BIN)/ruff format --check authz_service tests benchmarks scripts
	$(BIN)/mypy

# The Redis Cluster tests start their own redis-server processes on loopback.
test: lint
	command -v redis-server >/dev/null || (apt-get update -qq && apt-get install -y -qq redis-server)
	$(BIN)/pytest

# h2load (Debian's nghttp2-client) drives gRPC over HTTP/2 from the other core.
bench: install
	command -v h2load >/dev/null || (apt-get update -qq && apt-get install -y -qq nghttp2-client)
	$(BIN)/python -m benchmarks.check_rps

clean:
	rm -rf $(VENV) .run .pytest_cache .mypy_cache .ruff_cache
