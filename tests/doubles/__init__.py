"""Test doubles run as real processes by the tests and benchmarks: the scripted OpenAI-compatible
upstream (``python -m tests.doubles.scripted_upstream``) and the misbehaving one
(``python -m tests.doubles.fault_upstream``). Not part of the installed package: run them from the
repository root."""
