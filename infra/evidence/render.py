"""Render the evidence as Markdown and HTML (and PDF through headless Chromium).

The data-flow map is drawn by Graphviz (``dot``, a system package `make` installs) as SVG:
inlined in the HTML, a file beside the Markdown, and a Mermaid block in the Markdown for
viewers that draw Mermaid (GitLab, GitHub). Templates are Jinja2 (``templates/``), autoescaped
for HTML.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import jinja2

from gateway.errors import BadInput
from infra.evidence import dpia
from infra.evidence.model import Evidence, Hop

TEMPLATES = Path(__file__).with_name("templates")
COLOURS = {"in clear": "#b3261e", "tokenised": "#b26a00", "none": "#5f6368", "metadata": "#1a73e8"}
LEGEND = {
    "in clear": "patient data in clear (inside the boundary)",
    "tokenised": "tokenised: no identifier in clear",
    "metadata": "categories and counts only, never values",
    "none": "no patient data",
}


class RenderError(BadInput, RuntimeError):
    pass


def _id(name: str) -> str:
    return "n_" + "".join(c if c.isalnum() else "_" for c in name)


def _label(name: str) -> str:
    return name.replace("\\", "").replace('"', "'")


def dot_source(evidence: Evidence) -> str:
    """The data-flow map in Graphviz's language: nodes inside the EU boundary, edges coloured by
    what they carry."""
    nodes = sorted({h.source for h in evidence.hops} | {h.target for h in evidence.hops})
    outside = {n for h in evidence.hops for n in h.outside}
    lines = [
        "digraph dataflow {",
        '  graph [rankdir=LR, fontname="Helvetica", fontsize=11, nodesep=0.5, ranksep=0.9, pad=0.2];',
        '  node [shape=box, style="rounded,filled", fillcolor="#ffffff", fontname="Helvetica", fontsize=11];',
        '  edge [fontname="Helvetica", fontsize=9];',
        f'  subgraph cluster_boundary {{ label="EU boundary — {evidence.summary["jurisdiction"]}, stack '
        f'{evidence.stack}"; style="rounded,dashed"; color="#1e8e3e"; fontcolor="#1e8e3e";',
    ]
    for node in nodes:
        if node not in outside:
            lines.append(f'    {_id(node)} [label="{_label(node)}"];')
    lines.append("  }")
    for node in sorted(outside):  # drawn outside the boundary, in red: not in the EU, or not declared
        lines.append(
            f'  {_id(node)} [label="{_label(node)}\\n(outside the EU boundary or not declared)", '
            'color="#b3261e", fontcolor="#b3261e"];'
        )
    for number, hop in enumerate(evidence.hops, start=1):
        colour = COLOURS[hop.carries]
        style = "bold" if hop.carries == "in clear" else "solid"
        lines.append(
            f'  {_id(hop.source)} -> {_id(hop.target)} [label="{number}: {hop.carries}", color="{colour}", '
            f'fontcolor="{colour}", style={style}];'
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


def svg(evidence: Evidence) -> str:
    dot = shutil.which("dot")
    if dot is None:
        raise RenderError("Graphviz `dot` is not installed: run `make up` or `apt-get install graphviz`")
    result = subprocess.run([dot, "-Tsvg"], input=dot_source(evidence), capture_output=True, text=True,
                            timeout=60, check=False)  # fmt: skip
    if result.returncode != 0:
        raise RenderError(f"Graphviz failed: {result.stderr.strip()[:500]}")
    text = result.stdout
    return text[text.index("<svg") :]  # without the XML prologue, to inline it


def mermaid(hops: list[Hop]) -> str:
    lines = ["flowchart LR"]
    for number, hop in enumerate(hops, start=1):
        source, target = (
            f'{_id(hop.source)}["{_label(hop.source)}"]',
            f'{_id(hop.target)}["{_label(hop.target)}"]',
        )
        lines.append(f'  {source} -- "{number}: {hop.carries}" --> {target}')
    return "\n".join(lines)


def _environment(autoescape: bool) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=autoescape,  # noqa: S701 - off only for the Markdown, which no browser runs
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["md"] = lambda text: str(text).replace("|", "\\|").replace("\n", " ")
    return env


@dataclass(frozen=True)
class Rendered:
    markdown: Path
    html: Path
    svg: Path
    pdf: Path | None


def write(evidence: Evidence, out_dir: Path, pdf: bool = False) -> Rendered:
    out_dir.mkdir(parents=True, exist_ok=True)
    diagram = svg(evidence) if evidence.hops else ""
    context = {
        "e": evidence, "colours": COLOURS, "legend": LEGEND, "mermaid": mermaid(evidence.hops),
        "risks": dpia.residual_risks(evidence), "activities": dpia.activities(evidence),
        "transfers": dpia.transfers(evidence), "controller": dpia.CONTROLLER,
    }  # fmt: skip
    svg_path = out_dir / "dataflow.svg"
    if diagram:
        svg_path.write_text(diagram, encoding="utf-8")
    md_path = out_dir / "evidence.md"
    md_path.write_text(_environment(False).get_template("evidence.md.j2").render(**context), encoding="utf-8")
    html_path = out_dir / "evidence.html"
    html = _environment(True).get_template("evidence.html.j2").render(**context, svg=diagram)
    html_path.write_text(html, encoding="utf-8")
    pdf_path = print_pdf(html_path, out_dir / "evidence.pdf") if pdf else None
    return Rendered(md_path, html_path, svg_path, pdf_path)


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise RenderError("headless Chromium is not installed: run `make up` or `apt-get install chromium`")


def headless(*args: str) -> list[str]:
    return [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-dev-shm-usage", *args]  # fmt: skip


def print_pdf(html: Path, pdf: Path) -> Path:
    command = headless("--no-pdf-header-footer", f"--print-to-pdf={pdf}", html.resolve().as_uri())
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0 or not pdf.is_file():
        raise RenderError(f"Chromium could not print {html}: {result.stderr.strip()[-500:]}")
    return pdf
