"""Charts rendered with their real templates (Helm's Go engine through helm-python-sdk, offline):
the writable-path check and the declared facts of infra/policy/charts.py against the render.

Always run: our own chart tests/fixtures/charts/startscript (helpers, ifs, ranges, a sub-chart
with a condition, Capabilities). The pinned third-party charts run when SOVEREIGN_CHART_DIR
names a folder with ``<chart>-<version>.tgz`` (or the unpacked ``<chart>-<version>/``), as
``helm pull`` from the EU mirror writes them; otherwise they skip and say so.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest

from infra.policy import chart_render as cr
from infra.policy import charts
from tests.infra.support import plan_of, sections

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "charts" / "startscript"
TMP_EMPTYDIR = {
    "server": {
        "volumes": [{"name": "tmp", "emptyDir": {"medium": "Memory"}}],
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
}


def fixture(values: dict[str, Any] | None = None, **kw: Any) -> cr.Rendered:
    return cr.render(FIXTURE, values or {}, name="demo", namespace="apps", **kw)


def writes(values: dict[str, Any] | None = None) -> list[cr.Finding]:
    return cr.writable_path_findings(fixture(values), "demo")


# --- the shell parser ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("cp /config/a.hcl /tmp/a.hcl; exec bao server", ["/tmp/a.hcl"]),
        ('[ -n "$X" ] && sed -Ei "s|X|${X?}|g" /tmp/a.hcl', ["/tmp/a.hcl"]),
        ("sed -i.bak -e s/a/b/ /etc/app.conf /etc/other.conf", ["/etc/app.conf", "/etc/other.conf"]),
        ("sed -n p /etc/app.conf > /var/out", ["/var/out"]),  # no -i: only the redirect writes
        ("echo x >> /var/log/app.log 2>/dev/null", ["/var/log/app.log"]),
        ("echo x >&2; echo y > /dev/stderr; cat < /etc/in", []),
        ("mv -t /srv/dest /a /b && install -d -m 0755 /opt/x /opt/y", ["/srv/dest", "/opt/x", "/opt/y"]),
        ("mkdir -p /run/app && touch /run/app/ready | tee -a /var/tee.log", ["/run/app", "/run/app/ready",
                                                                             "/var/tee.log"]),
        ("FOO=1 exec cp a $HOME/x; cp a /cache/$NAME.conf", ["/cache/"]),
        ("# cp a /tmp/commented\nln -s /a /etc/link # cp b /tmp/trailing", ["/etc/link"]),
        ("cp relative/a relative/b", []),
        ("if true; then\n  echo ok > /tmp/flag\nfi", ["/tmp/flag"]),
        # a quoted "#" is no comment; a separator and a redirect shlex returns as one token
        ('echo "#!/bin/sh" > /tmp/x.sh', ["/tmp/x.sh"]),
        ("true;>/tmp/y", ["/tmp/y"]),
        ("busybox sed -i s/a/b/ /etc/x", ["/etc/x"]),
        ("echo a#b > /var/x # cp a /tmp/trailing", ["/var/x"]),
    ],
)  # fmt: skip
def test_script_writes(script: str, expected: list[str]) -> None:
    assert cr.script_writes(script) == expected


@pytest.mark.parametrize(
    ("container", "script"),
    [
        ({"command": ["/bin/sh", "-ec"], "args": ["cp a /tmp/b"]}, "cp a /tmp/b"),
        ({"command": ["bash", "-c", "echo > /x"]}, "echo > /x"),
        ({"command": ["bash", "-o", "pipefail", "-c", "cp a /tmp/b"]}, "cp a /tmp/b"),
        ({"command": ["sh", "/scripts/start.sh"]}, None),  # a script file: not readable here
        ({"command": ["/bin/server"], "args": ["-c", "x"]}, None),  # not a shell
    ],
)
def test_shell_script(container: dict[str, Any], script: str | None) -> None:
    assert cr.shell_script(container) == script


# --- a) writable paths on our own chart --------------------------------------------------------


def test_render_uses_the_rke2_kube_version_and_the_program_s_api_versions() -> None:
    rendered = fixture()
    (config,) = rendered.of_kind("ConfigMap")
    assert config["metadata"]["annotations"]["kube-version"] == cr.DEFAULT_KUBE_VERSION
    assert rendered.of_kind("ServiceMonitor")  # .Capabilities.APIVersions.Has monitoring.coreos.com/v1
    assert not fixture(api_versions=()).of_kind("ServiceMonitor")
    assert not [o for o in rendered.objects if o["kind"] == "Pod"]  # the helm test hook is left out
    assert config["metadata"]["name"] == "demo-startscript-config"  # the chart's helper ran


def test_a_start_script_copying_to_tmp_under_a_read_only_root_is_caught() -> None:
    (finding,) = writes()
    assert finding.resource == "demo StatefulSet apps/demo-startscript container server"
    assert "/tmp/server.hcl" in finding.problem and "read-only root filesystem" in finding.problem
    assert "emptyDir" in finding.fix and "/tmp" in finding.fix


def test_an_emptydir_at_tmp_makes_it_pass() -> None:
    assert writes(TMP_EMPTYDIR) == []


def test_a_writable_root_filesystem_needs_no_volume() -> None:
    assert writes({"server": {"readOnlyRootFilesystem": False}}) == []


def test_a_redirect_to_a_mounted_volume_is_not_caught_but_one_elsewhere_is() -> None:
    values = copy.deepcopy(TMP_EMPTYDIR)
    assert writes(values) == []  # echo >> /data/logs/start.log: /data is the claim's mount
    values["server"]["logDir"] = "/var/log/app"  # mkdir -p it, then the redirect into it
    problems = [f.problem.split(",")[0] for f in writes(values)]
    assert problems == ["its script writes /var/log/app", "its script writes /var/log/app/start.log"]


def test_a_write_into_a_configmap_volume_is_caught_even_with_a_writable_root() -> None:
    values = {"server": {"readOnlyRootFilesystem": False, "configCopy": "/config/server.hcl"}}
    (finding,) = writes(values)
    assert "configMap volume (always read-only)" in finding.problem


# --- b) declared facts against the render -------------------------------------------------------


def declared(**changes: Any) -> charts.ChartFacts:
    """What a reader of the fixture chart declares for its default values."""
    facts: dict[str, Any] = {
        "crds": [charts.Kind("example.eu", "Widget", "crds/widgets.yaml")],
        "uses": [charts.Kind("monitoring.coreos.com", "ServiceMonitor", "templates/servicemonitor.yaml")],
        "claims": [charts.Claim("data", None, "templates/statefulset.yaml")],
        "creates": [
            charts.Ref("ConfigMap", "demo-startscript-config", "templates/configmap.yaml"),
            charts.Ref("ServiceAccount", "demo-startscript", "templates/serviceaccount.yaml"),
        ],
        "images": [charts.Image("server", "registry.example.eu/startscript:1.2.3", "statefulset.yaml")],
    }
    return charts.ChartFacts(**{**facts, **changes})


def facts_findings(values: dict[str, Any] | None, facts: charts.ChartFacts) -> list[str]:
    return [f.problem for f in cr.declared_fact_findings(fixture(values), facts, "demo")]


def test_a_faithful_declaration_has_no_findings() -> None:
    assert facts_findings({}, declared()) == []


def test_a_pvc_and_a_secret_reference_the_declaration_misses_are_caught() -> None:
    values = {"cache": {"enabled": True}, "tls": {"secretName": "demo-tls"}}
    problems = facts_findings(values, declared())
    assert problems == [
        "claims demo-startscript-cache (storage class fast); the declaration's claims miss it",
        "its pods reference Secret demo-tls, which the chart does not render; "
        "the declaration lists it neither as a reference nor as a creation",
    ]
    fixed = declared(
        claims=[*declared().claims, charts.Claim("demo-startscript-cache", "fast", "cache-pvc.yaml")],
        references=[charts.Ref("Secret", "demo-tls", "statefulset.yaml")],
    )
    assert facts_findings(values, fixed) == []


def test_a_wrong_storage_class_and_a_stale_reference_are_caught() -> None:
    facts = declared(
        claims=[charts.Claim("data", "hcloud-volumes", "statefulset.yaml")],
        references=[charts.Ref("Secret", "gone", "statefulset.yaml")],
    )
    assert facts_findings({}, facts) == [
        "claims data with storage class the default class, declared 'hcloud-volumes'",
        "declared as referenced, but no rendered pod references it",
    ]


def test_crds_of_an_enabled_sub_chart_and_its_custom_kinds_are_compared() -> None:
    problems = facts_findings({"extras": {"enabled": True}}, declared())
    assert problems == [
        "installs the CRD of Gadget (example.eu); the declaration's crds miss it",
        "renders a Widget (example.eu); the declaration's uses miss it",
    ]
    missing = declared(crds=[*declared().crds, charts.Kind("example.eu", "Gadget", "x")])
    assert "the declaration says it installs the CRD of Gadget (example.eu); the render has none" in (
        facts_findings({}, missing)
    )


def test_an_image_the_declaration_misses_is_caught() -> None:
    (problem,) = facts_findings({"image": {"tag": "9.9.9"}}, declared())
    assert problem == "runs registry.example.eu/startscript:9.9.9; the declaration's images miss it"


# --- the pinned charts (SOVEREIGN_CHART_DIR) ----------------------------------------------------

PINNED = ("keda", "openbao", "gpu-operator", "kube-prometheus-stack", "hcloud-csi",
          "hcloud-cloud-controller-manager", "local-path-provisioner", "cloudnative-pg")  # fmt: skip


@pytest.fixture(scope="module")
def prod_releases() -> dict[str, cr.Release]:
    """The releases with the exact values the program computes for eu-central-prod (mocks)."""
    plan = plan_of(sections("eu-central-prod"), stack="eu-central-prod")
    return {r.name: r for r in cr.releases(plan)}


def pinned(prod_releases: dict[str, cr.Release], name: str) -> tuple[Path, cr.Release]:
    folder = os.environ.get(cr.CHART_DIR_ENV)
    release = prod_releases[name]
    if not folder:
        pytest.skip(
            f"{cr.CHART_DIR_ENV} is not set: pull the pinned charts into a folder "
            f"(`{cr.pull_command(release)}`, `sovereign charts list` names them all) and point it there"
        )
    path = cr.chart_path(folder, release)
    if path is None:
        pytest.skip(
            f"{release.chart_name}-{release.version}(.tgz) is not in {folder}: {cr.pull_command(release)}"
        )
    return path, release


@pytest.mark.parametrize("name", PINNED)
def test_pinned_chart_writes_only_to_writable_volumes(
    prod_releases: dict[str, cr.Release], name: str
) -> None:
    path, release = pinned(prod_releases, name)
    rendered = cr.render(path, release.values, name=release.name, namespace=release.namespace)
    assert (rendered.chart_name, rendered.chart_version) == (release.chart_name, release.version)
    assert rendered.objects
    assert cr.writable_path_findings(rendered, release.label()) == []


@pytest.mark.parametrize("name", PINNED)
def test_pinned_chart_renders_what_charts_py_declares(
    prod_releases: dict[str, cr.Release], name: str
) -> None:
    path, release = pinned(prod_releases, name)
    findings = [str(f) for f in cr.check_release(path, release)]
    assert findings == []


def test_openbao_start_script_crash_loops_without_the_tmp_emptydir(
    prod_releases: dict[str, cr.Release],
) -> None:
    path, release = pinned(prod_releases, "openbao")
    values = copy.deepcopy(dict(release.values))
    server = values["server"]
    server["volumeMounts"] = [m for m in server.get("volumeMounts", []) if m["mountPath"] != "/tmp"]
    server["volumes"] = [v for v in server.get("volumes", []) if v["name"] != "tmp"]
    rendered = cr.render(path, values, name=release.name, namespace=release.namespace)
    findings = cr.writable_path_findings(rendered, release.label())
    assert {(f.resource, f.problem.split(",")[0]) for f in findings} == {
        (
            "openbao (openbao 0.19.1) StatefulSet openbao/openbao container openbao",
            "its script writes /tmp/storageconfig.hcl",
        )
    }
