r"""Fixed-width fields of nginx lines read in numpy, as little-endian 64-bit words of the block.

The fast path (`nginx`) gathers a few bytes at a known place of every line into words
(`window`); a word of 8 ASCII digits is checked and valued with a handful of integer operations
per column (`all_digits`, `number`), not per line. This reads `$time_local` (each run of equal
times once), `$body_bytes_sent` and `$request_time`; whatever does not have the usual form is
marked as not read, for the exact path (`nginx_exact`) to take.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from monitord.accesslog.nginx_exact import strptime_times
from monitord.accesslog.schema import EARLIEST, LATEST

Array = np.ndarray[Any, Any]
"""A numpy array: numpy's element types add little here, every value is an int."""
ZEROS = 0x3030303030303030
"""Eight ASCII '0' as a word: what pads a shorter run of digits."""
TIME_WIDTH = 26
"""The length of `$time_local`: dd/Mon/yyyy:HH:MM:SS +zzzz."""


def window(raw: Array, pos: Array, width: int) -> Array:
    """The `width` bytes from each position, as rows of little-endian words (positions are
    clipped to the buffer)."""
    # A void item has alignment 1, so numpy copies it whole (a 2-D or an unaligned integer
    # view is 2 to 3 times slower to gather).
    rows = np.ndarray((len(raw) - width + 1,), np.dtype(f"V{width}"), raw, 0, (1,))
    out: Array = rows[np.clip(pos, 0, len(rows) - 1)].view("<u8")
    return out.reshape(len(pos), width // 8)


def field(w: Array, i: int, size: int = 1) -> Array:
    """Bytes i to i + size - 1 of each word, as a little-endian number."""
    return (w >> np.uint64(8 * i)) & np.uint64((1 << (8 * size)) - 1)


def all_digits(w: Array) -> Array:
    """Whether all 8 bytes of each word are ASCII digits."""
    # High nibble 3, and still 3 after +6 (which carries ':' to '?' out of it).
    high = np.uint64(0xF0F0F0F0F0F0F0F0)
    nibbles = (w & high) | (((w + np.uint64(0x0606060606060606)) & high) >> np.uint64(4))
    out: Array = nibbles == np.uint64(0x3333333333333333)
    return out


def number(w: Array) -> Array:
    """The value of words of 8 ASCII digits, the first digit in the lowest byte."""
    # Pairs, quads, then all eight: three multiplications instead of eight.
    v = w - np.uint64(ZEROS)
    v = (v * np.uint64(10) + (v >> np.uint64(8))) & np.uint64(0x00FF00FF00FF00FF)
    v = (v * np.uint64(100) + (v >> np.uint64(16))) & np.uint64(0x0000FFFF0000FFFF)
    return (v * np.uint64(10000) + (v >> np.uint64(32))) & np.uint64(0xFFFFFFFF)


# -- $time_local ----------------------------------------------------------------------------------

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_KEYS = np.array(sorted((ord(m[0]) << 16) | (ord(m[1]) << 8) | ord(m[2]) for m in _MONTHS))
_MONTH_OF_KEY = np.array(
    [_MONTHS.index(bytes([k >> 16, (k >> 8) & 255, k & 255]).decode()) + 1 for k in _MONTH_KEYS]
)
_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
_TIME_SEPARATORS = {2: "/", 6: "/", 11: ":", 14: ":", 17: ":", 20: " "}
_TIME_DIGITS = [0, 1, 7, 8, 9, 10, 12, 13, 15, 16, 18, 19, 22, 23, 24, 25]


def _time_checks() -> tuple[Array, Array, Array]:
    # Per byte of the time: the lowest value allowed and how far above it (as uint8, so one
    # subtraction and compare checks a digit, a separator or the sign); and the weights that
    # turn its 16 digits into day, year, hour, minute, second, offset hours and minutes.
    # Over the whole 32-byte window: the time is bytes 1 to 26.
    low = np.zeros(32, np.uint8)
    span = np.full(32, 255, np.uint8)  # the month's letters are checked by key, "[" apart
    low[np.add(_TIME_DIGITS, 1)], span[np.add(_TIME_DIGITS, 1)] = ord("0"), 9
    for i, c in _TIME_SEPARATORS.items():
        low[i + 1], span[i + 1] = ord(c), 0
    low[22], span[22] = ord("+"), 2  # '+', ',' or '-': ',' is ruled out apart
    weights = np.zeros((len(_TIME_DIGITS), 7), np.float64)
    for col, (a, b) in enumerate(((0, 2), (2, 6), (6, 8), (8, 10), (10, 12), (12, 14), (14, 16))):
        for i in range(a, b):
            weights[i, col] = 10.0 ** (b - 1 - i)
    return low, span, weights


_TIME_LOW, _TIME_SPAN, _TIME_WEIGHTS = _time_checks()


def times(
    windows: Array,
) -> tuple[Array, Array]:
    """Epoch seconds of `$time_local` in 32-byte windows ("[" and the 26 bytes of the time
    first), and which parsed. Consecutive lines mostly share their time: each run of equal
    times is parsed once.

    Times of the canonical form with a real date are computed in numpy; the rest (31/Feb,
    lower-case months, odd offsets, ...) go to the exact path's `strptime_times`, so both agree.
    """
    n = len(windows)
    changed = np.empty(n, dtype=bool)
    changed[0] = True
    # Bytes 0 to 26 of the window: three words and the low three bytes of the fourth.
    # (A reduction along a short axis costs more than a few whole-column operations.)
    np.not_equal(windows[1:, 0], windows[:-1, 0], out=changed[1:])
    changed[1:] |= windows[1:, 1] != windows[:-1, 1]
    changed[1:] |= windows[1:, 2] != windows[:-1, 2]
    changed[1:] |= ((windows[1:, 3] ^ windows[:-1, 3]) & np.uint64(0xFFFFFF)) != 0
    firsts = np.flatnonzero(changed)
    whole = windows[firsts]
    m = whole.view(np.uint8)[:, 1 : 1 + TIME_WIDTH]
    bad = ((whole.view(np.uint8) - _TIME_LOW) > _TIME_SPAN).view(np.uint64)
    canonical = ((bad[:, 0] | bad[:, 1] | bad[:, 2] | bad[:, 3]) == 0) & (m[:, 21] != ord(","))
    v = m.astype(np.int32)
    key = (v[:, 3] << 16) | (v[:, 4] << 8) | v[:, 5]
    at = np.minimum(np.searchsorted(_MONTH_KEYS, key), len(_MONTH_KEYS) - 1)
    canonical &= _MONTH_KEYS[at] == key
    month = _MONTH_OF_KEY[at]
    # The digits' values in one product (exact: every value is below 2**53).
    fields = ((m[:, _TIME_DIGITS] - np.uint8(48)).astype(np.float64) @ _TIME_WEIGHTS).astype(
        np.int64
    )
    day, year, hour, minute, second, tz_hours, tz_minutes = fields.T
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    month_days = _DAYS_IN_MONTH[month] + (leap & (month == 2))
    canonical &= (day >= 1) & (day <= month_days) & (year >= 1000)
    canonical &= (hour <= 23) & (minute <= 59) & (second <= 59)
    canonical &= (tz_hours <= 23) & (tz_minutes <= 59)
    offset = (44 - v[:, 21]) * (tz_hours * 3600 + tz_minutes * 60)  # '+' is 43, '-' is 45
    days = _days_from_civil(year, month, day)
    ts = days * 86400 + (hour * 3600 + minute * 60 + second - offset)
    ok = canonical
    if not canonical.all():
        ok = canonical.copy()
        other = np.flatnonzero(~canonical)
        text = pa.array([m[i].tobytes().decode("utf-8", "replace") for i in other], pa.string())
        parsed = strptime_times(text)
        # The exact path's pattern takes no ']' in the time.
        parsed_ok = pc.and_(pc.is_valid(parsed), pc.invert(pc.match_substring(text, "]")))
        ts[other] = pc.fill_null(parsed, 0).to_numpy()
        ok[other] = parsed_ok.to_numpy(zero_copy_only=False)
    ok &= (ts >= EARLIEST) & (ts <= LATEST)  # the exact path rejects the others
    if len(firsts) == n:
        return ts, ok
    run = np.cumsum(changed, dtype=np.int32) - 1
    return ts[run], ok[run]


def _days_from_civil(y: Array, m: Array, d: Array) -> Array:
    # Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
    y = y - (m <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * np.where(m > 2, m - 3, m + 9) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    out: Array = era * 146097 + doe - 719468
    return out


# -- $body_bytes_sent and $request_time -----------------------------------------------------------


def body_bytes(words: Array, length: Array) -> tuple[Array, Array, Array]:
    """$body_bytes_sent from `words`, the 16 bytes at the request's closing quote: (value,
    is '-', is up to 7 digits or '-'). Longer values (10 MB and more) are left to the exact
    path."""
    # The 8 bytes that end with the space after the value start at byte length - 1.
    at = (np.clip(length, 1, 7) - 1).astype(np.uint64) * np.uint64(8)
    w = (words[:, 0] >> at) | (words[:, 1] << (np.uint64(64) - at))  # a shift by 64 gives 0
    ok = (field(w, 7) == ord(" ")) & (length >= 1) & (length <= 7)
    dash = (length == 1) & (field(w, 6) == ord("-"))
    # Shift the digits to the top bytes and fill the bytes below with '0'.
    below = np.uint64(8) * (8 - np.clip(length, 1, 7)).astype(np.uint64)
    top = np.uint64(0xFFFFFFFFFFFFFFFF) << below
    v = ((w << np.uint64(8)) & top) | (np.uint64(ZEROS) & ~top)
    ok &= dash | all_digits(v)
    return number(v), dash, ok


def request_time(
    w: Array,
    whole: Array,
    present: Array,
) -> tuple[Array, Array]:
    """$request_time in milliseconds from the 8 bytes that end with the space after it, when it
    reads " s.mmm " with 1 to 3 digits of seconds (nginx's format); and which lines did."""
    ok = present & (whole >= 1) & (whole <= 3) & ((w >> np.uint64(56)) == 0x20)
    ok &= field(w, 3) == ord(".")
    whole = np.clip(whole, 1, 3).astype(np.uint64)
    ok &= ((w >> (np.uint64(8) * (np.uint64(2) - whole))) & np.uint64(0xFF)) == 0x20
    # Seconds (padded with '0' below) in bytes 2-4 and milliseconds in bytes 5-7.
    top = np.uint64(0xFFFFFF) & (np.uint64(0xFFFFFF) << (np.uint64(8) * (np.uint64(3) - whole)))
    seconds = (w & top) | (np.uint64(0x303030) & ~top)
    millis = (w >> np.uint64(32)) & np.uint64(0xFFFFFF)
    v = np.uint64(0x3030) | (seconds << np.uint64(16)) | (millis << np.uint64(40))
    ok &= all_digits(v)
    return number(v).astype(np.float64), ok
