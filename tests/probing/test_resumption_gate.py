"""Where reading a TLS session leaks (CPython before 3.12.8 and 3.13.1), the daemon's probes do
not resume sessions, whatever `probes.tls_resume_minutes` asks, and the daemon says so."""

from __future__ import annotations

import pytest

from monitord.config import ProbeSettings
from monitord.probing import probe_context, resumption_notice
from monitord.timeutil import system_clock
from probes import tlsinfo


@pytest.mark.parametrize("leaks", [True, False])
async def test_the_rounds_resume_sessions_only_where_reading_one_does_not_leak(
    leaks: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On Python 3.11 every session read leaked ~6 KB: a few hundred a day per host, for months.
    monkeypatch.setattr(tlsinfo, "SESSION_READ_LEAKS", leaks)
    config = ProbeSettings(tls_resume_minutes=5)
    async with probe_context(config, system_clock) as ctx:
        assert ctx.tls_resume_s == (0 if leaks else 300)
    notice = resumption_notice(config)
    if leaks:
        assert notice is not None and "gh-116810" in notice and "full handshake" in notice
    else:
        assert notice is None
    assert resumption_notice(ProbeSettings(tls_resume_minutes=0)) is None
