"""Render the pinned Helm charts with their real templates and check what they render (issue #19).

``infra/policy/charts.py`` declares what each pinned chart renders, read by hand from its
templates; ``completeness.py`` trusts those declarations. This module renders a chart with
Helm's own template engine (Helm v4's Go SDK, embedded by the ``helm-python-sdk`` package: no
helm binary, no cluster, no network) and checks two things against the real output:

**writable** (``writable_path_findings``): a container whose root filesystem is read-only
(``securityContext.readOnlyRootFilesystem: true`` as rendered, the chart's defaults included;
Kubernetes has no pod-level default for it) must not write outside a writable volume. The paths a
container writes are read from its shell script: ``command``/``args`` that start a shell
(``sh``/``bash``/``ash``/``dash`` with ``-c`` among its flags, e.g. ``/bin/sh -ec``). The parser
(``script_writes``) is deliberately small:

- it tokenizes with ``shlex`` (POSIX quoting) and splits simple commands at ``;``, ``&&``,
  ``||``, ``|``, ``&``, parentheses and newlines; lines that start with ``#`` are comments;
- writes are: the target of ``>``, ``>>``, ``>|``, ``&>``; the destination of ``cp``, ``mv``,
  ``install`` and ``ln`` (last operand, or ``-t DIR``/``--target-directory=DIR``); every operand
  of ``mkdir``, ``touch``, ``tee`` and ``install -d``; the files of ``sed -i`` (also ``-Ei``,
  ``-i.bak``, ``--in-place``); leading ``VAR=value``, ``exec``, ``command``, ``nohup`` and shell
  keywords (``if``, ``then``, ``do``, ``!``, ...) are skipped;
- only absolute paths count; a ``$VAR`` or glob inside a path cuts it to its literal prefix
  (``/tmp/$NAME.conf`` is checked as ``/tmp/``), and a path that starts with ``$`` is skipped;
  ``/dev`` and ``/proc`` are the runtime's own mounts, never the root filesystem.

Limits, by design: no here-documents, functions, ``eval``, ``$(...)`` bodies, loops over
computed paths or scripts in files (a ConfigMap mounted and run as ``sh /scripts/x.sh`` is
not read); a container that runs a binary directly is not checked (what a program writes
cannot be read from its manifest). A write is allowed under the longest ``volumeMount`` that
covers it, unless that mount is ``readOnly`` or its volume is a Secret, ConfigMap, downwardAPI
or projected volume (Kubernetes always mounts those read-only); such a write is a finding for
every container, read-only root or not.

**declared** (``declared_fact_findings``): the ``ChartFacts`` of ``charts.CHARTS`` for the same
values against what the render shows: CRDs (the chart's ``crds/`` folders, those of disabled
sub-charts left out, and rendered CustomResourceDefinitions), custom kinds rendered, claims
(PersistentVolumeClaims and volumeClaimTemplates with their storage class), StorageClasses,
Secret/ConfigMap/ServiceAccount references of the rendered pods and the ones the chart renders,
and container images. Out of scope, because a manifest does not show them: what an operator
creates at run time (the GPU operator's DaemonSets, images and ServiceMonitor from its
ClusterPolicy, the Prometheus StatefulSet and its claim from the Prometheus resource), what a
hook Job creates when it runs (kube-prometheus-stack's admission Secret), and ``lookup`` (it
returns nothing offline). So a declared CRD or StorageClass the render lacks is a finding, but a
declared use, claim, creation or image the render lacks is not (it may come at run time); a
declared *reference* the render lacks is, as references are what rendered pods name. Helm test
hooks (``helm.sh/hook: test``) are left out: installing a release does not run them.

Charts come from a folder (``SOVEREIGN_CHART_DIR`` in the tests; ``check_charts``' argument):
``<dir>/<chart>-<version>.tgz`` as ``helm pull <chart> --repo <repo> --version <version>``
writes it, or the same name without ``.tgz`` as an unpacked chart directory. ``<chart>`` is the
chart's name (``charts.chart_name``: the last path segment of the mirror's OCI reference).

The render uses Kubernetes' version of the stack's RKE2 release as ``.Capabilities.KubeVersion``
and adds the API versions the program installs before the charts (``monitoring.coreos.com/v1``:
the Prometheus operator's CRDs) to Helm's default ``.Capabilities.APIVersions``.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shlex
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from infra.paths import STACKS_DIR
from infra.policy import charts
from infra.policy.completeness import POD_CARRIERS, pod_references

CHART_DIR_ENV = "SOVEREIGN_CHART_DIR"
DEFAULT_KUBE_VERSION = "v1.33.5+rke2r1"  # infra/config.py Rke2Config.version's default
# installed by the program before any chart that needs them (infra/k8s_platform/crds/)
EXTRA_API_VERSIONS = ("monitoring.coreos.com/v1",)
SHELLS = frozenset({"sh", "bash", "ash", "dash", "ksh", "zsh", "busybox"})
# volumes Kubernetes always mounts read-only
READ_ONLY_VOLUMES = ("secret", "configMap", "downwardAPI", "projected")
RUNTIME_MOUNTS = ("/dev", "/proc")
_SEPARATORS = frozenset(";&|()\n")
_REDIRECTS = frozenset({">", ">>", ">|", "&>", "&>>"})
_PUNCTUATION = frozenset(";&|()<>\n")
_SKIPPED = frozenset({"exec", "command", "nohup", "if", "then", "else", "elif", "do", "while", "until",
                      "!", "{", "}", "time"})  # fmt: skip
_DEFAULT_ACCOUNT = ("ServiceAccount", "default")


@dataclass(frozen=True)
class Finding:
    """What the rendered chart shows against our values or declarations (never a secret value:
    only object names, paths and image references)."""

    resource: str  # release (chart version) and object, e.g. "openbao (openbao 0.19.1) StatefulSet openbao"
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.resource}: {self.problem} ({self.fix})"


@dataclass(frozen=True)
class Release:
    """A Helm release as the program declares it (``infra.plan.Plan.helm_releases``)."""

    name: str
    chart: str
    version: str
    namespace: str
    values: Mapping[str, Any]
    repository: str | None = None

    @property
    def chart_name(self) -> str:
        return charts.chart_name(self.chart)

    def label(self) -> str:
        return f"{self.name} ({self.chart_name} {self.version})"


@dataclass
class Rendered:
    """A chart's render: the manifests Helm would apply and the CRDs of its ``crds/`` folders."""

    chart_name: str
    chart_version: str
    objects: list[dict[str, Any]]
    crds: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o.get("kind") == kind]


# --- rendering ------------------------------------------------------------------------------


def _helm() -> Any:
    try:
        import helm_python
    except ImportError as err:  # pragma: no cover - the dev extra installs it
        raise RuntimeError(
            "rendering charts needs helm-python-sdk (pip install -e '.[dev]', `make install`)"
        ) from err
    return helm_python


def _at(node: Any, path: str) -> Any:
    for key in path.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def _enabled_subcharts(metadata: Mapping[str, Any], merged: Mapping[str, Any]) -> set[str]:
    """Sub-charts whose Chart.yaml ``condition`` holds for the merged values (Helm: the first
    condition path that resolves to a boolean decides; none resolving: enabled). Tags are not
    evaluated (none of the pinned charts uses them)."""
    enabled = set()
    for dependency in metadata.get("dependencies") or []:
        on = True
        for path in str(dependency.get("condition") or "").split(","):
            got = _at(merged, path.strip()) if path.strip() else None
            if isinstance(got, bool):
                on = got
                break
        if on:
            enabled.add(str(dependency.get("alias") or dependency.get("name")))
    return enabled


def _documents(text: str) -> Iterator[dict[str, Any]]:
    for doc in yaml.safe_load_all(text):
        if isinstance(doc, dict) and doc.get("kind"):
            if doc.get("kind") == "List":
                yield from (i for i in doc.get("items") or [] if isinstance(i, dict))
            else:
                yield doc


def _is_test_hook(obj: Mapping[str, Any]) -> bool:
    hook = str((_at(obj, "metadata.annotations") or {}).get("helm.sh/hook") or "")
    return any(h.strip() in ("test", "test-success", "test-failure") for h in hook.split(","))


def render(
    chart: str | os.PathLike[str],
    values: Mapping[str, Any] | None,
    *,
    name: str,
    namespace: str,
    kube_version: str = DEFAULT_KUBE_VERSION,
    api_versions: Sequence[str] = EXTRA_API_VERSIONS,
) -> Rendered:
    """Render *chart* (a chart directory or ``.tgz``) as ``helm install`` would, offline.

    ``helm_python.Chart.render`` (0.2.2) exposes name, namespace, revision and install/upgrade
    only; the C library under it also reads ``kube_version`` and ``api_versions`` from the same
    options object (``helm template --kube-version/--api-versions``), so the call goes through
    its ``_native`` layer. tests/platform/test_chart_render.py checks that both take effect.
    """
    helm = _helm()
    from helm_python import _native

    plain = json.loads(json.dumps(dict(values or {})))
    options = {
        "name": name,
        "namespace": namespace,
        "is_install": True,
        "kube_version": kube_version,
        "api_versions": list(api_versions),
    }
    with helm.Chart.load(os.fspath(chart)) as loaded:
        metadata = loaded.metadata
        out: dict[str, str] = json.loads(
            _native.call_string("helm_render", loaded._raw(), json.dumps(plain), json.dumps(options))
        )
        subcharts = _enabled_subcharts(metadata, loaded.merge_values(plain))
        crd_files = loaded.crds
    objects = [
        doc
        for path, text in sorted(out.items())
        if not path.endswith("NOTES.txt") and not posixpath.basename(path).startswith("_")
        for doc in _documents(text)
        if not _is_test_hook(doc)
    ]
    crds = []
    for crd in crd_files:
        parts = str(crd.get("filename", "")).split("/")
        # <chart>/charts/<sub>/crds/...: a sub-chart's CRDs install only with the sub-chart
        if len(parts) > 3 and parts[1] == "charts" and parts[2] not in subcharts:
            continue
        crds += list(_documents(str(crd.get("data", ""))))
    return Rendered(str(metadata.get("name")), str(metadata.get("version")), objects, crds)


# --- a) writable paths ---------------------------------------------------------------------


def shell_script(container: Mapping[str, Any]) -> str | None:
    """The script a container's shell runs (``sh -c SCRIPT``), or None when it runs no shell."""
    words = [str(w) for w in (container.get("command") or []) + (container.get("args") or [])]
    if not words or posixpath.basename(words[0]) not in SHELLS:
        return None
    rest = words[1:]
    if posixpath.basename(words[0]) == "busybox" and rest and rest[0] in SHELLS:
        rest = rest[1:]
    i = 0
    while i < len(rest):
        word = rest[i]
        if word in ("-o", "+o", "-O", "+O"):
            i += 2  # `bash -o pipefail -c …`: the option's name is its argument, not a script
            continue
        if not word.startswith(("-", "+")):
            return None  # `sh script.sh`: a script file, not readable from the manifest
        if word.startswith("-") and "c" in word.lstrip("-") and not word.startswith("--"):
            return rest[i + 1] if i + 1 < len(rest) else None
        i += 1
    return None


def _strip_comments(script: str) -> str:
    """*script* without its comments: a ``#`` that starts a word outside quotes, to the end of
    its line (a quoted ``"#!/bin/sh"`` or a word like ``a#b`` is not a comment)."""
    out: list[str] = []
    quote = ""
    i = 0
    while i < len(script):
        ch = script[i]
        if quote:
            if ch == "\\" and quote == '"' and i + 1 < len(script):
                out.append(script[i : i + 2])
                i += 2
                continue
            if ch == quote:
                quote = ""
        elif ch == "\\" and i + 1 < len(script):
            out.append(script[i : i + 2])
            i += 2
            continue
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (not out or out[-1][-1:] in " \t\n;&|()"):
            end = script.find("\n", i)
            i = len(script) if end < 0 else end
            continue
        out.append(ch)
        i += 1
    return "".join(out)


_OPERATORS = sorted(
    {*_REDIRECTS, "<", "<<", "<<<", ">&", "<&", "<>", "&&", "||", *_SEPARATORS}, key=len, reverse=True
)


def _split_operators(token: str) -> list[str]:
    """A run of shell punctuation as shlex returns it (``;>``) split into operators (``;``, ``>``)."""
    parts = []
    while token:
        op = next((o for o in _OPERATORS if token.startswith(o)), token[0])
        parts.append(op)
        token = token[len(op) :]
    return parts


def _commands(script: str) -> Iterator[list[str]]:
    """Simple commands of *script* as word lists (redirection operators kept as words)."""
    lexer = shlex.shlex(
        _strip_comments(script.replace("\\\n", " ")), posix=True, punctuation_chars=";&|()<>\n"
    )
    lexer.whitespace = " \t\r"
    lexer.wordchars += "$@%+,:^{}!#[]`"  # parts of words in a shell (``${X?}``, ``a#b``, ``[``)
    lexer.commenters = ""
    try:
        raw = list(lexer)
    except ValueError:  # unbalanced quotes: not a script this parser reads
        return
    tokens = [
        part
        for token in raw
        for part in (_split_operators(token) if token and set(token) <= _PUNCTUATION else [token])
    ]
    command: list[str] = []
    for token in tokens:
        if token and set(token) <= _SEPARATORS and token not in _REDIRECTS:
            if command:
                yield command
            command = []
            continue
        command.append(token)
    if command:
        yield command


def _operands(words: Sequence[str], with_argument: str = "") -> tuple[list[str], dict[str, str]]:
    """Non-option words and options (short flags taking an argument listed in *with_argument*)."""
    operands: list[str] = []
    options: dict[str, str] = {}
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--":
            operands += words[i + 1 :]
            break
        if word.startswith("--"):
            key, _, arg = word[2:].partition("=")
            options[key] = arg
        elif word.startswith("-") and len(word) > 1:
            for j, flag in enumerate(word[1:]):
                if flag in with_argument:
                    arg = word[j + 2 :]
                    if not arg and i + 1 < len(words):
                        i += 1
                        arg = words[i]
                    options[flag] = arg
                    break
                options[flag] = ""
        else:
            operands.append(word)
        i += 1
    return operands, options


def _sed_files(words: Sequence[str]) -> list[str]:
    operands: list[str] = []
    in_place = script_given = False
    i = 0
    while i < len(words):
        word = words[i]
        if word.startswith("--"):
            in_place |= word.startswith("--in-place")
            script_given |= word.startswith(("--expression", "--file"))
        elif word.startswith("-") and len(word) > 1:
            for j, flag in enumerate(word[1:]):
                if flag == "i":  # GNU: the rest of the word is a backup suffix
                    in_place = True
                    break
                if flag in "efl":
                    script_given |= flag in "ef"
                    if not word[j + 2 :]:
                        i += 1
                    break
        else:
            operands.append(word)
        i += 1
    if not in_place:
        return []
    return operands if script_given else operands[1:]


def _command_writes(words: Sequence[str]) -> list[str]:
    while words and (words[0] in _SKIPPED or re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0])):
        words = words[1:]
    if words and posixpath.basename(words[0]) == "busybox":
        words = words[1:]  # `busybox sed -i …`: the applet is the program
    if not words:
        return []
    program, args = posixpath.basename(words[0]), list(words[1:])
    if program in ("cp", "mv", "install", "ln"):
        operands, options = _operands(args, "tmgoS" if program == "install" else "tS")
        if program == "install" and "d" in options:
            return operands
        target = options.get("t") or options.get("target-directory")
        if target:
            return [target]
        return operands[-1:] if len(operands) >= 2 else []
    if program == "mkdir":
        return _operands(args, "m")[0]
    if program == "touch":
        return _operands(args, "drt")[0]
    if program == "tee":
        return _operands(args)[0]
    if program == "sed":
        return _sed_files(args)
    return []


def script_writes(script: str) -> list[str]:
    """Absolute paths *script* writes (see the module docstring for what the parser reads)."""
    found: list[str] = []
    for command in _commands(script):
        words: list[str] = []
        i = 0
        while i < len(command):
            if command[i] in _REDIRECTS and i + 1 < len(command):
                found.append(command[i + 1])
                i += 2
                continue
            if command[i] in ("<", "<<", "<<<", ">&", "<&", "<>") and i + 1 < len(command):
                i += 2  # input, here-document word, descriptor duplication
                continue
            words.append(command[i])
            i += 1
        found += _command_writes(words)
    paths = []
    for path in found:
        literal = re.split(r"[$*?\[`]", path, maxsplit=1)[0]
        if not literal.startswith("/"):
            continue
        normal = posixpath.normpath(literal) + ("/" if literal.endswith("/") and literal != "/" else "")
        if not _under(normal, RUNTIME_MOUNTS) and normal not in paths:
            paths.append(normal)
    return paths


def _under(path: str, roots: Iterable[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _mount_for(path: str, mounts: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    covering = [m for m in mounts if _under(path.rstrip("/") or "/", [str(m.get("mountPath", ""))])]
    return max(covering, key=lambda m: len(str(m.get("mountPath", ""))), default=None)


def _pod_spec(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    path = POD_CARRIERS.get(str(obj.get("kind")))
    group = str(obj.get("apiVersion", "")).rpartition("/")[0]
    node: Any = obj if path and group in ("", "apps", "batch") else None
    for key in path or ():
        node = node.get(key) if isinstance(node, Mapping) else None
    return node if isinstance(node, Mapping) else None


def _containers(spec: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for key in ("initContainers", "containers"):
        yield from (c for c in spec.get(key) or [] if isinstance(c, Mapping))


def _object(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    where = "/".join(str(x) for x in (meta.get("namespace"), meta.get("name")) if x)
    return f"{obj.get('kind')} {where}"


def writable_path_findings(rendered: Rendered, release: str) -> list[Finding]:
    """Writes of container shell scripts that a read-only root filesystem or a read-only volume
    refuses (finding names the workload, the container and the path)."""
    findings = []
    for obj in rendered.objects:
        spec = _pod_spec(obj)
        if spec is None:
            continue
        volumes = {str(v.get("name")): v for v in spec.get("volumes") or [] if isinstance(v, Mapping)}
        for container in _containers(spec):
            script = shell_script(container)
            if script is None:
                continue
            read_only_root = _at(container, "securityContext.readOnlyRootFilesystem") is True
            mounts = [m for m in container.get("volumeMounts") or [] if isinstance(m, Mapping)]
            where = f"{release} {_object(obj)} container {container.get('name')}"
            for path in script_writes(script):
                mount = _mount_for(path, mounts)
                if mount is None:
                    if read_only_root:
                        findings.append(
                            Finding(
                                where,
                                f"its script writes {path}, which is on the read-only root filesystem "
                                "(readOnlyRootFilesystem: true) and under none of its volumeMounts",
                                f"mount a writable volume (an emptyDir) at {posixpath.dirname(path) or '/'} "
                                "or above through the chart's values",
                            )
                        )
                    continue
                volume = volumes.get(str(mount.get("name")), {})
                kind = next((k for k in READ_ONLY_VOLUMES if k in volume), None)
                if mount.get("readOnly") is True or kind:
                    why = f"a {kind} volume (always read-only)" if kind else "mounted readOnly"
                    findings.append(
                        Finding(
                            where,
                            f"its script writes {path}, on volumeMount {mount.get('name')} at "
                            f"{mount.get('mountPath')}: {why}",
                            "write to a copy on a writable volume (an emptyDir) instead",
                        )
                    )
    return findings


# --- b) declared facts against the render ----------------------------------------------------


def _group(api_version: str) -> str:
    return api_version.rpartition("/")[0] if "/" in api_version else ""


def _named(objs: Iterable[Mapping[str, Any]]) -> set[str]:
    return {str(_at(o, "metadata.name")) for o in objs}


def declared_fact_findings(rendered: Rendered, facts: charts.ChartFacts, release: str) -> list[Finding]:
    """Differences between *facts* (charts.py for the same values) and the render, within what a
    manifest shows reliably (module docstring)."""
    findings: list[Finding] = []
    fix = "correct the declaration in infra/policy/charts.py (it must say what the chart renders)"

    def add(what: str, problem: str) -> None:
        findings.append(Finding(f"{release} {what}".rstrip(), problem, fix))

    # CRDs: both directions
    rendered_crds = {
        (str(_at(c, "spec.group")), str(_at(c, "spec.names.kind")))
        for c in rendered.crds + rendered.of_kind("CustomResourceDefinition")
    }
    declared_crds = {(k.group, k.kind) for k in facts.crds}
    for group, kind in sorted(rendered_crds - declared_crds):
        add("", f"installs the CRD of {kind} ({group}); the declaration's crds miss it")
    for group, kind in sorted(declared_crds - rendered_crds):
        add("", f"the declaration says it installs the CRD of {kind} ({group}); the render has none")

    # custom kinds rendered: must be declared as used (the completeness check orders their CRDs)
    used = {(k.group, k.kind) for k in facts.uses}
    custom = {
        (_group(str(o.get("apiVersion", ""))), str(o.get("kind")))
        for o in rendered.objects
        if _group(str(o.get("apiVersion", ""))) not in charts.BUILTIN_GROUPS
    }
    for group, kind in sorted(custom - used):
        add("", f"renders a {kind} ({group}); the declaration's uses miss it")

    # StorageClasses: both directions, with the default flag
    classes = {
        str(_at(o, "metadata.name")): str(
            (_at(o, "metadata.annotations") or {}).get("storageclass.kubernetes.io/is-default-class")
        ).lower()
        == "true"
        for o in rendered.of_kind("StorageClass")
    }
    declared_classes = dict(facts.storage_classes)
    for name in sorted(set(classes) | set(declared_classes)):
        if name not in declared_classes:
            add(f"StorageClass {name}", "renders it; the declaration's storage_classes miss it")
        elif name not in classes:
            add(f"StorageClass {name}", "declared, but the render has no such StorageClass")
        elif classes[name] != declared_classes[name]:
            add(f"StorageClass {name}", f"renders default={classes[name]}, declared {declared_classes[name]}")

    # claims rendered: PersistentVolumeClaims and volumeClaimTemplates
    declared_claims = {c.name: c.storage_class for c in facts.claims}
    rendered_claims: list[tuple[str, str, str | None]] = [
        (_object(o), str(_at(o, "metadata.name")), _at(o, "spec.storageClassName"))
        for o in rendered.of_kind("PersistentVolumeClaim")
    ]
    for o in rendered.of_kind("StatefulSet"):
        for t in _at(o, "spec.volumeClaimTemplates") or []:
            rendered_claims.append(
                (_object(o), str(_at(t, "metadata.name")), _at(t, "spec.storageClassName"))
            )
    for what, name, storage_class in rendered_claims:
        shown = storage_class if storage_class is not None else "the default class"
        if name not in declared_claims:
            add(what, f"claims {name} (storage class {shown}); the declaration's claims miss it")
        elif declared_claims[name] != storage_class:
            add(what, f"claims {name} with storage class {shown}, declared {declared_claims[name]!r}")

    # Secret/ConfigMap/ServiceAccount: rendered creations and the rendered pods' references
    made = {(k, n) for k in ("Secret", "ConfigMap", "ServiceAccount") for n in _named(rendered.of_kind(k))}
    declared_made = {(r.kind, r.name) for r in facts.creates}
    declared_refs = {(r.kind, r.name) for r in facts.references}
    for kind, name in sorted(made - declared_made):
        add(f"{kind} {name}", "renders it; the declaration's creates miss it")
    referenced: dict[tuple[str, str], str] = {}
    for o in rendered.objects:
        spec = _pod_spec(o)
        for ref in pod_references(spec) if spec is not None else []:
            referenced.setdefault(ref, _object(o))
    for ref, who in sorted(referenced.items()):
        if ref in made or ref in declared_refs or ref in declared_made:
            continue
        if ref in charts.RKE2_IN_EVERY_NAMESPACE or ref == _DEFAULT_ACCOUNT:
            continue
        add(who, f"its pods reference {ref[0]} {ref[1]}, which the chart does not render; "
            "the declaration lists it neither as a reference nor as a creation")  # fmt: skip
    for kind, name in sorted(declared_refs - set(referenced)):
        add(f"{kind} {name}", "declared as referenced, but no rendered pod references it")

    # images of the rendered pod templates
    declared_images = {i.ref for i in facts.images}
    seen: set[str] = set()
    for o in rendered.objects:
        spec = _pod_spec(o)
        for c in _containers(spec) if spec is not None else []:
            image = str(c.get("image"))
            if image not in declared_images and image not in seen:
                seen.add(image)
                add(
                    f"{_object(o)} container {c.get('name')}",
                    f"runs {image}; the declaration's images miss it",
                )
    return findings


def check_release(
    chart: str | os.PathLike[str], release: Release, *, kube_version: str = DEFAULT_KUBE_VERSION
) -> list[Finding]:
    """Both checks for one release rendered from *chart* (a directory or ``.tgz``)."""
    rendered = render(
        chart, release.values, name=release.name, namespace=release.namespace, kube_version=kube_version
    )
    findings = []
    if (rendered.chart_name, rendered.chart_version) != (release.chart_name, release.version):
        findings.append(
            Finding(
                release.label(),
                f"{os.fspath(chart)} is chart {rendered.chart_name} {rendered.chart_version}, "
                f"not the pinned {release.chart_name} {release.version}",
                "pull the pinned version into the chart folder",
            )
        )
    findings += writable_path_findings(rendered, release.label())
    rule = charts.CHARTS.get((release.chart_name, release.version))
    if rule is None:
        findings.append(
            Finding(release.label(), "no declaration in infra/policy/charts.py CHARTS", "declare it")
        )
    else:
        findings += declared_fact_findings(rendered, rule(release.values, release.name), release.label())
    return findings


def chart_path(chart_dir: str | os.PathLike[str], release: Release) -> Path | None:
    """``<dir>/<chart>-<version>.tgz`` or the unpacked ``<dir>/<chart>-<version>/``."""
    stem = Path(chart_dir) / f"{release.chart_name}-{release.version}"
    for candidate in (stem.with_name(stem.name + ".tgz"), stem):
        if candidate.exists():
            return candidate
    return None


def pull_command(release: Release) -> str:
    if release.chart.startswith("oci://"):  # the EU mirror's reference (by digest: the version pulls it)
        return f"helm pull {release.chart.split('@', 1)[0]} --version {release.version}"
    repo = release.repository or "<repository>"
    return f"helm pull {release.chart} --repo {repo} --version {release.version}"


def releases(plan: Any) -> list[Release]:
    """The Helm releases of an ``infra.plan.Plan`` (values as the program computes them)."""
    return [
        Release(
            name=str(r["name"]),
            chart=str(r["chart"]),
            version=str(r["version"]),
            namespace=str(r.get("namespace") or "default"),
            values=r.get("values") or {},
            repository=r.get("repository"),
        )
        for r in plan.helm_releases()
    ]


def check_charts(
    chart_dir: str | os.PathLike[str], stack: str, *, stacks_dir: str | os.PathLike[str] | None = None
) -> list[Finding]:
    """Render every Helm release of *stack* (``stacks/Pulumi.<stack>.yaml``, run under Pulumi's
    mocks as ``sovereign plan`` does) from the charts in *chart_dir* and return the findings of
    both checks; a chart missing from the folder is a finding naming the ``helm pull`` command."""
    from infra import plan as planner

    stacks = Path(stacks_dir) if stacks_dir is not None else STACKS_DIR
    plan = planner.plan_stack(stacks, stack)
    kube_version = str(_at(plan.config, "rke2.version") or DEFAULT_KUBE_VERSION)
    findings: list[Finding] = []
    for release in releases(plan):
        path = chart_path(chart_dir, release)
        if path is None:
            findings.append(
                Finding(
                    release.label(),
                    f"no chart at {Path(chart_dir) / (release.chart_name + '-' + release.version)}(.tgz)",
                    f"cd {os.fspath(chart_dir)} && {pull_command(release)}",
                )
            )
            continue
        findings += check_release(path, release, kube_version=kube_version)
    return findings
