"""Regular expressions as the log analysis runs them: Arrow's RE2, which refuses some of what
Python's `re` accepts (look-arounds, back-references). Config and rule files are checked with it,
so such a pattern is refused when it is read, not in the middle of an analysis."""

from __future__ import annotations


def re2_error(pattern: str) -> str | None:
    """Why RE2 refuses `pattern`, or None when it compiles.

    pyarrow is imported here, not at module level: the config imports this module, and most
    commands never analyse a log."""
    import pyarrow as pa
    import pyarrow.compute as pc

    # One empty string, built from buffers: converting a Python value would make pyarrow look
    # for pandas, and the kernel compiles no pattern for a column without a value.
    empty = pa.Array.from_buffers(pa.string(), 1, [None, pa.py_buffer(bytes(8)), pa.py_buffer(b"")])
    try:
        pc.match_substring_regex(empty, pattern)
    except pa.ArrowInvalid as exc:
        return str(exc).removeprefix("Invalid regular expression: ")
    return None
