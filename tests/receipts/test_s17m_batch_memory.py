"""A postal batch's memory does not grow with its size: weasyprint keeps each document's layout (about 1 MB for a
receipt) until the PDF is written, so the batch is written a part at a time (`render.BATCH_PART`) and the parts
joined. The PDF is the same documents in the same order, each with its own pages, and the same bytes again."""

from __future__ import annotations

import tracemalloc

from receipts import render
from tests.receipts.pdf import page_count, pdf_text
from tests.receipts.test_render import receipt

DOCUMENTS = 60


def test_a_large_batch_is_written_in_parts_without_holding_every_layout() -> None:
    batch: list[tuple[object, render.DuplicateMark | None]] = [
        (receipt(reference=f"GR-{n:06d}", amount=1000 + n), None) for n in range(1, DOCUMENTS + 1)
    ]
    render.render_pdf(receipt())  # the stylesheet and fonts loaded, as in a worker that has rendered before
    # Warmed first: the process's first render loads fonts and stylesheets once (tens of MB that stay, whichever
    # test of the run renders first), which is not the batch's growth.
    render.render_batch(batch[:2])  # type: ignore[arg-type]
    tracemalloc.start()
    try:
        pdf = render.render_batch(batch)  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Written at once it peaked at 62 MB here (about 1 MB a receipt); in parts of 25, 39 MB, whatever the size.
    assert peak < 50 * 2**20, f"{peak / 2**20:.1f} MB"
    assert page_count(pdf) == DOCUMENTS
    text = pdf_text(pdf)
    positions = [text.index(f"GR-{n:06d}") for n in range(1, DOCUMENTS + 1)]
    assert positions == sorted(positions)
    assert text.count("Page 1 of 1") == DOCUMENTS
    assert (
        render.render_batch(batch[: render.BATCH_PART + 1])
        == render.render_batch(  # type: ignore[arg-type]
            batch[: render.BATCH_PART + 1]  # type: ignore[arg-type]
        )
    )
