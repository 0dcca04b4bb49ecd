"""Stream records and run metadata as ``samples.json`` v2 holds them, for the evaluation tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from loadtests import sla


def stream(
    use_case: str = "patient-support",
    *,
    ok: bool = True,
    ttft: float = 100.0,
    tpot: float = 10.0,
    tokens: int = 11,
    e2e: float | None = None,
    itl: list[float] | None = None,
    start: float = 20.0,
    warm_up: bool = False,
    reused: bool = True,
    connect: float | None = None,
    tls: float | None = None,
    scheduled: float | None = None,
) -> dict[str, Any]:
    if not ok:
        return {
            "use_case": use_case,
            "request_id": "f" * 32,
            "start": start,
            "end": start + 0.01,
            "ok": False,
            "status": 502,
            "error": "HTTP 502 upstream_error",
            "ttft_ms": None,
            "itl_ms": [],
            "tpot_ms": None,
            "e2e_ms": None,
            "output_tokens": None,
            "prompt_tokens": None,
            "connect_ms": connect,
            "tls_ms": tls,
            "reused": reused,
            "scheduled": scheduled,
            "warm_up": warm_up,
        }
    end_ms = ttft + tpot * (tokens - 1) if e2e is None else e2e
    return {
        "use_case": use_case,
        "request_id": "a" * 32,
        "start": start,
        "end": start + end_ms / 1000,
        "ok": True,
        "status": 200,
        "error": None,
        "ttft_ms": ttft,
        "itl_ms": [tpot] * (tokens - 1) if itl is None else itl,
        "tpot_ms": tpot if tokens > 1 else None,
        "e2e_ms": end_ms,
        "output_tokens": tokens,
        "prompt_tokens": 40,
        "connect_ms": connect,
        "tls_ms": tls,
        "reused": reused,
        "scheduled": scheduled,
        "warm_up": warm_up,
    }


def run(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "target": "http://127.0.0.1:8080", "profile": "t", "users": 2, "spawn_rate": 1.0, "run_time": "70s",
        "processes": 0, "use_cases": ["patient-support"], "workload": "healthcare-default", "seed": 7,
        "stamps": "kernel", "arrival": {"mode": "closed", "rate": None, "max_in_flight": None},
        "started": 0.0, "ended": 70.0, "measure_from": 10.0, "warm_up_s": 10.0, "scheduled": 0, "sent": 0,
        "dropped": 0, "commit": "0" * 40, "dirty": False, "locust_version": "2", "python": "3.11",
        "hostname": "loadgen",
    }  # fmt: skip
    return {**base, **kw}


def profile(**kw: Any) -> sla.Profile:
    base: dict[str, Any] = {
        "name": "t", "description": "d", "source": "s", "max_error_ratio": 0.01, "min_requests": 1,
        "thresholds": [{"metric": "ttft_ms", "percentile": 99, "limit": 500, "source": "a rule"},
                       {"metric": "tpot_ms", "percentile": 99, "limit": 30, "source": "a rule"}],
    }  # fmt: skip
    return sla.Profile(**{**base, **kw})


def write_run(folder: Path, streams: list[dict[str, Any]], meta: dict[str, Any], prof: sla.Profile) -> Path:
    """A run folder as the suite writes it: sla.json (the verdict) and samples.json v2."""
    folder.mkdir(parents=True, exist_ok=True)
    verdict = sla.evaluate(prof, streams, meta)
    (folder / "sla.json").write_text(json.dumps(verdict.to_json()))
    (folder / "samples.json").write_text(json.dumps({"version": 2, "run": meta, "streams": streams}))
    return folder
