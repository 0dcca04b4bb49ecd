"""Render the first two pages of an evidence PDF side by side as one PNG (docs/images/).

    .venv/bin/python scripts/evidence-pages.py reports/evidence/eu-central-prod/evidence.pdf \
        docs/images/evidence-pages-1-2.png

pdftoppm (poppler-utils, installed by `make`) draws each page; Pillow puts them side by side on a
grey ground, the way a reader sees two facing pages.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image


def main(pdf: Path, png: Path, dpi: int = 80) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["pdftoppm", "-png", "-r", str(dpi), "-f", "1", "-l", "2", str(pdf), f"{tmp}/page"],
                       check=True)  # fmt: skip
        pages = [Image.open(p).convert("RGB") for p in sorted(Path(tmp).glob("page-*.png"))]
        if len(pages) < 2:
            raise SystemExit(f"{pdf}: fewer than two pages")
        gap = 24
        width = sum(p.width for p in pages) + gap * 3
        height = max(p.height for p in pages) + gap * 2
        sheet = Image.new("RGB", (width, height), (225, 227, 230))
        x = gap
        for page in pages:
            sheet.paste(page, (x, gap))
            x += page.width + gap
        png.parent.mkdir(parents=True, exist_ok=True)
        sheet.save(png, optimize=True)
    print(png)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
