"""``sovereign plan``, ``images list`` and ``charts list|check``: a region stack seen offline (Pulumi's
mocks, no credentials): the plan with its policy and completeness verdict, the images and Helm
charts it needs with their EU mirrors and digests."""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path
from typing import Any

from gateway.errors import BadInput
from infra.paths import REPO_ROOT, add_stack_options


def cmd_plan(args: argparse.Namespace) -> int:
    from infra import catalogue
    from infra import plan as planner
    from infra.policy.rules import RULES

    if stale := catalogue.load().stale(datetime.date.today()):
        print(stale, file=sys.stderr)
    result = planner.plan_stack(Path(args.stacks_dir), args.stack)
    out_dir = Path(args.out) if args.out else REPO_ROOT / ".sovereign" / "plan" / args.stack
    plan_path, k8s_path = planner.write(result, out_dir)
    print(planner.table(result))
    print()
    custom = result.custom()
    print(
        f"stack {result.stack}: {len(custom)} resources, "
        f"{len(result.declared_hosts)} declared dedicated hosts, "
        f"{len(result.kubernetes_objects())} Kubernetes objects"
    )
    provider = result.secrets_provider or "not set (pulumi stack init --secrets-provider='hashivault://…')"
    print(f"secrets provider: {provider}")
    if result.config["backend"]["allow_saas"]:
        print(f"WARNING: Pulumi SaaS backend allowed: {result.config['backend']['justification']}")
    print(f"plan:       {plan_path}\nkubernetes: {k8s_path}")
    for blocker in result.blockers:
        print(f"WARNING: `pulumi up` would stop before creating anything: {blocker}", file=sys.stderr)
    if result.findings_as_blockers:
        print(
            f"completeness: {len(result.findings_as_blockers)} image and chart finding(s) are the image and "
            "chart deploy blockers above (plan.json completeness.deploy_blockers)",
            file=sys.stderr,
        )
    if result.findings:
        verdict = "" if planner.COMPLETENESS_FAILS_PLAN else " (reported, not yet failing the plan)"
        print(f"\n{len(result.findings)} completeness finding(s){verdict}:", file=sys.stderr)
        for finding in result.findings:
            print(f"  {finding}", file=sys.stderr)
    else:
        print("completeness: every kind, StorageClass, reference, image and namespace policy is provided")
    if result.violations:
        print(f"\n{len(result.violations)} policy violation(s):", file=sys.stderr)
        for violation in result.violations:
            print(f"  {violation}", file=sys.stderr)
        return 1
    print(f"policy: {len(custom)} resources checked against {len(RULES)} rules, no violation")
    return 1 if result.findings and planner.COMPLETENESS_FAILS_PLAN else 0


def _stack_and_mirror(args: argparse.Namespace) -> tuple[Any, str]:
    """The stack config the listing is of, and its registry mirror as the listing names it."""
    from infra import config

    cfg = config.load(Path(args.stacks_dir), args.stack)
    return cfg, cfg.endpoints.registry_mirror or "(endpoints.registry_mirror not set)"


def cmd_images_list(args: argparse.Namespace) -> int:
    from infra import images

    cfg, mirror = _stack_and_mirror(args)
    needed = images.required(cfg)
    print(
        f"# stack {cfg.stack}: {len(needed)} images, each to mirror to {mirror}, "
        "then its digest in platform.images"
    )
    missing = 0
    for image in needed:
        target = image.mirror(cfg) or f"<endpoints.registry_mirror>/{images.mirror_path_hint(image.upstream)}"
        digest = image.digest(cfg)
        missing += digest is None
        print(f"{image.upstream} -> {target} {digest or '(no digest)'}  # {'; '.join(image.used_by)}")
    if missing:
        print(
            f"{missing} image(s) without a digest: `crane digest <mirror reference>` after mirroring",
            file=sys.stderr,
        )
    return 0


def cmd_charts_list(args: argparse.Namespace) -> int:
    from infra import chart_sources

    cfg, mirror = _stack_and_mirror(args)
    needed = chart_sources.installed(cfg)
    print(
        f"# stack {cfg.stack}: {len(needed)} Helm charts, each to push to {mirror} as an OCI artefact, "
        "then its digest in platform.charts"
    )
    missing = 0
    for chart in needed:
        target = (
            chart.mirror(cfg)
            or f"oci://<endpoints.registry_mirror>/{chart_sources.MIRROR_FOLDER}/{chart.name}"
        )
        digest = chart.digest(cfg)
        missing += digest is None
        print(f"{chart.key} from {chart.upstream} -> {target} {digest or '(no digest)'}  # {chart.used_for}")
        print(f"    {chart.pull_and_push(cfg)}")
    if missing:
        print(
            f"{missing} chart(s) without a digest: add the Digest `helm push` prints to platform.charts",
            file=sys.stderr,
        )
    return 0


def cmd_charts_check(args: argparse.Namespace) -> int:
    from infra.policy import chart_render

    if not Path(args.chart_dir).is_dir():
        raise BadInput("--chart-dir: no such folder; `helm pull` each chart there first")
    try:
        findings = chart_render.check_charts(args.chart_dir, args.stack, stacks_dir=args.stacks_dir)
    except ImportError:
        raise BadInput("helm-python-sdk is not installed: `pip install -e '.[dev]'` (make install)") from None
    for finding in findings:
        print(f"  {finding}", file=sys.stderr)
    if findings:
        print(f"{len(findings)} finding(s) in the rendered charts of {args.stack}", file=sys.stderr)
        return 1
    print(f"charts of {args.stack}: rendered with the stack's values, no finding")
    return 0


def add_parser(sub: Any) -> None:
    plan = sub.add_parser("plan", help="offline plan of a region stack (Pulumi mocks, no credentials)")
    add_stack_options(plan)
    plan.add_argument("--out", help="output folder (default .sovereign/plan/<stack>)")
    plan.set_defaults(func=cmd_plan)

    img = sub.add_parser("images", help="the container images of a region stack").add_subparsers(
        dest="images_command", required=True
    )
    img_list = img.add_parser(
        "list", help="every image the stack needs: upstream -> EU mirror reference, digest"
    )
    add_stack_options(img_list)
    img_list.set_defaults(func=cmd_images_list)

    chart = sub.add_parser("charts", help="the Helm charts of a region stack").add_subparsers(
        dest="charts_command", required=True
    )
    chart_list = chart.add_parser(
        "list", help="every chart the stack installs: upstream -> EU mirror (OCI), digest, helm pull/push"
    )
    add_stack_options(chart_list)
    chart_list.set_defaults(func=cmd_charts_list)
    chart_check = chart.add_parser(
        "check", help="render the pulled charts with the stack's values (real templates) and check them"
    )
    add_stack_options(chart_check)
    chart_check.add_argument(
        "--chart-dir", required=True, help="folder with <chart>-<version>.tgz as `helm pull` writes them"
    )
    chart_check.set_defaults(func=cmd_charts_check)
