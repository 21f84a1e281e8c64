"""What the standard asks for that monitord does not measure itself: the evidence register
(documents filed with their SHA-256), the quarterly admin-rights review (7.3.2) and users'
complaints (9.1). The compliance rules and the quarterly report read them through the three
queries below."""

from __future__ import annotations

from monitord.evidence.admins import PROBLEMS, review_admins, reviews_in
from monitord.evidence.complaints import ImportResult, complaints_in, import_complaints
from monitord.evidence.register import (
    CLAUSES,
    KINDS,
    NewDocument,
    add_document,
    document_date,
    documents,
    verify_documents,
)

__all__ = [
    "CLAUSES",
    "KINDS",
    "PROBLEMS",
    "ImportResult",
    "NewDocument",
    "add_document",
    "complaints_in",
    "document_date",
    "documents",
    "import_complaints",
    "review_admins",
    "reviews_in",
    "verify_documents",
]
