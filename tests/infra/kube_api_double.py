"""A local HTTPS double of the Kubernetes API server for one core/v1 Secret.

As strict as the real server on what infra/cluster_keys.py uses, after the Kubernetes API
reference (kubernetes.io/docs/reference/kubernetes-api/config-and-storage-resources/secret-v1/:
"read the specified Secret" GET, "replace the specified Secret" PUT) and the API concepts
(kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions and
"Conflicts": an update whose metadata.resourceVersion is not the stored one is refused with
409 Conflict; an update without one is unconditional):

- TLS only, with a certificate from a test CA (tests/pki.py); bearer-token authentication:
  a request without the token, or with another, gets 401 (kind Status, reason Unauthorized);
- a token without the right gets 403 (reason Forbidden) — ``forbidden`` lists the verbs refused;
- GET and PUT of ``/api/v1/namespaces/NS/secrets/NAME``; any other Secret is 404 (reason
  NotFound); other methods 405;
- PUT: the body's kind, metadata.name and metadata.namespace must match the URL (400 BadRequest),
  ``data`` values must be base64 (400), a stale resourceVersion is 409 (reason Conflict) and
  changes nothing; a success bumps resourceVersion and returns the stored object (200).

Answers are Status objects as the API server writes them (kind, apiVersion, status Failure,
reason, code); their message never holds a Secret's data.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests import pki


class KubeApiDouble:
    def __init__(self, folder: Path, namespace: str, name: str, data: dict[str, bytes], token: str) -> None:
        self.ca = pki.ca("kube-api-double-ca")
        self.ca_path = folder / "ca.crt"
        self.ca_path.write_bytes(self.ca.cert_pem())
        crt, key = pki.leaf(
            self.ca, "kube-apiserver", dns=("localhost",), ips=("127.0.0.1",), server=True
        ).write(folder, "apiserver")
        self.token = token
        self.forbidden: set[str] = set()  # verbs ("get", "update") the token may not use
        self.requests: list[tuple[str, str]] = []  # (method, path) of authenticated requests
        self.before_put: Callable[[], None] | None = None  # runs when a PUT arrives (a concurrent writer)
        self.version = 100
        self.secret: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace, "resourceVersion": str(self.version),
                         "uid": "0b0e6c52-0000-4000-8000-000000000001"},
            "type": "Opaque",
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
        }  # fmt: skip
        self.path = f"/api/v1/namespaces/{namespace}/secrets/{name}"
        double = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                double._handle(self, "GET")

            def do_PUT(self) -> None:
                double._handle(self, "PUT")

            def do_PATCH(self) -> None:
                double._handle(self, "PATCH")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(crt, key)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> KubeApiDouble:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def data(self, key: str) -> bytes:
        return base64.b64decode(self.secret["data"][key])

    def set_data(self, key: str, value: bytes) -> None:
        """A write by someone else (another operator, `pulumi up`): a new resourceVersion."""
        self.secret["data"][key] = base64.b64encode(value).decode()
        self.version += 1
        self.secret["metadata"]["resourceVersion"] = str(self.version)

    # -- the API ------------------------------------------------------------------------------
    @staticmethod
    def _send(h: BaseHTTPRequestHandler, code: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(raw)))
        h.end_headers()
        h.wfile.write(raw)

    def _status(self, h: BaseHTTPRequestHandler, code: int, reason: str, message: str) -> None:
        self._send(h, code, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                             "message": message, "reason": reason, "code": code})  # fmt: skip

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        if h.headers.get("Authorization") != f"Bearer {self.token}":
            self._status(h, 401, "Unauthorized", "Unauthorized")
            return
        self.requests.append((method, h.path))
        if method not in ("GET", "PUT"):
            self._status(h, 405, "MethodNotAllowed", "the double implements GET and PUT only")
            return
        verb = "get" if method == "GET" else "update"
        if verb in self.forbidden:
            self._status(h, 403, "Forbidden", f'secrets is forbidden: cannot {verb} resource "secrets"')
            return
        if h.path.split("?")[0] != self.path:
            self._status(h, 404, "NotFound", "secrets not found")
            return
        if method == "GET":
            self._send(h, 200, self.secret)
            return
        if self.before_put is not None:
            hook, self.before_put = self.before_put, None
            hook()
        try:
            new = json.loads(body)
            meta = new["metadata"]
        except (ValueError, KeyError, TypeError):
            self._status(h, 400, "BadRequest", "the body is not a Secret")
            return
        stored = self.secret["metadata"]
        if (
            new.get("kind") != "Secret"
            or meta.get("name") != stored["name"]
            or meta.get("namespace") != stored["namespace"]
        ):
            self._status(h, 400, "BadRequest", "the name or namespace of the object does not match the URL")
            return
        for value in (new.get("data") or {}).values():
            try:
                base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError, TypeError):
                self._status(h, 400, "BadRequest", "illegal base64 data")
                return
        sent = meta.get("resourceVersion")
        if sent and sent != stored["resourceVersion"]:
            self._status(h, 409, "Conflict", "the object has been modified; please apply your changes "
                         "to the latest version and try again")  # fmt: skip
            return
        self.version += 1
        updated = copy.deepcopy(new)
        updated["metadata"] = {**stored, "resourceVersion": str(self.version)}
        self.secret = updated
        self._send(h, 200, self.secret)

    def kubeconfig(self, folder: Path, token: str | None = None, **user: Any) -> Path:
        """A kubeconfig for this server: its CA, and *token* (default: the right one) or *user*."""
        creds = user or {"token": token if token is not None else self.token}
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "region",
            "clusters": [{"name": "region", "cluster": {
                "server": self.url,
                "certificate-authority-data": base64.b64encode(self.ca.cert_pem()).decode()}}],
            "users": [{"name": "operator", "user": creds}],
            "contexts": [{"name": "region", "context": {"cluster": "region", "user": "operator"}}],
        }  # fmt: skip
        path = folder / "kubeconfig.yaml"
        path.write_text(json.dumps(config))  # JSON is YAML
        return path
