# The two commands of the README:   make demo   |   make test
# Everything else here is what they are made of.
SHELL := /bin/bash
PY := .venv/bin/python

.PHONY: demo test setup stack-up stack-down lint unit integration crds bench-cpu

demo: setup stack-up
	$(PY) dev/demo.py

test: setup lint unit integration

setup:
	dev/setup

stack-up:
	dev/stack up

stack-down:
	dev/stack down

lint:
	.venv/bin/ruff check api operator worker tests dev dev/stack bench
	.venv/bin/mypy api operator
	.venv/bin/lint-imports
	$(PY) -m imagegen_operator.crdgen --check
	$(PY) -m imagegen_operator.docgen --check

unit:
	$(PY) -m pytest tests/unit -q -p no:cacheprovider

# The stack fixture starts (or reuses) the local stack; a component that cannot start fails the
# tests with its log tail. In CI the stack is stopped afterwards.
integration:
	@dev/stack up || echo "dev/stack up failed: integration tests will fail and name the component"
	$(PY) -m pytest tests/integration tests/e2e -q -p no:cacheprovider --durations=15; rc=$$?; \
	  if [[ -n "$${CI:-}" ]]; then dev/stack down || true; fi; exit $$rc

crds:
	$(PY) -m imagegen_operator.crdgen
