"""Reading a rendered report back: its text (pdftotext), its fonts (pdffonts), its pages as PNG."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest


def _poppler(program: str) -> str:
    found = shutil.which(program)
    if found is None:
        pytest.skip(f"{program} (poppler-utils) is not installed: apt-get install poppler-utils")
    return found


@pytest.fixture
def pdf_pages(tmp_path: Path) -> Callable[[bytes], list[str]]:
    """The text of each page of a PDF, as pdftotext reads it (skipped without poppler-utils)."""
    program = _poppler("pdftotext")

    def read(pdf: bytes) -> list[str]:
        path = tmp_path / "report.pdf"
        path.write_bytes(pdf)
        text = subprocess.run(
            [program, "-layout", str(path), "-"], check=True, capture_output=True, timeout=60
        ).stdout.decode("utf-8")
        return text.split("\f")[:-1]  # each page ends with a form feed

    return read


@pytest.fixture
def pdf_fonts(tmp_path: Path) -> Callable[[bytes], list[list[str]]]:
    """pdffonts' rows of a PDF (name, type, encoding, emb, sub, uni, ...)."""
    program = _poppler("pdffonts")

    def read(pdf: bytes) -> list[list[str]]:
        path = tmp_path / "fonts.pdf"
        path.write_bytes(pdf)
        out = subprocess.run(
            [program, str(path)], check=True, capture_output=True, timeout=60
        ).stdout.decode("utf-8")
        return [line.split() for line in out.splitlines()[2:]]

    return read
