"""Locust load tests of the gateway against healthcare SLA profiles (docs/load-tests.md)."""
