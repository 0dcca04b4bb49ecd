"""Benchmarks of the gateway, the PHI filter, the load tests and the host roles (README.md).

Run from the repository root as modules, ``.venv/bin/python -m benchmarks.<name>``: they import the
installed project and the test helpers (``tests.support``, ``tests.doubles``, ``tests.phi_corpus``),
which are not installed."""
