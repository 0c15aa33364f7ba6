"""Documents to HTML (Jinja2) and PDF (weasyprint). The only module that imports weasyprint.

Pure functions of a document's content: the same content gives the same bytes (weasyprint writes no dates or random
identifiers unless asked, and the HTML carries no `dcterms.created`). The stylesheet and the font configuration are
parsed once per thread and reused: it saves about a quarter of the time of a one-page receipt (stack-notes §2a),
and weasyprint objects are not shared across threads.
"""

from __future__ import annotations

import atexit
import base64
import ctypes
import ctypes.util
import datetime as dt
import io
import os
import shutil
import threading
import weakref
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from core.money import format_pence, gift_aid_on
from receipts.documents import AnyDocument

TEMPLATES_DIR = Path(__file__).parent / "templates"
STYLESHEET = TEMPLATES_DIR / "documents.css"
DEFAULT_LOGO = TEMPLATES_DIR / "logo.svg"

TITLES = {
    "gift_receipt": ("Receipt for your gift", "Receipt number"),
    "sale_receipt": ("Sale receipt", "Receipt number"),
    "annual_statement": ("Annual statement of your gifts", "Statement number"),
    "oral_confirmation": ("Confirmation of your Gift Aid declaration", "Letter number"),
    "correction": ("Corrected receipt", "Correction number"),
}


@dataclass(frozen=True)
class DuplicateMark:
    """A copy made after the original: printed "DUPLICATE" with the day it was made."""

    copied_on: dt.date


def _ukdate(value: dt.date | None) -> str:
    return "" if value is None else value.strftime("%d/%m/%Y")


def _percent(basis_points: int) -> str:
    whole, rest = divmod(basis_points, 100)
    return f"{whole}%" if rest == 0 else f"{whole}.{rest:02d}".rstrip("0") + "%"


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["money"] = lambda pence, currency="GBP": format_pence(int(pence), currency)
    env.filters["ukdate"] = _ukdate
    env.filters["gift_aid"] = gift_aid_on
    env.filters["percent"] = _percent
    return env


@lru_cache(maxsize=8)
def logo_markup(path: str = "") -> Markup:
    """The charity's logo (`[charity] logo_path`: SVG inlined, PNG/JPEG as a data URI), or the default one."""
    logo = Path(path) if path else DEFAULT_LOGO
    if logo.suffix.lower() == ".svg":
        text = logo.read_text(encoding="utf-8")
        start = text.find("<svg")
        return Markup(text[start:] if start >= 0 else text)  # noqa: S704 - our own or the operator's logo file
    mime = "image/png" if logo.suffix.lower() == ".png" else "image/jpeg"
    data = base64.b64encode(logo.read_bytes()).decode()
    return Markup(f'<img src="data:{mime};base64,{data}" alt="">')  # noqa: S704


def render_html(document: AnyDocument, *, logo: Markup | None = None, duplicate: DuplicateMark | None = None) -> str:
    title, number_label = TITLES[document.kind]
    template = _environment().get_template(f"{document.kind}.html")
    return template.render(
        doc=document,
        title=title,
        number_label=number_label,
        logo=logo if logo is not None else logo_markup(),
        duplicate=duplicate,
    )


# Each FontConfiguration copies the @font-face fonts (1.4 MB) into a temporary folder of its own and removes it only
# when collected. One still alive at exit (frozen by gc.freeze(), or collected after weasyprint's modules are torn
# down, when its removal fails) would leave its copy in /tmp for every process that rendered; so they go at exit.
_FONT_CONFIGS: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


@atexit.register
def _remove_font_copies() -> None:
    for font_config, pid in list(_FONT_CONFIGS.items()):
        if pid != os.getpid():
            continue  # made before a fork: the folder is the parent's, still in use there
        folder, font_config._folder = getattr(font_config, "_folder", None), None
        if folder:
            shutil.rmtree(folder, ignore_errors=True)


def font_configuration() -> Any:
    """A weasyprint FontConfiguration whose copy of the packaged fonts is removed when this process exits."""
    from weasyprint.text.fonts import FontConfiguration

    font_config = FontConfiguration()
    _FONT_CONFIGS[font_config] = os.getpid()
    return font_config


class _Weasy(threading.local):
    """Per-thread weasyprint state: the parsed stylesheet and its font configuration, which holds the packaged fonts
    the stylesheet's @font-face rules loaded (read once per thread, not per document)."""

    def __init__(self) -> None:
        self.ready = False
        self.stylesheet: Any = None
        self.font_config: Any = None

    def load(self) -> None:
        from weasyprint import CSS

        self.font_config = font_configuration()
        # base_url: the @font-face rules load the packaged fonts (receipts/fonts/) relative to the stylesheet.
        self.stylesheet = CSS(
            string=STYLESHEET.read_text(encoding="utf-8"), base_url=STYLESHEET, font_config=self.font_config
        )
        self.ready = True


_weasy = _Weasy()

# One render at a time in a process. weasyprint on several threads of one process costs each document about twice
# the CPU (the GIL, and the C libraries it calls contending): one worker process with 4 threads, `giving worker`'s
# default, gave 12.1-13.0 receipts/s without this lock and 19.5-19.9 with it (bench/receipts --threads 4). The
# other threads still read and write the database meanwhile; processes, not threads, render in parallel.
_RENDERING = threading.Lock()


def html_to_pdf(html: str) -> bytes:
    """One HTML document to PDF bytes, with the reused stylesheet and fonts."""
    from weasyprint import HTML

    with _RENDERING:
        if not _weasy.ready:
            _weasy.load()
        pdf = HTML(string=html, base_url=str(TEMPLATES_DIR)).write_pdf(
            stylesheets=[_weasy.stylesheet], font_config=_weasy.font_config
        )
    assert pdf is not None
    return bytes(pdf)


def render_pdf(document: AnyDocument, *, logo: Markup | None = None, duplicate: DuplicateMark | None = None) -> bytes:
    return html_to_pdf(render_html(document, logo=logo, duplicate=duplicate))


# A postal batch is laid out and written this many documents at a time, then the parts are joined (pypdf): weasyprint
# keeps a document's whole layout (about 1 MB for a receipt) until its PDF is written, so a batch written at once
# held all of them (500 receipts: about 0.5 GB). A smaller part repeats the fonts more often (each part embeds its
# own subset: a 200-receipt batch is 544 KB in parts of 25 rather than 381 KB).
BATCH_PART = 25


def render_batch(documents: list[tuple[AnyDocument, DuplicateMark | None]], *, logo: Markup | None = None) -> bytes:
    """Several documents as one PDF (the postal batch): each starts on a new page and keeps its own page numbers.
    Written `BATCH_PART` documents at a time, so its memory does not grow with the batch."""
    if not documents:
        raise ValueError("a batch needs at least one document")
    if len(documents) <= BATCH_PART:
        return _render_part(documents, logo)
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    for start in range(0, len(documents), BATCH_PART):
        writer.append(PdfReader(io.BytesIO(_render_part(documents[start : start + BATCH_PART], logo))))
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _render_part(documents: list[tuple[AnyDocument, DuplicateMark | None]], logo: Markup | None) -> bytes:
    from weasyprint import HTML

    # Not under the render lock: a batch of up to 500 documents would hold up every other render in the process (and
    # jobs with a 60 s limit, such as sending a copy) for tens of seconds. Batches are rare, so overlapping with other
    # renders costs less than making them wait.
    if not _weasy.ready:
        _weasy.load()
    rendered = [
        HTML(string=render_html(d, logo=logo, duplicate=mark), base_url=str(TEMPLATES_DIR)).render(
            stylesheets=[_weasy.stylesheet], font_config=_weasy.font_config
        )
        for d, mark in documents
    ]
    pages = [page for doc in rendered for page in doc.pages]
    pdf = rendered[0].copy(pages).write_pdf()
    assert pdf is not None
    return bytes(pdf)


# --- start-up check ------------------------------------------------------------------------------------------------

HARFBUZZ_SUBSET_NAMES = ("libharfbuzz-subset.so.0", "libharfbuzz-subset.0.dylib", "libharfbuzz-subset-0.dll")


def harfbuzz_subset_available() -> bool:
    """Whether weasyprint will find libharfbuzz-subset (checked without importing weasyprint, which is slow)."""
    names = [*HARFBUZZ_SUBSET_NAMES]
    found = ctypes.util.find_library("harfbuzz-subset")
    if found:
        names.insert(0, found)
    for name in names:
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        return True
    return False


def startup_warnings() -> list[str]:
    """Called by the web app and the worker at start-up; each line is logged as a warning."""
    if harfbuzz_subset_available():
        return []
    return [
        "libharfbuzz-subset0 is missing: weasyprint falls back to fontTools and renders receipts 2-3x slower; "
        "install it (Debian/Ubuntu: apt-get install libharfbuzz-subset0)"
    ]
