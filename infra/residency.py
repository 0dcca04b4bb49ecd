"""What counts as inside the EU boundary: locations, data centres, jurisdictions, endpoints.

One table, used by the stack config validation (``infra/config.py``), by the policy rules
that check the rendered plan (``infra/policy/rules.py``) and by the backend guard
(``infra/backend.py``), so the three can never disagree.

Why a list and not a lookup service: residency is a legal decision that a data-protection
officer signs off. A curated, reviewed list in the repository (changed by pull request, shown
in every plan) is auditable; a lookup at run time is neither reviewable nor offline.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

ART_44 = (
    "GDPR Art. 44 forbids transferring personal data to a third country without an adequacy "
    "decision or appropriate safeguards; patient data must stay inside the EU boundary"
)

# Hetzner Cloud locations. Only the EU ones may be used.
HCLOUD_EU_LOCATIONS: dict[str, str] = {
    "fsn1": "Falkenstein, DE",
    "nbg1": "Nuremberg, DE",
    "hel1": "Helsinki, FI",
}
HCLOUD_NON_EU_LOCATIONS: dict[str, str] = {
    "ash": "Ashburn, Virginia, US",
    "hil": "Hillsboro, Oregon, US",
    "sin": "Singapore, SG",
}
HCLOUD_EU_NETWORK_ZONES = ("eu-central",)
HCLOUD_NON_EU_NETWORK_ZONES = ("us-east", "us-west", "ap-southeast")

# Hetzner dedicated (Robot) data centres: FSN1-DC1 … FSN1-DC18, NBG1-DC3 …, HEL1-DC1 …
ROBOT_DATACENTER_RE = re.compile(r"^(?P<site>FSN1|NBG1|HEL1)-DC(?P<n>[1-9][0-9]?)$")
ROBOT_SITE_LOCATION = {"FSN1": "fsn1", "NBG1": "nbg1", "HEL1": "hel1"}

# EU member states and the EEA states covered by the GDPR (ISO 3166-1 alpha-2).
EU_EEA_COUNTRIES = frozenset(
    [
        "AT",
        "BE",
        "BG",
        "HR",
        "CY",
        "CZ",
        "DK",
        "EE",
        "FI",
        "FR",
        "DE",
        "GR",
        "HU",
        "IE",
        "IT",
        "LV",
        "LT",
        "LU",
        "MT",
        "NL",
        "PL",
        "PT",
        "RO",
        "SK",
        "SI",
        "ES",
        "SE",
        "IS",
        "LI",
        "NO",
    ]
)


@dataclass(frozen=True)
class EuEndpoint:
    """A host (and its subdomains, e.g. virtual-hosted buckets) run in an EU jurisdiction."""

    host: str
    jurisdiction: str
    operator: str


class ReviewedEndpoint(BaseModel):
    """A reviewed endpoint outside the built-in allowlist: the stack config's
    ``residency.extra_hosts`` and the gateway's ``audit.archive.reviewed_hosts`` (one model, one
    check: issue #20 finding 12)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(min_length=1, description="Host name (its subdomains are covered too).")
    jurisdiction: str = Field(description="EU/EEA country code where the host is operated.")
    operator: str = Field(min_length=2, description="The legal entity operating it.")

    @field_validator("jurisdiction")
    @classmethod
    def _eu(cls, value: str) -> str:
        if value.upper() not in EU_EEA_COUNTRIES:
            raise ValueError(f"not an EU/EEA country code; {ART_44}. Use e.g. DE, FI, FR, NL")
        return value.upper()

    @field_validator("host")
    @classmethod
    def _not_foreign(cls, value: str) -> str:
        operator = known_foreign_operator(value)
        if operator:
            raise ValueError(
                f"names a service operated from outside the EU ({operator}); a reviewed entry cannot "
                "make it EU. Mirror what you need from it to an EU host (docs/region-stacks.md) and list that"
            )
        return value

    def entry(self) -> EuEndpoint:
        return EuEndpoint(self.host.lower(), self.jurisdiction, self.operator)


# Reviewed EU object-storage endpoints (S3 API). Other hosts need an ``residency.extra_hosts``
# entry in the stack config, which states the operator and jurisdiction and is shown in the plan.
EU_ENDPOINTS: tuple[EuEndpoint, ...] = (
    EuEndpoint("fsn1.your-objectstorage.com", "DE", "Hetzner Online GmbH"),
    EuEndpoint("nbg1.your-objectstorage.com", "DE", "Hetzner Online GmbH"),
    EuEndpoint("hel1.your-objectstorage.com", "FI", "Hetzner Online GmbH"),
    EuEndpoint("s3.fr-par.scw.cloud", "FR", "Scaleway SAS"),
    EuEndpoint("s3.nl-ams.scw.cloud", "NL", "Scaleway SAS"),
    EuEndpoint("s3.pl-waw.scw.cloud", "PL", "Scaleway SAS"),
    EuEndpoint("s3.eu-central-1.ionoscloud.com", "DE", "IONOS SE"),
    EuEndpoint("s3.eu-central-2.ionoscloud.com", "DE", "IONOS SE"),
    EuEndpoint("s3.gra.io.cloud.ovh.net", "FR", "OVH SAS"),
    EuEndpoint("s3.de.io.cloud.ovh.net", "DE", "OVH SAS"),
)

# Services operated from outside the EU (or by non-EU companies whose EU regions are not what the
# host names): a reviewed entry cannot declare them EU. The image registries, code hosts and model hubs
# that an image pull, a chart or a weights download would otherwise reach, and the US AI APIs.
KNOWN_FOREIGN_HOSTS: dict[str, str] = {
    "docker.io": "Docker Inc., US",
    "docker.com": "Docker Inc., US",
    "ghcr.io": "GitHub Inc. (Microsoft), US",
    "github.com": "GitHub Inc. (Microsoft), US",
    "githubusercontent.com": "GitHub Inc. (Microsoft), US",
    "quay.io": "Red Hat Inc., US",
    "gcr.io": "Google LLC, US",
    "pkg.dev": "Google LLC, US",
    "registry.k8s.io": "the Linux Foundation (served from Google and Amazon clouds), US",
    "nvcr.io": "NVIDIA Corp., US",
    "nvidia.com": "NVIDIA Corp., US",
    "huggingface.co": "Hugging Face Inc., US",
    "mcr.microsoft.com": "Microsoft Corp., US",
    "azurecr.io": "Microsoft Corp., US",
    "public.ecr.aws": "Amazon Web Services Inc., US",
    "pulumi.com": "Pulumi Corp., US",
    "openai.com": "OpenAI, US",
    "anthropic.com": "Anthropic PBC, US",
}


def known_foreign_operator(host: str) -> str | None:
    """Who operates *host* when it is a known non-EU service (the host or a subdomain), else None."""
    host = host.lower().rstrip(".")
    for suffix, operator in KNOWN_FOREIGN_HOSTS.items():
        if host == suffix or host.endswith("." + suffix):
            return operator
    return None


# Pulumi Cloud: state and (by default) secrets would be held by Pulumi Corp. in the US.
PULUMI_SAAS_HOSTS = frozenset({"api.pulumi.com", "app.pulumi.com"})

# Names that only resolve inside the cluster or the private network.
CLUSTER_LOCAL_SUFFIXES = (".svc.cluster.local", ".svc")


def host_of(endpoint: str) -> str:
    """The host name of an endpoint given as a URL or as a bare ``host[:port]``."""
    text = endpoint.strip()
    if "://" not in text:
        text = "//" + text
    parts = urlsplit(text)
    if parts.scheme == "s3":
        # Pulumi's S3 backend: s3://bucket?endpoint=host&region=…; the bucket is not a host
        endpoint_param = parse_qs(parts.query).get("endpoint", [""])[0]
        return host_of(endpoint_param) if endpoint_param else ""
    return (parts.hostname or "").lower().rstrip(".")


def match_endpoint(host: str, extra: Iterable[EuEndpoint] = ()) -> EuEndpoint | None:
    """The allowlist entry that covers *host* (the host itself or a subdomain), if any."""
    host = host.lower().rstrip(".")
    for entry in (*EU_ENDPOINTS, *extra):
        if host == entry.host or host.endswith("." + entry.host):
            return entry
    return None


def is_private_address(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_private and not ip.is_loopback


def endpoint_problem(endpoint: str, extra: Iterable[EuEndpoint] = ()) -> str | None:
    """None when *endpoint* is inside the boundary, else why not (for a validation error)."""
    if endpoint.startswith("file://"):
        return None  # state on the operator's own disk: inside the boundary by construction
    host = host_of(endpoint)
    if not host:
        return (
            "has no host name; give a URL such as https://fsn1.your-objectstorage.com "
            "(for an s3:// backend, the endpoint= query parameter)"
        )
    if host in PULUMI_SAAS_HOSTS:
        return f"is Pulumi Cloud (US-operated SaaS); {ART_44}. Use an s3:// backend on EU object storage"
    if is_private_address(host) or host.endswith(CLUSTER_LOCAL_SUFFIXES):
        return None
    if match_endpoint(host, extra) is not None:
        return None
    allowed = ", ".join(e.host for e in EU_ENDPOINTS)
    return (
        f"its host is not on the EU allowlist; {ART_44}. Allowed: {allowed}, private addresses, "
        "cluster-local names, or a residency.extra_hosts entry naming its EU operator and jurisdiction"
    )
