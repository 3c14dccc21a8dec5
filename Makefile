# The two commands of the README:   make demo   |   make test
# Everything else here is what they are made of.
SHELL := /bin/bash
PY := .venv/bin/python

.PHONY: demo test setup stack-up stack-down lint unit packaging integration chaos crds bench-cpu \
	images images-test

demo: setup images stack-up
	$(PY) dev/demo.py

test: setup lint unit packaging images integration chaos
# The chaos suite with every phase a quarter as long (docs/reliability.md, "In CI").
test: CHAOS_SCALE = 0.25

setup:
	dev/setup

stack-up:
	dev/stack up

stack-down:
	dev/stack down

# The build tools (tools/imagegen_tools) run from the checkout: they are not installed.
TOOLS := PYTHONPATH=tools $(PY) -m imagegen_tools

lint:
	.venv/bin/ruff check api client gateway operator worker tools tests dev dev/stack bench
	.venv/bin/mypy
	PYTHONPATH=tools .venv/bin/lint-imports
	$(TOOLS).crdgen --check
	$(TOOLS).docgen --check

unit:
	$(PY) -m pytest tests/unit -q -p no:cacheprovider

# The base install in a fresh venv: the client and CLI work, torch & co. are absent.
packaging:
	$(PY) -m pytest tests/packaging -q -p no:cacheprovider

# The stack fixture starts (or reuses) the local stack; a component that cannot start fails the
# tests with its log tail. In CI the stack is stopped afterwards.
integration:
	@dev/stack up || echo "dev/stack up failed: integration tests will fail and name the component"
	@dev/stack push-images || echo "dev/stack push-images failed: the real-pod tests will say why"
	$(PY) -m pytest tests/integration tests/e2e -q -p no:cacheprovider --durations=15; rc=$$?; \
	  if [[ -n "$${CI:-}" ]]; then dev/stack down || true; fi; exit $$rc

# Faults under load (docs/reliability.md): stops and freezes Kafka, Redis and MinIO, restoring
# them before it ends. On a shared machine: flock /tmp/imagegen-stack.lock make chaos.
# CHAOS_SCALE shortens every phase (1 = the full run whose figures docs/reliability.md shows).
CHAOS_SCALE ?= 1
chaos:
	IMAGEGEN_CHAOS_SCALE=$(CHAOS_SCALE) $(PY) -m pytest tests/chaos -m chaos -q -p no:cacheprovider \
	  --durations=20; rc=$$?; if [[ -n "$${CI:-}" ]]; then dev/stack down || true; fi; exit $$rc

# The container images, built for real with buildah on a locally made Debian base (dev/images.sh;
# cached: unchanged inputs do not rebuild). `make demo` and `make test` run them on the dev
# stack's real kubelet nodes (docs/dev-stack.md); images-test also runs them with podman as uid
# 10001, read-only. A cold build downloads ~3 GB of wheels and takes minutes (docs/benchmarks.md).
images:
	dev/images.sh build

images-test: images
	$(PY) -m pytest tests/images -q -p no:cacheprovider

# After a change of api/imagegen_api/specs.py: the CRDs (crds/, the install base) and the reference.
crds:
	$(TOOLS).crdgen
	$(TOOLS).docgen
