"""Post-deploy verification of a region stack's hosts: a testinfra suite, run by
``sovereign verify --stack NAME`` against the real hosts (and in CI against the test hosts)."""
