"""The C scan's own checks of what it is given (its reading is tested in test_nginx_fast)."""

from __future__ import annotations

import numpy as np
import pytest

from monitord.accesslog import nginx
from monitord.accesslog.lines import split_lines

scan = nginx._scan
pytestmark = pytest.mark.skipif(
    not nginx.NATIVE, reason="the C scan (monitord/accesslog/_nginxscan.c) was not built"
)

LINE = b'1.2.3.4 - - [03/Jul/2026:09:15:02 +0800] "GET /svc/a HTTP/1.1" 200 1 "-" "-" 0.001 "-"\n'


def _outputs(n: int) -> list[np.ndarray]:
    kinds = (np.uint8, np.int64, np.int32, np.int64, np.float64)
    return [np.empty(n, t) for t in kinds] + [np.empty(7 * n, np.int32), np.empty(7, np.int32)]


def test_scan_reads_into_buffers_of_the_right_size() -> None:
    lines = split_lines(LINE * 2)
    _, offsets, data = lines.buffers()
    out = _outputs(2)
    taken, values, value_offsets = scan(data, offsets, *out)
    assert taken == 2
    assert out[0].tolist() == [1, 1] and out[2].tolist() == [200, 200]
    # The distinct values of ip, user (none: "-"), method, path, service, agent and
    # X-Forwarded-For, one after the other, as an Arrow string array's bytes and offsets.
    assert out[-1].tolist() == [1, 0, 1, 1, 1, 1, 1]
    assert values == b"1.2.3.4GET/svc/aa--"
    assert np.frombuffer(value_offsets, np.int32).tolist() == [0, 7, 10, 16, 17, 18, 19]


def test_scan_refuses_buffers_too_small() -> None:
    # A caller's mistake is an error, not a write past the end of an array.
    lines = split_lines(LINE * 2)
    _, offsets, data = lines.buffers()
    short = _outputs(2)
    short[0] = np.empty(1, np.uint8)
    with pytest.raises(ValueError, match="ok holds 1 bytes, 2 needed"):
        scan(data, offsets, *short)
    with pytest.raises(ValueError, match="offsets reach outside data"):
        scan(data[:10], offsets, *_outputs(2))
