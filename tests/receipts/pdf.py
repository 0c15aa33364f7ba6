"""Reading PDFs back for assertions (poppler's pdftotext) and turning a page into a PNG for people to look at."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "receipts"


def pdf_text(pdf: bytes) -> str:
    """The text of every page, with runs of spaces and line breaks collapsed to one space."""
    with tempfile.NamedTemporaryFile(suffix=".pdf") as handle:
        handle.write(pdf)
        handle.flush()
        text = subprocess.run(
            ["pdftotext", "-layout", "-enc", "UTF-8", handle.name, "-"], check=True, capture_output=True
        ).stdout.decode()
    return " ".join(text.split())


def page_count(pdf: bytes) -> int:
    from io import BytesIO

    from pypdf import PdfReader

    return len(PdfReader(BytesIO(pdf)).pages)


def page_png(pdf: bytes, name: str, *, page: int = 1, dpi: int = 60) -> Path:
    """Page `page` as tests/artifacts/receipts/<name>.png (kept for people to look at; gitignored)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(suffix=".pdf") as handle:
        handle.write(pdf)
        handle.flush()
        prefix = ARTIFACTS / name
        subprocess.run(
            [
                "pdftoppm",
                "-png",
                "-r",
                str(dpi),
                "-f",
                str(page),
                "-l",
                str(page),
                "-singlefile",
                handle.name,
                str(prefix),
            ],
            check=True,
            capture_output=True,
        )
    return prefix.with_suffix(".png")
