"""Entry point of the Pulumi program (Pulumi.yaml: ``main: infra/``).

The region-stack components (Hetzner network, firewalls, GPU pool, RKE2, platform) are not
built yet: they are the next items of the roadmap. Until then this program refuses to run
rather than let ``pulumi up`` report an empty, "successful" deploy.
"""

raise SystemExit(
    "sovereign-llm: the region stack program is not built yet, so `pulumi up` would create "
    "nothing. Use `make up` for the local sovereign stack."
)
