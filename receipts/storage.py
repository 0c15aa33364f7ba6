"""Where PDFs are kept: files under `[receipts] storage_dir` (relative paths are relative to the current directory).

A key is a relative path such as `gift_receipt/GR-000042.pdf`. Writes go to a temporary file renamed into place, so a
reader (or a worker killed mid-write) never leaves or sees half a PDF.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


class DocumentStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"{key!r} is outside the document store")
        return path

    def put(self, key: str, content: bytes) -> str:
        """Store `content`; returns its SHA-256 (hex)."""
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".pdf")
        try:
            with os.fdopen(fd, "wb") as handle:
                # No fsync: a file lost in a crash is noticed by its SHA-256 and rendered again from the document's
                # content (the same bytes), so paying for a disk flush per PDF buys nothing.
                handle.write(content)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return sha256(content)

    def get(self, key: str) -> bytes | None:
        path = self.path(key)
        return path.read_bytes() if path.is_file() else None


def sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()
