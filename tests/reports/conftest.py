"""Reading a rendered report back: its text (pdftotext), its words and where they are drawn
(pdftotext -bbox), its fonts (pdffonts)."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from html import unescape
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


@dataclass(frozen=True)
class Word:
    """A word pdftotext found on a page and its box, in points from the page's top left."""

    page: int
    text: str
    x_min: float
    x_max: float
    y_min: float


@pytest.fixture
def pdf_words(tmp_path: Path) -> Callable[[bytes], list[Word]]:
    """Every word of a PDF with its box, as pdftotext -bbox reads it."""
    program = _poppler("pdftotext")

    def read(pdf: bytes) -> list[Word]:
        path = tmp_path / "words.pdf"
        path.write_bytes(pdf)
        html = subprocess.run(
            [program, "-bbox", str(path), "-"], check=True, capture_output=True, timeout=60
        ).stdout.decode("utf-8")
        words = []
        for number, page in enumerate(html.split("<page ")[1:], start=1):
            for x_min, y_min, x_max, text in re.findall(
                r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="[\d.]+">(.*?)</word>',
                page,
            ):
                words.append(Word(number, unescape(text), float(x_min), float(x_max), float(y_min)))
        return words

    return read
