"""Policy pack for real previews and updates: ``pulumi preview --policy-pack infra/policy``.

Every rule of ``rules.py`` as a mandatory resource validation policy, so a real deploy is held
to exactly what ``sovereign plan`` checks offline.
"""

from pulumi_policy import (
    EnforcementLevel,
    PolicyPack,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
)

from infra.policy import rules


def _policy(rule: str, fn: rules.Rule) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        for message in fn(args.resource_type, args.name, args.props):
            report_violation(message, None)

    return ResourceValidationPolicy(
        name=rule,
        description=(fn.__doc__ or rule).strip(),
        enforcement_level=EnforcementLevel.MANDATORY,
        validate=validate,
    )


PolicyPack(name="sovereign-residency", policies=[_policy(r, f) for r, f in rules.RULES.items()])
