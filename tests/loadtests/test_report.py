"""Reports from stream records: the PNG plots (headless), the LLM metrics table and CSV that
agree with sla.json, and one self-contained HTML page with the verdict and the plots."""

from __future__ import annotations

import base64
import csv
import re
from pathlib import Path

from loadtests import report, sla
from tests.loadtests.streams import profile, run, stream

PNG = b"\x89PNG\r\n\x1a\n"


def streams() -> list[dict[str, object]]:
    out = [stream("patient-support", ttft=100.0 + i, start=12.0 + i, reused=i > 0, connect=None if i else 1.5)
           for i in range(30)]  # fmt: skip
    out += [stream("catalog-search", ttft=300.0, start=15.0 + i) for i in range(10)]
    out += [stream("catalog-search", ok=False, start=40.0), stream(ttft=9000.0, warm_up=True, start=2.0)]
    return out


def open_run() -> dict[str, object]:
    return run(arrival={"mode": "poisson", "rate": 0.7, "max_in_flight": 8}, scheduled=42, sent=41)


def test_plots_are_written_headless_from_stream_records(tmp_path: Path) -> None:
    written = report.plots(streams(), open_run(), tmp_path)
    names = sorted(p.name for p in written)
    assert names == ["e2e_ms.png", "itl_ms.png", "latency_cdf.png", "rate.png", "tpot_ms.png", "ttft_ms.png"]
    assert all(p.read_bytes().startswith(PNG) for p in written)


def test_a_metric_without_values_gets_no_plot(tmp_path: Path) -> None:
    one_token = [stream(tokens=1, start=20.0 + i) for i in range(3)]  # no gaps, no TPOT
    names = {p.name for p in report.plots(one_token, run(), tmp_path)}
    assert "itl_ms.png" not in names and "tpot_ms.png" not in names and "ttft_ms.png" in names
    assert report.plots([], run(), tmp_path / "none") == []


def test_windows_group_by_time_from_the_run_start() -> None:
    pairs = [(10.0, 1.0), (12.0, 2.0), (16.0, 3.0)]
    assert report.windows(pairs, 5.0, start=10.0) == [(0.0, [1.0, 2.0]), (5.0, [3.0])]
    assert report.windows(pairs, 5.0, start=0.0) == [(10.0, [1.0, 2.0]), (15.0, [3.0])]


def test_llm_rows_and_csv_agree_with_the_verdict(tmp_path: Path) -> None:
    verdict = sla.evaluate(profile(max_error_ratio=1), streams(), open_run())
    rows = report.llm_rows(verdict)
    assert [r["use case"] for r in rows] == ["catalog-search", "patient-support", "Aggregated"]
    assert [(r["streams"], r["failures"]) for r in rows] == [(11, 1), (30, 0), (41, 1)]
    assert rows[-1]["streams"] == verdict.requests and rows[-1]["failures"] == verdict.failures
    assert rows[0]["ttft p50 (ms)"] == 300.0 and rows[1]["ttft p99 (ms)"] == 129.0
    path = report.write_llm_csv(verdict, tmp_path / "llm_stats.csv")
    with path.open() as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0]) == list(report.COLUMNS)
    assert [(r["use case"], r["streams"]) for r in table] == [
        (r["use case"], str(r["streams"])) for r in rows
    ]
    assert float(table[-1]["output tokens/s"]) == round(verdict.system_output_tokens_per_s or 0, 4)


def test_the_html_report_is_one_self_contained_page(tmp_path: Path) -> None:
    records = streams()
    records.append(stream("<script>alert(1)</script>", start=30.0))  # escaped, never run
    verdict = sla.evaluate(profile(max_error_ratio=1), records, open_run())
    path = report.write_html(verdict, records, open_run(), tmp_path / "sla.html")
    html = path.read_text()
    assert f'SLA profile t: <span class="{"ok" if verdict.passed else "miss"}">' in html
    for o in verdict.outcomes:
        assert o.label.replace(">", "&gt;").replace("<", "&lt;") in html
    assert "a rule" in html  # each threshold's source
    assert "arrival rate: configured 0.7, asked 0.70 req/s, achieved 0.68 req/s" in html
    assert "poisson at 0.7 req/s, at most 8 in flight" in html
    assert "&lt;script&gt;" in html and "<script>" not in html
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) == 6 and all(base64.b64decode(i).startswith(PNG) for i in images)
    assert not re.search(r'(src|href)="(https?:)?//', html)  # nothing fetched from elsewhere


def test_the_html_report_reuses_plots_already_drawn(tmp_path: Path) -> None:
    verdict = sla.evaluate(profile(), streams()[:30], run())
    drawn = report.plots(streams()[:30], run(), tmp_path)
    html = report.write_html(verdict, [], run(), tmp_path / "sla.html", images=drawn).read_text()
    assert html.count("data:image/png;base64,") == len(drawn)
    assert "closed loop" in html


def test_a_metric_only_the_warm_up_has_gets_no_plot(tmp_path: Path) -> None:
    records = [stream(warm_up=True, start=2.0), stream(tokens=1, start=20.0)]  # TPOT in the warm-up only
    names = {p.name for p in report.plots(records, run(), tmp_path)}
    assert "tpot_ms.png" not in names and "ttft_ms.png" in names
