"""``sovereign gateway keys revoke KEY_ID --kubeconfig FILE``: revoke a client API key where the
gateway pods read it, the Secret ``gateway-client-keys`` (namespace ``sovereign-gateway``,
infra/k8s_platform/secrets.py), not a local copy of the key store.

The Secret is read and written through the Kubernetes API (core/v1 Secret GET and PUT): the key
store JSON in its ``keys.json`` is changed with the same rule as the file store
(:func:`gateway.clientkeys.mark_revoked`) and written back with the ``resourceVersion`` it was
read at, so a change made in between (another operator, a ``pulumi up``) makes the API server
answer 409 Conflict: nothing is overwritten and the operator runs the command again.

httpx (already a dependency) speaks to the API server; the kubeconfig is read here because the
official ``kubernetes`` client (37.x) requires python-dateutil >= 3, which botocore (boto3,
the object-storage client) refuses. Supported credentials are what the region's kubeconfig
holds (RKE2 writes a client certificate; ``pulumi stack output kubeconfig``) and bearer tokens
(``token``, ``tokenFile``); exec and auth-provider plug-ins are refused with what to use instead.

No value leaves this module in a message: errors name the kubeconfig field, the HTTP status
and the fix, never a token, a certificate or the key store's content.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from gateway.clientkeys import KeyStoreError, mark_revoked, parse_store
from gateway.errors import SovereignError

NAMESPACE = "sovereign-gateway"  # infra/k8s_platform/common.py GATEWAY_NS (not imported: it loads pulumi)
SECRET = "gateway-client-keys"  # noqa: S105 (a name) — infra/k8s_platform/secrets.py GATEWAY_CLIENT_KEYS
DATA_KEY = "keys.json"  # the file the gateway mounts (keys_file: /etc/sovereign/keys/keys.json)
STACK_SECRET = "sovereign-llm:gateway_client_keys"  # noqa: S105 (a config key)
TIMEOUT_S = 30.0


class ClusterKeysError(SovereignError, RuntimeError):
    """A refused or failed cluster revocation (the message says what to do)."""


class Conflict(ClusterKeysError):
    """The Secret changed between this command's read and its write (409)."""


@dataclass(frozen=True)
class Target:
    server: str
    context: str
    verify: ssl.SSLContext
    token: str | None  # a bearer token; None with a client certificate


@dataclass(frozen=True)
class Revoked:
    key_id: str
    changed: bool  # False: it was already revoked in the Secret (nothing written)
    read_version: str
    written_version: str | None
    store: str  # the key store as now in the Secret (for the stack secret); never printed


def _named(items: Any, name: str, what: str, source: str) -> dict[str, Any]:
    for item in items or []:
        if isinstance(item, dict) and item.get("name") == name and isinstance(item.get(what), dict):
            return dict(item[what])
    raise ClusterKeysError(f"kubeconfig {source}: no {what} named {name!r} in its `{what}s` list")


def _pem(entry: dict[str, Any], field: str, base: Path, source: str) -> bytes | None:
    """The PEM of *field* (``<field>-data``, base64, or ``<field>``, a path relative to the
    kubeconfig); None when neither is set."""
    if entry.get(f"{field}-data"):
        try:
            return base64.b64decode(str(entry[f"{field}-data"]), validate=True)
        except (binascii.Error, ValueError):
            raise ClusterKeysError(
                f"kubeconfig {source}: {field}-data is not base64 (value not shown)"
            ) from None
    if entry.get(field):
        path = Path(os.path.expanduser(str(entry[field])))
        path = path if path.is_absolute() else base / path
        try:
            return path.read_bytes()
        except OSError as exc:
            raise ClusterKeysError(
                f"kubeconfig {source}: {field} {path} cannot be read ({exc.strerror}); fix the path"
            ) from None
    return None


def load_target(kubeconfig: Path, context: str | None = None) -> Target:
    """Where and how to reach the API server: *context* (default: the current-context) of the
    kubeconfig file."""
    source = str(kubeconfig)
    try:
        config = yaml.safe_load(kubeconfig.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ClusterKeysError(f"--kubeconfig {source} cannot be read ({exc.strerror})") from None
    except yaml.YAMLError:
        raise ClusterKeysError(f"--kubeconfig {source} is not YAML (content not shown)") from None
    if not isinstance(config, dict):
        raise ClusterKeysError(f"--kubeconfig {source} is not a kubeconfig (a YAML mapping with `contexts`)")
    name = context or config.get("current-context")
    if not name:
        raise ClusterKeysError(f"kubeconfig {source} has no current-context; pass --context NAME")
    ctx = _named(config.get("contexts"), str(name), "context", source)
    cluster = _named(config.get("clusters"), str(ctx.get("cluster")), "cluster", source)
    user = _named(config.get("users"), str(ctx.get("user")), "user", source)
    server = str(cluster.get("server") or "")
    if not server.startswith("https://"):
        raise ClusterKeysError(
            f"kubeconfig {source}: cluster of context {name!r}: server is not an https:// URL; the API "
            "server is only spoken to over TLS"
        )
    if cluster.get("insecure-skip-tls-verify"):
        raise ClusterKeysError(
            f"kubeconfig {source}: cluster of context {name!r} sets insecure-skip-tls-verify; set "
            "certificate-authority-data to the cluster's CA instead (the revocation must reach the real "
            "API server)"
        )
    base = kubeconfig.parent
    verify = ssl.create_default_context()
    ca = _pem(cluster, "certificate-authority", base, source)
    if ca is not None:
        try:
            verify = ssl.create_default_context(cadata=ca.decode("ascii", "replace"))
        except ssl.SSLError:
            raise ClusterKeysError(
                f"kubeconfig {source}: certificate-authority of context {name!r} is not a PEM certificate"
            ) from None
    for plugin in ("exec", "auth-provider"):
        if user.get(plugin):
            raise ClusterKeysError(
                f"kubeconfig {source}: user of context {name!r} uses `{plugin}`, which this command does not "
                "run; use the region's kubeconfig (`pulumi stack output kubeconfig --show-secrets`: a client "
                "certificate) or a user with `token` / `tokenFile`"
            )
    token: str | None = None
    if user.get("token"):
        token = str(user["token"]).strip()
    elif user.get("tokenFile"):
        path = Path(os.path.expanduser(str(user["tokenFile"])))
        path = path if path.is_absolute() else base / path
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ClusterKeysError(
                f"kubeconfig {source}: tokenFile {path} cannot be read ({exc.strerror})"
            ) from None
    cert = _pem(user, "client-certificate", base, source)
    key = _pem(user, "client-key", base, source)
    if (cert is None) != (key is None):
        raise ClusterKeysError(
            f"kubeconfig {source}: user of context {name!r} has a client certificate without its key "
            "(or a key without its certificate); set both client-certificate(-data) and client-key(-data)"
        )
    if cert is not None and key is not None:
        _load_client_cert(verify, cert, key, source)
    elif token is None:
        raise ClusterKeysError(
            f"kubeconfig {source}: user of context {name!r} has no credentials this command can use "
            "(client-certificate-data and client-key-data, token or tokenFile)"
        )
    return Target(server.rstrip("/"), str(name), verify, token)


def _load_client_cert(ctx: ssl.SSLContext, cert: bytes, key: bytes, source: str) -> None:
    """ssl loads a certificate chain from files only: written to a private temporary folder
    and removed at once (the key is in this process's memory anyway)."""
    with tempfile.TemporaryDirectory(prefix="sovereign-kube-") as folder:
        cert_path, key_path = Path(folder) / "client.crt", Path(folder) / "client.key"
        for path, data in ((cert_path, cert), (key_path, key)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        try:
            ctx.load_cert_chain(cert_path, key_path)
        except ssl.SSLError:
            raise ClusterKeysError(
                f"kubeconfig {source}: the client certificate and key do not load (not PEM, or not a pair)"
            ) from None


def _url(target: Target) -> str:
    return f"{target.server}/api/v1/namespaces/{NAMESPACE}/secrets/{SECRET}"


def _refused(response: httpx.Response, verb: str, target: Target) -> ClusterKeysError:
    """The error for a non-2xx answer; names the status and the Status reason, never its text."""
    code = response.status_code
    where = f"Secret {NAMESPACE}/{SECRET}"
    if code == 401:
        return ClusterKeysError(
            f"the API server refused the credentials of context {target.context!r} (401 Unauthorized): "
            "the token or client certificate is wrong or expired; fetch a current kubeconfig"
        )
    if code == 403:
        return ClusterKeysError(
            f"the user of context {target.context!r} may not {verb} the {where} (403 Forbidden): it needs "
            f"`get` and `update` on secrets in {NAMESPACE} (RBAC)"
        )
    if code == 404:
        return ClusterKeysError(
            f"the {where} does not exist in this cluster (404): is --context the region's cluster, and is "
            "the platform's phase 2 deployed (it creates the Secret)?"
        )
    if code == 409:
        return Conflict(
            f"the {where} changed since this command read it (409 Conflict: another operator or a `pulumi "
            "up`); nothing was written: run the command again"
        )
    try:
        reason = str(response.json().get("reason") or "")
    except ValueError:
        reason = ""
    return ClusterKeysError(
        f"the API server answered {code} {reason or response.reason_phrase} to {verb} the {where}"
    )


def revoke(target: Target, key_id: str) -> Revoked:
    """Mark *key_id* revoked in the cluster's key store Secret; written back only if the Secret
    is still at the resourceVersion read (else :class:`Conflict`)."""
    headers = {"Accept": "application/json"}
    if target.token:
        headers["Authorization"] = f"Bearer {target.token}"
    try:
        with httpx.Client(verify=target.verify, headers=headers, timeout=TIMEOUT_S, trust_env=False) as http:
            got = http.get(_url(target))
            if got.status_code != 200:
                raise _refused(got, "get", target)
            secret = got.json()
            version = str(secret.get("metadata", {}).get("resourceVersion") or "")
            if not version:
                raise ClusterKeysError(
                    f"the Secret {NAMESPACE}/{SECRET} came back without metadata.resourceVersion; refusing "
                    "to write without it (an unconditional update could overwrite a concurrent change)"
                )
            raw = (secret.get("data") or {}).get(DATA_KEY)
            if not isinstance(raw, str):
                raise ClusterKeysError(
                    f"the Secret {NAMESPACE}/{SECRET} has no data {DATA_KEY}: it is not the gateway's key "
                    "store; `pulumi up` recreates it from the stack secret gateway_client_keys"
                )
            try:
                text = base64.b64decode(raw, validate=True).decode("utf-8")
            except (binascii.Error, ValueError):
                raise ClusterKeysError(
                    f"the Secret's data {DATA_KEY} is not base64 UTF-8 (value not shown)"
                ) from None
            entries = parse_store(text, f"in Secret {NAMESPACE}/{SECRET}")
            if not mark_revoked(entries, key_id):
                return Revoked(key_id, False, version, None, text)
            store = json.dumps({"keys": list(entries.values())}, sort_keys=True)  # as secrets.key_store does
            secret.setdefault("data", {})[DATA_KEY] = base64.b64encode(store.encode()).decode("ascii")
            secret.pop("stringData", None)
            put = http.put(_url(target), json=secret)  # metadata.resourceVersion: the one read
            if put.status_code != 200:
                raise _refused(put, "update", target)
            written = str(put.json().get("metadata", {}).get("resourceVersion") or "")
    except ssl.SSLError:
        raise ClusterKeysError(
            f"TLS with the API server {target.server} failed: its certificate does not chain to the "
            "kubeconfig's certificate-authority, or the client certificate was refused"
        ) from None
    except httpx.ConnectError as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, ssl.SSLError) or "CERTIFICATE_VERIFY_FAILED" in str(exc):
            raise ClusterKeysError(
                f"TLS with the API server {target.server} failed: its certificate does not chain to the "
                "kubeconfig's certificate-authority"
            ) from None
        raise ClusterKeysError(
            f"cannot reach the API server {target.server}: is the tunnel open (`sovereign tunnel open "
            "--stack STACK`) and the kubeconfig the region's?"
        ) from None
    except httpx.HTTPError as exc:
        raise ClusterKeysError(f"the API server {target.server} failed: {type(exc).__name__}") from None
    except KeyStoreError:
        raise  # the key id or the store's shape: its own message
    except ValueError:
        raise ClusterKeysError(
            f"the API server {target.server} answered with something that is not JSON"
        ) from None
    return Revoked(key_id, True, version, written, store)


def follow_up(result: Revoked, keys_file: str = "gateway-keys.json") -> list[str]:
    """What the operator does next (printed; holds no value)."""
    return [
        "next, so that the next `pulumi up` does not bring the key back (the program rewrites the Secret "
        f"from the stack secret {STACK_SECRET}):",
        f"  sovereign gateway keys revoke {result.key_id} --keys-file {keys_file}   # your copy of the store",
        f"  pulumi config set --secret {STACK_SECRET} < {keys_file}",
        "the gateway pods see it once the kubelet refreshes the mounted Secret (its sync period plus the "
        "Secret cache TTL: about a minute, up to two by default) and re-read keys.json on its change; "
        "from then on the key gets 401",
    ]


def cmd_revoke(kubeconfig: Path, context: str | None, key_id: str) -> int:
    """The command line's cluster mode; 0 when revoked (or already), 1 with the reason."""

    result = revoke(load_target(kubeconfig, context), key_id)
    where = f"Secret {NAMESPACE}/{SECRET} (context {context or 'current'})"
    if result.changed:
        print(
            f"revoked {key_id} in {where}: resourceVersion {result.read_version} -> {result.written_version}"
        )
    else:
        print(f"{key_id} was already revoked in {where}; nothing written")
    for line in follow_up(result):
        print(line)
    return 0
