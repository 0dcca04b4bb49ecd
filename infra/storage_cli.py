"""``sovereign bootstrap-backend`` and ``sovereign models``: the stack's EU object storage.

sovereign bootstrap-backend --stack NAME     state, model and audit-archive buckets; login lines
sovereign models import --stack S --model M --from DIR    signed manifest, resumable upload
sovereign models verify --stack S --model M  signature and every object against the manifest
sovereign models public-key --out FILE       the signing key's public half, for offline checks
sovereign models releases --stack S --model M    the approved releases, newest first, the pinned one marked
sovereign models rollback --stack S --model M --reason TEXT [--to SHA256] [--no-deploy]
                                             re-verify the previously deployed release, pin it, record it,
                                             pulumi up, record the deploy
sovereign models record-deploy --stack S --model M   record that the pinned release runs (after pulumi up)
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from infra.paths import STACKS_DIR, add_stack_options


def _stack(args: argparse.Namespace) -> Any:
    from infra import config

    return config.load(Path(args.stacks_dir), args.stack)


def openbao_access(args: argparse.Namespace) -> tuple[str, str]:
    """(address, token) from the flags, else VAULT_ADDR / VAULT_TOKEN (as the bao CLI reads them)."""
    from infra.weights.manifest import ModelsError

    address = args.openbao_address or os.environ.get("VAULT_ADDR")
    if not address:
        raise ModelsError("no OpenBao address: pass --openbao-address URL or set VAULT_ADDR")
    if args.token_file:
        try:
            token = Path(args.token_file).read_text(encoding="utf-8").strip()
        except OSError:
            raise ModelsError(f"--token-file {args.token_file}: cannot be read") from None
    else:
        token = os.environ.get("VAULT_TOKEN", "")
    if not token:
        raise ModelsError("no OpenBao token: pass --token-file FILE or set VAULT_TOKEN")
    return address, token


def cmd_bootstrap_backend(args: argparse.Namespace) -> int:
    from infra import objectstore

    cfg = _stack(args)
    reports = objectstore.bootstrap(cfg, copy_profile=args.copy_profile)
    print(f"stack {cfg.stack}: buckets on {objectstore.endpoint_url(cfg.endpoints.object_storage)}")
    for report in reports:
        print("\n".join(report.lines()))
    print("\nState and secrets inside the boundary (once per stack):")
    print("\n".join(f"  {line}" for line in objectstore.login_lines(cfg)))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from infra.weights import bucket, manifest, rollback, transit

    if args.models_command == "public-key":
        address, token = openbao_access(args)
        keys = transit.public_keys(address, token, args.key)
        args.out.write_text(manifest.dump_public_keys(keys), encoding="utf-8")
        print(f"sovereign models: {len(keys)} public key version(s) of {args.key!r} in {args.out}")
        return 0
    cfg = _stack(args)
    if args.models_command == "import":
        return _models_import(args, cfg)
    if args.models_command == "releases":
        return _models_releases(args, cfg)
    if args.models_command == "rollback":
        return _models_rollback(args, cfg)
    if args.models_command == "record-deploy":
        address, token = openbao_access(args)
        done = rollback.record_deploy(cfg, args.model, transit.identity(address, token))
        print(f"sovereign models: {args.model}: {done.source} (manifest {done.manifest_sha256[:12]}…) "
              f"recorded as deployed to stack {cfg.stack}: {done.key}")  # fmt: skip
        return 0
    if args.public_key:
        keys = manifest.load_public_keys(args.public_key)
    else:
        address, token = openbao_access(args)
        keys = transit.public_keys(address, token, cfg.storage.manifest_signing_key)
    count = bucket.verify_model(cfg, args.model, keys)
    print(f"sovereign models: {args.model}: signature valid, {count} file(s) match the signed manifest")
    return 0


def _models_import(args: argparse.Namespace, cfg: Any) -> int:
    from infra.weights import manifest, stack_file, upload

    address, token = openbao_access(args)
    result = upload.import_model(
        cfg, args.model, args.source, openbao_address=address, token=token,
        state_dir=args.state_dir, part_size=args.part_size_mib * manifest.MIB, source=args.to,
    )  # fmt: skip
    print(
        f"sovereign models: {args.model}: {result.uploaded} file(s) uploaded ({result.bytes} bytes), "
        f"{result.skipped} already there, {result.parts_resumed} part(s) resumed; manifest signed "
        f"with {cfg.storage.manifest_signing_key} v{result.key_version}"
    )
    release = result.release
    if release is None:  # import_model always records (or finds) the release
        raise manifest.ModelsError("the import recorded no release")
    print(f"release: {release.source} manifest_sha256 {release.manifest_sha256} (recorded: {release.key})")
    if args.pin:
        path = stack_file.pin(
            Path(args.stacks_dir), cfg.stack, args.model, release.source, release.manifest_sha256
        )
        print(
            f"pinned in {path}: review the diff, commit it, deploy, then `sovereign models record-deploy` "
            "(docs/runbooks/model-change.md)"
        )
    else:
        print(
            f"pin it: platform.models[{args.model}].source: {release.source} and manifest_sha256: "
            f"{release.manifest_sha256} in stacks/Pulumi.{cfg.stack}.yaml (or rerun with --pin)"
        )
    return 0


def _models_releases(args: argparse.Namespace, cfg: Any) -> int:
    from infra.weights.bucket import model_config
    from infra.weights.releases import ReleaseLog

    m = model_config(cfg, args.model)
    log = ReleaseLog(cfg, args.model)
    releases = log.releases()
    if not releases:
        print(f"sovereign models: no releases of {args.model} recorded in {log.url()}")
        return 0
    print(f"releases of {args.model} in {log.url()}, newest first ('*' = pinned by stack {cfg.stack}):")
    for r in releases:
        mark = "*" if (r.source, r.manifest_sha256) == (m.source, m.manifest_sha256) else " "
        who = r.who.get("display_name") or r.who.get("entity_id") or "?"
        print(f"{mark} {r.at}  {r.manifest_sha256}  {r.source}  by {who}")
    if m.manifest_sha256 is None:
        print(f"(stack {cfg.stack} pins none: platform.models[{args.model}].manifest_sha256 is not set)")
    for rb in log.rollbacks():
        who = rb.who.get("display_name") or rb.who.get("entity_id") or "?"
        print(
            f"rollback {rb.at}: {rb.from_manifest_sha256[:12]} -> {rb.to_manifest_sha256[:12]} by {who} "
            f"(reason in {rb.key})"
        )
    for d in log.deploys():
        who = d.who.get("display_name") or d.who.get("entity_id") or "?"
        print(f"deployed {d.at}: {d.manifest_sha256[:12]} to stack {cfg.stack} ({d.how}) by {who}")
    return 0


def _models_rollback(args: argparse.Namespace, cfg: Any) -> int:
    from infra.weights import manifest, releases, rollback, transit

    reason = rollback.check_reason(args.reason)  # before anything else is asked for
    stacks_dir = Path(args.stacks_dir)
    work_dir = None if args.no_deploy else rollback.require_pulumi_cli(stacks_dir, cfg.stack)
    address, token = openbao_access(args)
    who = transit.identity(address, token)
    if args.public_key:
        keys = manifest.load_public_keys(args.public_key)
    else:
        keys = transit.public_keys(address, token, cfg.storage.manifest_signing_key)
    done = rollback.rollback(cfg, stacks_dir, args.model, reason=reason, keys=keys, who=who, to=args.to)
    plan = done.plan
    print(
        f"sovereign models: {args.model}: {plan.target.source} (manifest "
        f"{plan.target.manifest_sha256[:12]}…, imported {plan.target.at}) re-verified: signature valid, "
        f"{plan.files} file(s) match"
    )
    if plan.resume is not None:
        print(
            f"{done.stack_file} pins it already: the rollback {done.record.key} has no deploy recorded "
            "after it, so it is deployed now, not rolled back one release further (--to SHA256 chooses "
            "another)"
        )
    else:
        was = f"{plan.current.source}, {plan.current.manifest_sha256[:12]}…"
        print(f"pinned in {done.stack_file} (was {was})")
        print(f"rollback recorded: {done.record.key}")
    print(
        f"commit {done.stack_file.name} (if not yet): a `pulumi up` from a checkout without this change "
        "would deploy the release rolled back from again"
    )
    if work_dir is None:
        print(
            f"not deployed (--no-deploy); deploy with:\n  {rollback.deploy_command(stacks_dir, cfg.stack)}\n"
            f"then record it: sovereign models record-deploy --stack {cfg.stack} --model {args.model}"
        )
        return 0
    outcome = rollback.deploy(work_dir, cfg.stack, lambda line: print(line, end=""))
    print(f"sovereign models: pulumi up --stack {cfg.stack}: {outcome}")
    if outcome != "succeeded":
        return 1
    deployed = releases.ReleaseLog(cfg, args.model).record_deploy(plan.target, "rollback", who)
    print(f"deploy recorded: {deployed.key}")
    return 0


def add_archive_flags(parser: argparse.ArgumentParser, required: bool = False) -> None:
    """Where the archive is: the stack's storage.audit_archive, or the gateway settings' audit.archive."""
    where = parser.add_mutually_exclusive_group(required=required)
    where.add_argument("--stack", help="region stack whose storage.audit_archive holds the archive")
    where.add_argument("--gateway-config", type=Path, help="gateway settings with audit.archive (in the pod)")
    parser.add_argument("--stacks-dir", default=str(STACKS_DIR))
    parser.add_argument(
        "--chain", help="the trail's name in the archive (default: the gateway pod's host name)"
    )


def _archive(args: argparse.Namespace) -> Any:
    from infra import audit_archive

    if args.stack:
        return audit_archive.from_stack(_stack(args), args.chain or audit_archive.default_chain())
    from gateway.settings import load_settings

    settings = load_settings(args.gateway_config)
    if settings.audit.archive is None:
        from infra.objectstore import StorageError

        raise StorageError(f"--gateway-config {args.gateway_config}: audit.archive is not set")
    return audit_archive.from_settings(settings.audit.archive, args.chain)


def archived_segments(args: argparse.Namespace) -> list[Any]:
    """The archived segments for ``audit verify``; none without --stack / --gateway-config."""
    if not (args.stack or args.gateway_config):
        return []
    from infra import audit_archive

    return audit_archive.segments(_archive(args))


def cmd_audit_ship(args: argparse.Namespace) -> int:
    from infra import audit_archive

    trail = Path(args.file)
    archive = _archive(args)
    if args.every:

        def report(line: str) -> None:
            print(f"sovereign audit ship: {line}", flush=True)

        audit_archive.ship_every(trail, archive, args.every, args.prune, report, args.heartbeat)
    result = audit_archive.ship(trail, archive, prune=args.prune)
    for url in result.shipped:
        print(f"shipped {url}")
    print(
        f"sovereign audit ship: {len(result.shipped)} segment(s) shipped to {archive.url()}, "
        f"{result.already} already there, {len(result.pruned)} local copies pruned"
    )
    return 0


def _openbao_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--openbao-address", help="OpenBao URL (default: VAULT_ADDR)")
    parser.add_argument("--token-file", help="file with an OpenBao token (default: VAULT_TOKEN)")


def add_parser(sub: Any) -> None:
    boot = sub.add_parser(
        "bootstrap-backend", help="create the stack's state, model and audit-archive buckets (idempotent)"
    )
    add_stack_options(boot)
    boot.add_argument(
        "--copy-profile",
        help="AWS profile with a key of the OpenBao snapshot copy's object storage "
        "(storage.openbao_snapshot_copy; default: the same credentials as the stack's)",
    )
    boot.set_defaults(func=cmd_bootstrap_backend)

    models = sub.add_parser("models", help="approved model weights in the EU model bucket, signed manifests")
    msub = models.add_subparsers(dest="models_command", required=True)
    imp = msub.add_parser("import", help="hash, sign and upload an approved model folder (resumable)")
    ver = msub.add_parser("verify", help="check the manifest signature and every object in the bucket")
    rel = msub.add_parser(
        "releases", help="the model's approved releases, newest first; the pinned one marked"
    )
    rol = msub.add_parser(
        "rollback",
        help="re-verify the previously deployed release, pin it in the stack file, record it, deploy",
    )
    dep = msub.add_parser(
        "record-deploy",
        help="record that the release the stack file pins runs in the stack (after your pulumi up)",
    )
    for p in (imp, ver, rel, rol, dep):
        add_stack_options(p)
        p.add_argument("--model", required=True, help="a platform.models name of the stack")
    for p in (imp, ver, rol, dep):
        _openbao_flags(p)
    imp.add_argument("--from", dest="source", required=True, type=Path, help="the approved model's folder")
    imp.add_argument(
        "--to", help="the release's own prefix in the model's bucket (default: the model's source)"
    )
    imp.add_argument(
        "--pin", action="store_true", help="set the model's source and manifest_sha256 in the stack file"
    )
    rol.add_argument(
        "--reason",
        required=True,
        help="why (change request id, symptom; at most 500 characters, no patient data)",
    )
    rol.add_argument(
        "--to", help="the release's manifest SHA-256 (default: the one deployed before the pinned one)"
    )
    rol.add_argument("--no-deploy", action="store_true", help="pin and record only; print the deploy command")
    rol.add_argument("--public-key", type=Path, help="public key file (`models public-key`) to verify with")
    imp.add_argument("--part-size-mib", type=int, default=64, help="multipart part size (at least 5)")
    imp.add_argument(
        "--state-dir",
        type=Path,
        default=Path(".sovereign") / "uploads",
        help="where resumable uploads are noted",
    )
    ver.add_argument(
        "--public-key", type=Path, help="public key file (`models public-key`) instead of OpenBao"
    )
    pub = msub.add_parser("public-key", help="write the manifest signing key's public half to a file")
    _openbao_flags(pub)
    pub.add_argument("--key", default="model-manifests", help="transit key (storage.manifest_signing_key)")
    pub.add_argument("--out", type=Path, required=True)
    for p in (imp, ver, pub, rel, rol, dep):
        p.set_defaults(func=cmd_models)
