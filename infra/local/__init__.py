"""The embedded default: the whole data path on one machine (see stacks/local.yaml)."""
