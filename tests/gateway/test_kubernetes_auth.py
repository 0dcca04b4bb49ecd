"""The gateway's in-cluster login: OpenBao Kubernetes auth, against the real OpenBao.

OpenBao checks a service-account token by asking the Kubernetes API (TokenReview). There is
no cluster here, so a TokenReview endpoint on loopback stands in for the API server; OpenBao,
its Kubernetes auth method, the role and the policies are real, configured as the platform
layer configures them (infra/k8s_platform/openbao.py).
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import hvac
import pytest

from gateway.kms import KeyProvider, KeyUnavailable
from gateway.settings import OpenBaoSettings
from infra.k8s_platform.gateway import NAME as GATEWAY_SA
from infra.k8s_platform.gateway import OPENBAO_ROLE
from tests import pki
from tests.support import Bao

NAMESPACE = "sovereign-gateway"


class TokenReviews(BaseHTTPRequestHandler):
    """Kubernetes' TokenReview API: authenticates the tokens signed "valid" only."""

    reviews: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        token = body["spec"]["token"]
        TokenReviews.reviews.append(token)
        status = {
            "authenticated": token.endswith("." + base64.urlsafe_b64encode(b"valid").rstrip(b"=").decode()),
            "audiences": ["openbao"],
            "user": {"username": f"system:serviceaccount:{NAMESPACE}:{GATEWAY_SA}", "uid": "uid-1"},
        }
        data = json.dumps({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": status})
        self.send_response(201)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data.encode())

    def log_message(self, *args: object) -> None:
        pass


def service_account_jwt(signature: str) -> str:
    def part(claims: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()

    claims = {
        "iss": "kubernetes/serviceaccount",
        "aud": ["openbao"],
        "sub": f"system:serviceaccount:{NAMESPACE}:{GATEWAY_SA}",
        "kubernetes.io": {"namespace": NAMESPACE, "serviceaccount": {"name": GATEWAY_SA, "uid": "uid-1"}},
    }
    sig = base64.urlsafe_b64encode(signature.encode()).rstrip(b"=").decode()
    return f"{part({'alg': 'RS256', 'kid': 'stand-in'})}.{part(claims)}.{sig}"


@pytest.fixture(scope="module")
def kubernetes_auth(bao: Bao) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), TokenReviews)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    root = hvac.Client(url=bao.address, token=bao.root)
    mount = "kubernetes-test"
    root.sys.enable_auth_method("kubernetes", path=mount)
    root.write(
        f"auth/{mount}/config",
        kubernetes_host=f"http://127.0.0.1:{server.server_port}",
        kubernetes_ca_cert=pki.ca("stand-in kubernetes CA").cert_pem().decode(),
        disable_local_ca_jwt=True,
        token_reviewer_jwt="reviewer",
    )
    root.write(
        f"auth/{mount}/role/{OPENBAO_ROLE}",
        bound_service_account_names=GATEWAY_SA,
        bound_service_account_namespaces=NAMESPACE,
        audience="openbao",
        token_policies="sovereign-gateway",
        token_ttl=3600,
    )
    yield mount
    server.shutdown()
    root.sys.disable_auth_method(mount)


def provider(bao: Bao, tmp_path: Path, mount: str, jwt: str | None) -> KeyProvider:
    token_file = tmp_path / "sa-token"
    if jwt is not None:
        token_file.write_text(jwt)
    settings = OpenBaoSettings(
        address=bao.address,
        kubernetes_role=OPENBAO_ROLE,
        kubernetes_mount=mount,
        kubernetes_token_file=token_file,
        wrapped_keys_dir=tmp_path / "keys",
    )
    return KeyProvider(settings, tmp_path / "keys")


def test_gateway_logs_in_with_its_service_account_and_gets_keys(
    bao: Bao, kubernetes_auth: str, tmp_path: Path
) -> None:
    kp = provider(bao, tmp_path, kubernetes_auth, service_account_jwt("valid"))
    key = asyncio.run(kp.ensure("clinic-a"))
    assert len(key) == 32
    # the login is cached until half its lifetime: more keys and checks make no new login
    # (OpenBao reviews the service-account token again when the token is renewed, not per call)
    reviews = len(TokenReviews.reviews)
    assert asyncio.run(kp.ensure("clinic-b")) != key
    asyncio.run(kp.check())
    assert len(TokenReviews.reviews) == reviews


def test_a_token_the_cluster_rejects_fails_closed_naming_the_role(
    bao: Bao, kubernetes_auth: str, tmp_path: Path
) -> None:
    kp = provider(bao, tmp_path, kubernetes_auth, service_account_jwt("forged"))
    with pytest.raises(KeyUnavailable, match=f"refused the Kubernetes login as role '{OPENBAO_ROLE}'"):
        asyncio.run(kp.ensure("clinic-a"))


def test_missing_service_account_token_fails_closed(bao: Bao, kubernetes_auth: str, tmp_path: Path) -> None:
    kp = provider(bao, tmp_path, kubernetes_auth, None)
    with pytest.raises(KeyUnavailable, match="no service-account token at"):
        asyncio.run(kp.ensure("clinic-a"))
