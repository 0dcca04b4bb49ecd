"""The platform layer on Kubernetes: one ComponentResource per concern (see layer.py)."""
