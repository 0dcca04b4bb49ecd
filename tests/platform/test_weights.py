"""Model weights: fetched from an S3 server (moto, on loopback) and verified against the manifest."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from infra.weights import fetch as weights  # fetch and verify, as the Job and the init container run them
from infra.weights.manifest import WeightsError
from tests.support import S3Server, sovereign

FILES = {"config.json": b'{"model_type": "llama"}', "model-00001.safetensors": b"\x00weights" * 1000}


def manifest_for(files: dict[str, bytes]) -> str:
    return "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in sorted(files.items()))


def write_model(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / "SHA256SUMS").write_text(manifest_for(files))
    return folder


def test_verify_accepts_exactly_the_manifest(tmp_path: Path) -> None:
    assert weights.verify(write_model(tmp_path / "m", FILES)) == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: (d / "config.json").write_bytes(b"{}"), "config.json: SHA-256 does not match"),
        (lambda d: (d / "extra.bin").write_bytes(b"x"), "not in the manifest, first: extra.bin"),
        (lambda d: (d / "config.json").unlink(), "missing, first: config.json"),
        (lambda d: (d / "SHA256SUMS").write_text("abc  config.json\n"), "line 1: expected"),
        (lambda d: (d / "SHA256SUMS").write_text("0" * 64 + "  ../etc/passwd\n"), "leaves the model folder"),
        (lambda d: (d / "SHA256SUMS").unlink(), "no manifest"),
    ],
)
def test_verify_refuses_anything_else(tmp_path: Path, change, message: str) -> None:  # type: ignore[no-untyped-def]
    folder = write_model(tmp_path / "m", FILES)
    change(folder)
    with pytest.raises(WeightsError, match=message.replace("(", r"\(")):
        weights.verify(folder)


def test_verify_cli_exit_codes(tmp_path: Path) -> None:
    folder = write_model(tmp_path / "m", FILES)
    run = ["weights", "verify", "--dir", str(folder)]
    ok = sovereign(*run, timeout=60)
    assert ok.returncode == 0 and "2 files verified" in ok.stdout
    (folder / "config.json").write_bytes(b"tampered")
    bad = sovereign(*run, timeout=60)
    assert (
        bad.returncode == 1
        and bad.stderr.startswith("sovereign weights verify: ")
        and "does not match" in bad.stderr
    )


@pytest.fixture
def bucket(s3: S3Server) -> str:
    bucket_name = f"models-{uuid.uuid4().hex[:8]}"
    client = s3.client()
    client.create_bucket(Bucket=bucket_name)
    for name, data in FILES.items():
        client.put_object(Bucket=bucket_name, Key=f"llama/{name}", Body=data)
    client.put_object(Bucket=bucket_name, Key="llama/SHA256SUMS", Body=manifest_for(FILES).encode())
    client.put_object(Bucket=bucket_name, Key="llama/unlisted.bin", Body=b"not in the manifest")
    return bucket_name


def test_fetch_downloads_exactly_the_listed_files_and_verifies(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    dest = tmp_path / "llama"
    assert weights.fetch(f"s3://{bucket}/llama/", s3.url, dest) == 2
    assert sorted(p.name for p in dest.iterdir()) == ["SHA256SUMS", "config.json", "model-00001.safetensors"]


def test_fetch_of_tampered_object_fails(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    s3.client().put_object(Bucket=bucket, Key="llama/config.json", Body=b"tampered")
    with pytest.raises(WeightsError, match=r"config\.json: SHA-256 does not match"):
        weights.fetch(f"s3://{bucket}/llama/", s3.url, tmp_path / "llama")


def test_fetch_of_missing_model_names_the_object(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=rf"refused s3://{bucket}/nothing/SHA256SUMS: 404"):
        weights.fetch(f"s3://{bucket}/nothing/", s3.url, tmp_path / "x")


# -- the approved release pinned: manifest_sha256 ---------------------------------------------


def test_fetch_refuses_a_manifest_other_than_the_pinned_one_before_any_weight_file(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    dest = tmp_path / "llama"
    wrong = "0" * 64
    with pytest.raises(WeightsError, match=rf"manifest's SHA-256 is [0-9a-f]{{64}}, not .*{wrong}"):
        weights.fetch(f"s3://{bucket}/llama/", s3.url, dest, manifest_sha256=wrong)
    assert list(dest.iterdir()) == []  # no weight file, and no manifest, was written
    approved = hashlib.sha256(manifest_for(FILES).encode()).hexdigest()
    assert weights.fetch(f"s3://{bucket}/llama/", s3.url, dest, manifest_sha256=approved) == 2
    # the init container's check: the same pin passes, another is refused before hashing the weights
    assert weights.verify(dest / approved, manifest_sha256=approved) == 2
    with pytest.raises(WeightsError, match="not the approved release's"):
        weights.verify(dest / approved, manifest_sha256=wrong)
    # a refused fetch beside a fetched release leaves that release in place, still verifiable
    with pytest.raises(WeightsError, match="not the approved release's"):
        weights.fetch(f"s3://{bucket}/llama/", s3.url, dest, manifest_sha256=wrong)
    assert weights.verify(dest / approved, manifest_sha256=approved) == 2
    assert [p.name for p in dest.iterdir()] == [approved]  # the refused release left no folder


def test_a_fetch_of_another_release_leaves_exactly_that_release(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    dest = tmp_path / "llama"
    assert weights.fetch(f"s3://{bucket}/llama/", s3.url, dest) == 2
    other = {"config.json": FILES["config.json"], "model-00002.safetensors": b"\x01other" * 500}
    client = s3.client()
    for name, data in other.items():
        client.put_object(Bucket=bucket, Key=f"llama-v2/{name}", Body=data)
    client.put_object(Bucket=bucket, Key="llama-v2/SHA256SUMS", Body=manifest_for(other).encode())
    assert weights.fetch(f"s3://{bucket}/llama-v2/", s3.url, dest) == 2  # the old shard is gone
    assert sorted(p.name for p in dest.iterdir()) == ["SHA256SUMS", "config.json", "model-00002.safetensors"]


# -- each pinned release in a folder of its own: /models/<model>/<manifest_sha256>/ -----------


def put_release(s3: S3Server, bucket: str, prefix: str, files: dict[str, bytes], missing: str = "") -> str:
    """A release at s3://bucket/prefix/ (without the object *missing*, which its manifest lists);
    return its manifest's SHA-256, the pin."""
    client = s3.client()
    for name, data in files.items():
        if name != missing:
            client.put_object(Bucket=bucket, Key=f"{prefix}/{name}", Body=data)
    manifest = manifest_for(files).encode()
    client.put_object(Bucket=bucket, Key=f"{prefix}/SHA256SUMS", Body=manifest)
    return hashlib.sha256(manifest).hexdigest()


def drop(s3: S3Server, bucket: str, prefix: str) -> None:
    """Every object of the release: a fetch that downloads anything of it now fails (404)."""
    client = s3.client()
    for o in client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/").get("Contents", []):
        client.delete_object(Bucket=bucket, Key=o["Key"])


RELEASE_B = {"config.json": b'{"model_type": "llama", "v": 2}', "model-00002.safetensors": b"\x02b" * 700}


def test_a_failed_fetch_of_a_new_release_leaves_the_served_one_verifiable(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    """The reviewer's case: A served, the fetch of B fails half-way (after B's config.json, at its
    missing shard). Before the fix both went to /models/<model>, and verify of A then failed
    (SHA256SUMS.partial not in the manifest, then a digest mismatch)."""
    model_dir = tmp_path / "llama31-8b-awq"
    pin_a = hashlib.sha256(manifest_for(FILES).encode()).hexdigest()
    assert weights.fetch(f"s3://{bucket}/llama/", s3.url, model_dir, manifest_sha256=pin_a) == 2
    pin_b = put_release(s3, bucket, "llama-b", RELEASE_B, missing="model-00002.safetensors")
    with pytest.raises(WeightsError, match=r"llama-b/model-00002\.safetensors: 404"):
        weights.fetch(f"s3://{bucket}/llama-b/", s3.url, model_dir, manifest_sha256=pin_b)
    assert (model_dir / pin_b / "config.json").is_file()  # it did get half-way, in B's own folder
    assert weights.verify(model_dir / pin_a, manifest_sha256=pin_a) == 2  # the pods of A: unaffected
    # the Job's retry, once the object is there, completes B beside A
    s3.client().put_object(
        Bucket=bucket, Key="llama-b/model-00002.safetensors", Body=RELEASE_B["model-00002.safetensors"]
    )
    assert weights.fetch(f"s3://{bucket}/llama-b/", s3.url, model_dir, manifest_sha256=pin_b) == 2
    assert weights.verify(model_dir / pin_b, manifest_sha256=pin_b) == 2
    assert weights.verify(model_dir / pin_a, manifest_sha256=pin_a) == 2  # kept: the one being replaced


def test_a_rollback_to_a_release_still_on_the_volume_downloads_nothing(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    model_dir = tmp_path / "llama31-8b-awq"
    pin_a = hashlib.sha256(manifest_for(FILES).encode()).hexdigest()
    assert weights.fetch(f"s3://{bucket}/llama/", s3.url, model_dir, manifest_sha256=pin_a) == 2
    pin_b = put_release(s3, bucket, "llama-b", RELEASE_B)
    assert weights.fetch(f"s3://{bucket}/llama-b/", s3.url, model_dir, manifest_sha256=pin_b) == 2
    drop(s3, bucket, "llama")  # any download of A, even its manifest, would now fail with a 404
    assert weights.fetch(f"s3://{bucket}/llama/", s3.url, model_dir, manifest_sha256=pin_a) == 2
    assert weights.verify(model_dir / pin_a, manifest_sha256=pin_a) == 2
    assert sorted(p.name for p in model_dir.iterdir()) == sorted([pin_a, pin_b])
    # a release folder that no longer verifies is fetched again, not trusted
    (model_dir / pin_b / "config.json").write_bytes(b"tampered")
    assert weights.fetch(f"s3://{bucket}/llama-b/", s3.url, model_dir, manifest_sha256=pin_b) == 2
    assert weights.verify(model_dir / pin_b, manifest_sha256=pin_b) == 2


def test_a_fetch_keeps_the_two_releases_fetched_before_it_and_no_partial_one(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    model_dir = tmp_path / "llama31-8b-awq"
    pins = [
        put_release(s3, bucket, f"llama-{v}", {"config.json": v.encode(), "w.safetensors": v.encode() * 99})
        for v in ("v1", "v2", "v3", "v4")
    ]
    partial = put_release(s3, bucket, "llama-bad", {"a.json": b"a", "b.json": b"b"}, missing="b.json")
    unpinned = write_model(model_dir, FILES)  # an unpinned release's files at the model folder's top
    for index, (version, pin) in enumerate(zip(("v1", "v2", "v3"), pins, strict=False)):
        assert weights.fetch(f"s3://{bucket}/llama-{version}/", s3.url, model_dir, manifest_sha256=pin) == 2
        os.utime(model_dir / pin, (1_000_000 + index, 1_000_000 + index))  # fetched in this order
    with pytest.raises(WeightsError, match="404"):
        weights.fetch(f"s3://{bucket}/llama-bad/", s3.url, model_dir, manifest_sha256=partial)
    assert weights.fetch(f"s3://{bucket}/llama-v4/", s3.url, model_dir, manifest_sha256=pins[3]) == 2
    # v4, and v3 and v2 (most recently fetched before it); v1 and the incomplete folder are gone
    kept = sorted(p.name for p in model_dir.iterdir() if p.is_dir())
    assert kept == sorted(pins[1:]) and len(pins[1:]) == weights.KEEP_RELEASES + 1
    for pin in pins[1:]:
        assert weights.verify(model_dir / pin, manifest_sha256=pin) == 2
    # the unpinned release's files: untouched; its verify leaves the release folders out
    assert weights.verify(unpinned) == 2
    # an unpinned fetch into the model folder leaves the release folders alone too
    assert weights.fetch(f"s3://{bucket}/llama/", s3.url, model_dir) == 2
    assert sorted(p.name for p in model_dir.iterdir() if p.is_dir()) == kept


def test_the_pin_flag_is_checked_before_anything_runs(tmp_path: Path) -> None:
    folder = write_model(tmp_path / "m", FILES)
    run = ["weights", "verify", "--dir", str(folder), "--manifest-sha256"]
    bad = sovereign(*run, "XYZ", timeout=60)
    assert (
        bad.returncode == 2
        and "sovereign weights verify: --manifest-sha256: give the manifest's SHA-256" in bad.stderr
    )
    assert "XYZ" not in bad.stderr
    pin = hashlib.sha256(manifest_for(FILES).encode()).hexdigest()
    ok = sovereign(*run, pin, timeout=60)
    assert ok.returncode == 0, ok.stderr


def _rendered(source: str | None = None, pin: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(fetch Job, vLLM Deployment) of the example stack's model under Pulumi's mocks."""
    from tests.infra.support import plan_of, sections

    data = sections("eu-central-prod")
    model = data["platform"]["models"][0]
    if source is not None:
        model["source"] = source
    if pin is not None:
        model["manifest_sha256"] = pin
    objects = plan_of(data, stack="eu-central-prod").kubernetes_objects()
    (job,) = [
        o for o in objects if o["kind"] == "Job" and o["metadata"]["name"].startswith("weights-fetch-llama31")
    ]
    (deployment,) = [
        o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "vllm-llama31-8b-awq"
    ]
    return job, deployment


def test_a_release_change_renames_the_job_and_rolls_the_pods() -> None:
    annotation = "sovereign-llm.io/weights-release"
    source = "s3://sovereign-models/llama-3.1-8b-instruct-awq/"
    job, deployment = _rendered()
    assert job["metadata"]["name"] == "weights-fetch-llama31-8b-awq"  # no pin: the fixed name
    assert "--manifest-sha256" not in job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert deployment["spec"]["template"]["metadata"]["annotations"][annotation] == source

    pin_a, pin_b = "a" * 64, "b" * 64
    job_a, deployment_a = _rendered(pin=pin_a)
    fetch = job_a["spec"]["template"]["spec"]["containers"][0]["args"]
    assert fetch[fetch.index("--manifest-sha256") + 1] == pin_a
    (verify,) = deployment_a["spec"]["template"]["spec"]["initContainers"]
    assert verify["args"][verify["args"].index("--manifest-sha256") + 1] == pin_a
    assert (
        deployment_a["spec"]["template"]["metadata"]["annotations"][annotation] == f"{source}@sha256:{pin_a}"
    )
    name_a = job_a["metadata"]["name"]
    assert name_a.startswith("weights-fetch-llama31-8b-awq-") and len(name_a) <= 63

    # a rollback: another source and manifest → another Job name, another pod template
    job_b, deployment_b = _rendered(source="s3://sovereign-models/llama31-8b-awq-v1/", pin=pin_b)
    assert job_b["metadata"]["name"] != name_a
    annotations = deployment_b["spec"]["template"]["metadata"]["annotations"]
    assert annotations[annotation] == f"s3://sovereign-models/llama31-8b-awq-v1/@sha256:{pin_b}"
    assert deployment_b["spec"]["template"] != deployment_a["spec"]["template"]


def test_vllm_and_its_verify_use_the_release_folder_the_job_fetches_into() -> None:
    job, deployment = _rendered()  # no pin: the model's folder, as before
    spec = deployment["spec"]["template"]["spec"]
    (vllm,) = spec["containers"]
    (verify,) = spec["initContainers"]
    fetch = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert fetch[fetch.index("--dest") + 1] == "/models/llama31-8b-awq"
    assert vllm["args"][vllm["args"].index("--model") + 1] == "/models/llama31-8b-awq"
    assert verify["args"][verify["args"].index("--dir") + 1] == "/models/llama31-8b-awq"

    pin = "c" * 64
    job, deployment = _rendered(pin=pin)
    spec = deployment["spec"]["template"]["spec"]
    (vllm,) = spec["containers"]
    (verify,) = spec["initContainers"]
    fetch = job["spec"]["template"]["spec"]["containers"][0]["args"]
    # the Job gets the model's folder and writes the release into <dest>/<pin> (weights.fetch)
    assert fetch[fetch.index("--dest") + 1] == "/models/llama31-8b-awq"
    assert fetch[fetch.index("--manifest-sha256") + 1] == pin
    folder = weights.release_folder(Path("/models/llama31-8b-awq"), pin)
    assert folder == Path(f"/models/llama31-8b-awq/{pin}")
    assert vllm["args"][vllm["args"].index("--model") + 1] == f"/models/llama31-8b-awq/{pin}"
    assert verify["args"][verify["args"].index("--dir") + 1] == f"/models/llama31-8b-awq/{pin}"
    # the name clients (the gateway) ask for does not change with the folder
    assert vllm["args"][vllm["args"].index("--served-model-name") + 1] == "llama31-8b-awq"


def test_pulumi_leaves_the_replica_count_to_keda(monkeypatch: pytest.MonkeyPatch) -> None:
    """KEDA's HPA owns spec.replicas once the ScaledObject exists: a `pulumi up` (a rollback's)
    must not reset it to min_replicas, nor conflict with it under server-side apply. The plan's
    monitor does not record resource options, so this one also keeps each registration's
    ignoreChanges (RegisterResourceRequest.ignoreChanges, what the engine receives)."""
    from infra import plan
    from tests.infra.support import plan_of, sections

    ignored: dict[str, list[str]] = {}

    class Monitor(plan.RecordingMonitor):
        def RegisterResource(self, request: Any) -> Any:  # the gRPC method's name
            response = super().RegisterResource(request)
            ignored[response.urn] = list(request.ignoreChanges)
            return response

    monkeypatch.setattr(plan, "RecordingMonitor", Monitor)
    data = sections("eu-central-prod")
    model = data["platform"]["models"][0]
    model["manifest_sha256"] = "d" * 64
    planned = plan_of(data, stack="eu-central-prod")
    (deployment,) = [
        r for r in planned.resources
        if r.type == "kubernetes:apps/v1:Deployment" and r.inputs["metadata"]["name"] == "vllm-llama31-8b-awq"
    ]  # fmt: skip
    assert ignored[deployment.urn] == ["spec.replicas"]
    # created with min_replicas (so it does not start at the API's default of 1 before KEDA scales)
    assert deployment.inputs["spec"]["replicas"] == model.get("min_replicas", 1)
    (scaled,) = [
        o for o in planned.kubernetes_objects()
        if o["kind"] == "ScaledObject" and o["spec"]["scaleTargetRef"]["name"] == "vllm-llama31-8b-awq"
    ]  # fmt: skip
    assert scaled["spec"]["minReplicaCount"] == deployment.inputs["spec"]["replicas"]
