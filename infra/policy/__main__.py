"""Policy pack for real previews and updates: ``pulumi preview --policy-pack infra/policy``.

Every rule of ``rules.py`` as a mandatory resource validation policy, so a real deploy is held
to exactly what ``sovereign plan`` checks offline; and the completeness check
(``completeness.py``) as a stack validation policy, which sees every resource with its parent
and dependencies, mandatory while ``infra.plan.COMPLETENESS_FAILS_PLAN`` is on (it is).
The stack's registry mirror comes from the pack's config (``--policy-pack-config``:
``{"completeness": {"registry_mirror": "https://…"}, "images-from-eu-mirror": {…}, "charts-from-eu-mirror":
{…}}``, the same value for each); without it images must still be by digest and from no public
registry (completeness), and the two mirror rules pass.
"""

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    PolicyPack,
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from infra.plan import COMPLETENESS_FAILS_PLAN
from infra.policy import completeness, rules

# the rules that hold a resource to the stack's declaration take the registry mirror from the pack's
# config (`--policy-pack-config`: {"images-from-eu-mirror": {"registry_mirror": "https://…"}, …}),
# as `sovereign plan` takes it from the stack (rules.declared_from); without it they pass, and the
# completeness policy still refuses an image without digest or from a public registry
MIRROR_RULES = ("images-from-eu-mirror", "charts-from-eu-mirror")


def _policy(rule: str, fn: rules.Rule) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        mirror = args.get_config().get("registry_mirror") if rule in MIRROR_RULES else None
        if mirror:  # its host, as images.mirror_host reads endpoints.registry_mirror
            rules.configure(
                rules.Declared(registry_mirror=str(mirror).split("://", 1)[-1].split("/", 1)[0].lower())
            )
        try:
            for message in fn(args.resource_type, args.name, args.props):
                report_violation(message, None)
        finally:
            if mirror:
                rules.configure(None)

    schema = (
        PolicyConfigSchema(properties={"registry_mirror": {"type": "string"}})
        if rule in MIRROR_RULES
        else None
    )
    return ResourceValidationPolicy(
        name=rule,
        description=(fn.__doc__ or rule).strip(),
        enforcement_level=EnforcementLevel.MANDATORY,
        validate=validate,
        config_schema=schema,
    )


def _resource(r: PolicyResource) -> completeness.Resource:
    # components (the project's sovereign:* types and the stack) hold no Kubernetes object
    custom = not r.resource_type.startswith(("sovereign:", "pulumi:pulumi:"))
    parent = r.parent.urn if r.parent is not None else None
    deps = tuple(d.urn for d in r.dependencies)
    return completeness.Resource(r.urn, r.resource_type, r.name, custom, r.props, parent, deps)


def _completeness(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    resources = [_resource(r) for r in args.resources]
    by_label = {r.label(): r.urn for r in resources if r.custom and r.type.startswith("kubernetes:")}
    mirror = args.get_config().get("registry_mirror")
    for finding in completeness.check(resources, registry_mirror=mirror, require_mirror=mirror is not None):
        # a finding's resource starts with the object's label, which ends in its unique Pulumi name
        urn = next((u for label, u in by_label.items() if finding.resource.startswith(label)), None)
        report_violation(str(finding), urn)


COMPLETENESS = StackValidationPolicy(
    name="completeness",
    description=(completeness.__doc__ or "completeness").strip().splitlines()[0],
    enforcement_level=EnforcementLevel.MANDATORY if COMPLETENESS_FAILS_PLAN else EnforcementLevel.ADVISORY,
    validate=_completeness,
    config_schema=PolicyConfigSchema(properties={"registry_mirror": {"type": "string"}}),
)

PolicyPack(
    name="sovereign-residency",
    policies=[*(_policy(r, f) for r, f in rules.RULES.items()), COMPLETENESS],
)
