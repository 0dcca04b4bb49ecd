"""`sovereign gateway keys revoke KEY_ID --kubeconfig F` revokes in the cluster's Secret, with the
resourceVersion it read, against a local HTTPS double of the API server (kube_api_double.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.clientkeys import ClientKeyStore, KeyStoreError
from infra import cluster_keys
from infra.cli import main
from tests import pki
from tests.infra.kube_api_double import KubeApiDouble

TOKEN = "tok-7f3a9c-operator-bearer"


@pytest.fixture
def store(tmp_path: Path) -> tuple[Path, str, str, str]:
    """A key store with two keys (as `sovereign gateway keys create` writes it): (file, id a,
    full key a, id b)."""
    path = tmp_path / "gateway-keys.json"
    keys = ClientKeyStore(path)
    a, key_a = keys.create("clinic-a")
    b, _ = keys.create("clinic-b")
    return path, a.key_id, key_a, b.key_id


@pytest.fixture
def api(tmp_path: Path, store: tuple[Path, str, str, str]) -> Iterator[KubeApiDouble]:
    folder = tmp_path / "api"
    folder.mkdir()
    with KubeApiDouble(
        folder, "sovereign-gateway", "gateway-client-keys", {"keys.json": store[0].read_bytes()}, TOKEN
    ) as double:
        yield double


def _entries(api: KubeApiDouble) -> dict[str, dict[str, object]]:
    return {e["key_id"]: e for e in json.loads(api.data("keys.json"))["keys"]}


def test_revoke_marks_the_key_in_the_secret_and_the_gateway_refuses_it(
    tmp_path: Path, api: KubeApiDouble, store: tuple[Path, str, str, str]
) -> None:
    _, key_a, full_a, key_b = store
    result = cluster_keys.revoke(cluster_keys.load_target(api.kubeconfig(tmp_path)), key_a)
    assert result.changed and result.read_version == "100" and result.written_version == "101"
    entries = _entries(api)
    assert entries[key_a]["revoked"] is True and entries[key_b]["revoked"] is False
    assert [m for m, _ in api.requests] == ["GET", "PUT"]
    # what the pods mount: the gateway's own store reading the Secret's file refuses the key
    mounted = tmp_path / "mounted" / "keys.json"
    mounted.parent.mkdir()
    mounted.write_bytes(api.data("keys.json"))
    assert ClientKeyStore(mounted).authenticate(full_a) is None


def test_cli_cluster_mode_prints_the_stack_secret_follow_up(
    tmp_path: Path, api: KubeApiDouble, store: tuple[Path, str, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    local, key_a, _, _ = store
    before = local.read_bytes()
    assert main(["gateway", "keys", "revoke", key_a, "--kubeconfig", str(api.kubeconfig(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert f"revoked {key_a} in Secret sovereign-gateway/gateway-client-keys" in out
    assert "pulumi config set --secret sovereign-llm:gateway_client_keys <" in out
    assert "kubelet" in out
    assert local.read_bytes() == before  # the cluster mode does not touch a local file
    assert _entries(api)[key_a]["revoked"] is True


def test_already_revoked_writes_nothing(
    tmp_path: Path, api: KubeApiDouble, store: tuple[Path, str, str, str]
) -> None:
    target = cluster_keys.load_target(api.kubeconfig(tmp_path))
    cluster_keys.revoke(target, store[1])
    api.requests.clear()
    again = cluster_keys.revoke(target, store[1])
    assert not again.changed and [m for m, _ in api.requests] == ["GET"]


def test_a_concurrent_change_is_refused_not_overwritten(
    tmp_path: Path, api: KubeApiDouble, store: tuple[Path, str, str, str]
) -> None:
    _, key_a, _, key_b = store
    concurrent = json.loads(api.data("keys.json"))
    concurrent["keys"] = [e for e in concurrent["keys"] if e["key_id"] != key_b]  # someone removed b

    def other_writer() -> None:
        api.set_data("keys.json", json.dumps(concurrent).encode())

    api.before_put = other_writer
    with pytest.raises(
        cluster_keys.Conflict, match=r"409 Conflict.*nothing was written: run the command again"
    ):
        cluster_keys.revoke(cluster_keys.load_target(api.kubeconfig(tmp_path)), key_a)
    assert json.loads(api.data("keys.json")) == concurrent  # the other write stands
    # run again: now it applies to the current content
    cluster_keys.revoke(cluster_keys.load_target(api.kubeconfig(tmp_path)), key_a)
    assert set(_entries(api)) == {key_a} and _entries(api)[key_a]["revoked"] is True


def test_unknown_key_id_writes_nothing(tmp_path: Path, api: KubeApiDouble) -> None:
    with pytest.raises(KeyStoreError, match="no key with id"):
        cluster_keys.revoke(cluster_keys.load_target(api.kubeconfig(tmp_path)), "0000deadbeef")
    assert [m for m, _ in api.requests] == ["GET"]


def test_wrong_token_is_401_and_never_echoed(
    tmp_path: Path, api: KubeApiDouble, store: tuple[Path, str, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = "tok-stolen-or-expired-abc123"
    config = api.kubeconfig(tmp_path, token=wrong)
    assert main(["gateway", "keys", "revoke", store[1], "--kubeconfig", str(config)]) == 1
    captured = capsys.readouterr()
    assert "401 Unauthorized" in captured.err and "fetch a current kubeconfig" in captured.err
    assert wrong not in captured.err + captured.out and TOKEN not in captured.err + captured.out
    assert api.requests == []  # the double saw no authenticated request


def test_forbidden_update_is_403_naming_the_rbac_fix(
    tmp_path: Path, api: KubeApiDouble, store: tuple[Path, str, str, str]
) -> None:
    api.forbidden = {"update"}
    with pytest.raises(cluster_keys.ClusterKeysError, match=r"403 Forbidden.*`get` and `update` on secrets"):
        cluster_keys.revoke(cluster_keys.load_target(api.kubeconfig(tmp_path)), store[1])
    assert _entries(api)[store[1]]["revoked"] is False


def test_missing_secret_is_404(tmp_path: Path, store: tuple[Path, str, str, str]) -> None:
    folder = tmp_path / "other"
    folder.mkdir()
    with (
        KubeApiDouble(folder, "sovereign-gateway", "something-else", {"keys.json": b"{}"}, TOKEN) as api,
        pytest.raises(cluster_keys.ClusterKeysError, match=r"does not exist in this cluster \(404\)"),
    ):
        cluster_keys.revoke(cluster_keys.load_target(api.kubeconfig(tmp_path)), store[1])


def test_a_server_certificate_from_another_ca_is_refused(
    tmp_path: Path, api: KubeApiDouble, store: tuple[Path, str, str, str]
) -> None:
    config = json.loads(api.kubeconfig(tmp_path).read_text())
    import base64

    config["clusters"][0]["cluster"]["certificate-authority-data"] = base64.b64encode(
        pki.ca("someone-else").cert_pem()
    ).decode()
    path = tmp_path / "other-ca.yaml"
    path.write_text(json.dumps(config))
    with pytest.raises(
        cluster_keys.ClusterKeysError, match="does not chain to the kubeconfig's certificate-authority"
    ):
        cluster_keys.revoke(cluster_keys.load_target(path), store[1])
    assert api.requests == []


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ({"exec": {"command": "kubelogin"}}, "uses `exec`"),
        ({"client-certificate-data": "TUlJ"}, "client certificate without its key"),
        ({"username": "admin", "password": "pw-secret-1"}, "no credentials this command can use"),
        (
            {"client-certificate-data": "not base64!", "client-key-data": "x"},
            "client-certificate-data is not base64",
        ),
    ],
)
def test_unusable_kubeconfig_users_are_refused_naming_the_field(
    tmp_path: Path, api: KubeApiDouble, user: dict[str, Any], expected: str
) -> None:
    with pytest.raises(cluster_keys.ClusterKeysError, match=expected) as caught:
        cluster_keys.load_target(api.kubeconfig(tmp_path, **user))
    assert "pw-secret-1" not in str(caught.value)


def test_insecure_and_plain_http_clusters_are_refused(tmp_path: Path, api: KubeApiDouble) -> None:
    config = json.loads(api.kubeconfig(tmp_path).read_text())
    config["clusters"][0]["cluster"]["insecure-skip-tls-verify"] = True
    path = tmp_path / "insecure.yaml"
    path.write_text(json.dumps(config))
    with pytest.raises(cluster_keys.ClusterKeysError, match="insecure-skip-tls-verify"):
        cluster_keys.load_target(path)
    config["clusters"][0]["cluster"] = {"server": "http://127.0.0.1:1"}
    path.write_text(json.dumps(config))
    with pytest.raises(cluster_keys.ClusterKeysError, match="not an https:// URL"):
        cluster_keys.load_target(path)
    with pytest.raises(cluster_keys.ClusterKeysError, match="no context named 'elsewhere'"):
        cluster_keys.load_target(api.kubeconfig(tmp_path), "elsewhere")


def test_client_certificate_credentials_are_presented(tmp_path: Path, api: KubeApiDouble) -> None:
    """RKE2's kubeconfig holds a client certificate: it loads into the TLS context (the double
    authenticates by token, so here only the loading is checked)."""
    import base64

    client = pki.leaf(api.ca, "system:admin", client=True)
    crt, key = client.write(tmp_path / "client", "admin")
    target = cluster_keys.load_target(
        api.kubeconfig(
            tmp_path,
            **{
                "client-certificate-data": base64.b64encode(crt.read_bytes()).decode(),
                "client-key": str(key),
            },
        )
    )
    assert target.token is None
    with pytest.raises(cluster_keys.ClusterKeysError, match="do not load"):
        cluster_keys.load_target(
            api.kubeconfig(
                tmp_path,
                **{"client-certificate-data": base64.b64encode(b"junk").decode(), "client-key": str(key)},
            )
        )
