"""contract.md: fonts ship as package data. The documents' typeface is the DejaVu Sans inside the package
(receipts/fonts/), loaded with @font-face, so a PDF looks the same on any host, even one with no fonts at all."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from receipts import render
from tests.receipts.test_render import receipt

ROOT = Path(__file__).resolve().parents[2]
FONTS = ROOT / "receipts" / "fonts"
PACKAGED_FACES = [("Giving-Sans", "yes"), ("Giving-Sans-Bold", "yes")]

EMPTY_FONTCONFIG = """<?xml version="1.0"?>
<!DOCTYPE fontconfig SYSTEM "urn:fontconfig:fonts.dtd">
<fontconfig><cachedir>{cache}</cachedir></fontconfig>
"""


def embedded_fonts(pdf: Path) -> list[tuple[str, str]]:
    """(font name without its subset prefix, embedded yes/no) for each font pdffonts lists."""
    listing = subprocess.run(["pdffonts", str(pdf)], check=True, capture_output=True, text=True).stdout
    rows = [line.split() for line in listing.splitlines()[2:] if line.strip()]
    return [(row[0].split("+", 1)[-1], row[-5]) for row in rows]


def render_in_another_process(
    tmp_path: Path, *, host_fonts: bool, then: str = ""
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """A gift receipt rendered by a fresh process started in an unrelated directory (running `then` afterwards),
    optionally on a host whose fontconfig knows no fonts at all (an empty configuration)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    out = tmp_path / "receipt.pdf"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TMPDIR": str(scratch)}
    if not host_fonts:
        config = tmp_path / "fonts.conf"
        config.write_text(EMPTY_FONTCONFIG.format(cache=tmp_path / "fc-cache"), encoding="utf-8")
        env["FONTCONFIG_FILE"] = str(config)
    code = (
        "import sys; from tests.receipts.test_render import receipt; from receipts import render; "
        "open(sys.argv[1], 'wb').write(render.render_pdf(receipt()))\n" + then
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", code, str(out)],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done, out


def test_a_host_without_any_fonts_still_gets_the_documents_typeface(tmp_path: Path) -> None:
    done, pdf = render_in_another_process(tmp_path, host_fonts=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(embedded_fonts(pdf)) == PACKAGED_FACES


def test_the_embedded_fonts_are_the_packaged_faces(tmp_path: Path) -> None:
    """weasyprint names an @font-face font after its family, so the PDF itself says where its fonts came from."""
    pdf = tmp_path / "receipt.pdf"
    pdf.write_bytes(render.render_pdf(receipt()))
    assert sorted(embedded_fonts(pdf)) == PACKAGED_FACES


def test_the_process_leaves_no_copy_of_the_fonts_behind(tmp_path: Path) -> None:
    """weasyprint copies @font-face fonts to a temporary folder per font configuration and removes it only when the
    configuration is collected. One still alive at exit (frozen by gc.freeze() as giving.worker_boot does, or
    collected after weasyprint's modules are torn down: an ignored TypeError on stderr) would leave 1.4 MB in /tmp
    for every process that rendered."""
    done, pdf = render_in_another_process(tmp_path, host_fonts=True, then="import gc; gc.freeze()")
    assert done.returncode == 0 and pdf.stat().st_size > 0
    assert "Exception ignored" not in done.stderr, done.stderr[-2000:]
    assert list((tmp_path / "tmp").iterdir()) == []


def test_the_same_document_is_the_same_bytes_with_or_without_host_fonts(tmp_path: Path) -> None:
    without, bare_pdf = render_in_another_process(tmp_path / "bare", host_fonts=False)
    with_fonts, host_pdf = render_in_another_process(tmp_path / "host", host_fonts=True)
    assert without.returncode == 0, without.stderr[-2000:]
    assert with_fonts.returncode == 0, with_fonts.stderr[-2000:]
    assert bare_pdf.read_bytes() == host_pdf.read_bytes()


def test_the_stylesheet_names_its_own_face_loaded_from_the_package() -> None:
    """The family is a name no system font has, so text set in it can only come from the @font-face files."""
    css = render.STYLESHEET.read_text(encoding="utf-8")
    faces = re.findall(r"@font-face\s*{([^}]*)}", css)
    assert faces, "no @font-face in documents.css"
    families = {re.search(r'font-family:\s*"([^"]+)"', face).group(1) for face in faces}  # type: ignore[union-attr]
    assert families == {"Giving Sans"}
    sources = [re.search(r'src:\s*url\("([^"]+)"\)', face).group(1) for face in faces]  # type: ignore[union-attr]
    for source in sources:
        assert (render.STYLESHEET.parent / source).resolve().is_file(), source
        assert (render.STYLESHEET.parent / source).resolve().parent == FONTS
    assert re.search(r'html\s*{[^}]*font-family:\s*"Giving Sans"', css)
    if shutil.which("fc-list"):
        system = subprocess.run(["fc-list", ":", "family"], check=True, capture_output=True, text=True).stdout
        assert "Giving Sans" not in system


def test_the_fonts_travel_with_their_licence() -> None:
    assert {p.name for p in FONTS.iterdir()} >= {"DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "LICENSE.txt"}
    licence = (FONTS / "LICENSE.txt").read_text(encoding="utf-8")
    assert "Bitstream Vera" in licence and "Permission is hereby granted" in licence
