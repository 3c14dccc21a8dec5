"""Root of the test tree. Unit tests (tests/unit) need no servers; tests/integration and
tests/e2e use the local stack through the fixtures of tests/integration/conftest.py."""
