"""The log rule engine: parsed access-log blocks in, findings out.

The rules are data (`rules/logs.toml`, read by `rules.log_rule_file`). For each block the
engine picks, per rule, the rows meeting its conditions (`rules.log_conditions`: a few numpy
passes over integer arrays per rule) and groups them by subject code: `row` rules count every
line; `window` rules count in sliding windows (`rules.log_windows`). Strings are touched only
for the few subjects that fire and for the entries that stay open at the end of the block.

Across blocks the engine keeps, per rule, subject column and log source, the window buckets
still open (one entry per subject, distinct value and bucket) with the first few lines of the
subjects near the rule's floors (so that a window's evidence starts with the lines that began
it), plus the findings and, for rate rules, each subject's long-run totals; `to_state`/`restore`
carry them across follow-mode runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from monitord.accesslog import schema
from monitord.accesslog.findings import MAX_EVIDENCE, LogFinding
from monitord.types import SEVERITIES
from monitord.workcalendar import WorkCalendar
from rules.log_arrays import (
    Ints,
    Mask,
    compact,
    factorize,
    group_max,
    group_min,
    group_sum,
    strings_at,
)
from rules.log_conditions import Block, keyed, select
from rules.log_rule_file import RULES_FILE, LogRule, load_rules
from rules.log_windows import (
    Batch,
    Window,
    above_baseline,
    build_batch,
    distinct_per_window,
    earliest,
    floors,
    may_fire,
    near_floors,
)

if TYPE_CHECKING:
    from monitord.config import LogSettings

LATE_BUCKETS = 2  # half-windows kept open behind the newest line, for slightly unordered logs
# (behind the watermark, when several logs are read side by side: see `feed`)
PEERS_MIN = 20  # fewer subjects than this are no crowd to compare with
STATE_VERSION = 3  # layout of the windows in `to_state`; another version restores no windows,
SAMPLELESS_VERSION = 2  # but this one's, without samples: their first lines are not quoted


class LogRuleEngine:
    """Evaluates log rules over parsed blocks, keeping only what windows and findings need.

    Feed blocks in (roughly) time order per source with `feed`; read `findings()` at any time.
    """

    def __init__(
        self,
        rules: Sequence[LogRule],
        calendar: WorkCalendar | None = None,
        login_paths: Sequence[str] = schema.DEFAULT_LOGIN_PATHS,
    ) -> None:
        self.rules = list(rules)
        self.calendar = calendar or WorkCalendar()
        self.login_paths = tuple(login_paths)
        self._findings: dict[tuple[str, str, str], LogFinding] = {}
        self._windows: dict[tuple[str, str, str], Window] = {}
        # Findings with open window buckets, per (rule, subject column, source): those whose
        # counts settle when that window state moves on.
        self._open: dict[tuple[str, str, str], set[tuple[str, str, str]]] = {}

    @classmethod
    def load(
        cls,
        path: Path = RULES_FILE,
        calendar: WorkCalendar | None = None,
        login_paths: Sequence[str] = schema.DEFAULT_LOGIN_PATHS,
    ) -> LogRuleEngine:
        """An engine with the rules of a rule file (the shipped `rules/logs.toml` by default)."""
        return cls(load_rules(path), calendar, login_paths)

    # -- feeding ----------------------------------------------------------------------------------

    @classmethod
    def from_settings(cls, settings: LogSettings | None = None) -> LogRuleEngine:
        """The shipped rules, with working hours from `[logs]` of the config (holidays and
        make-up working days for years the calendar package does not know, the working day)
        and its login paths."""
        if settings is None:
            return cls.load()
        return cls.load(
            calendar=WorkCalendar.from_settings(settings),
            login_paths=settings.login_paths or schema.DEFAULT_LOGIN_PATHS,
        )

    def feed(self, block: pa.Table, watermark: float | None = None) -> None:
        """Evaluate every rule on a parsed block (columns of monitord.accesslog.schema).

        Text columns may be dictionary-encoded or plain strings; `line` string or binary.
        Window buckets close once the newest line is `LATE_BUCKETS` past them. When several
        logs are read side by side, `watermark` is the time all of them have reached (-inf
        while one has not been read yet): no bucket closes after it, or the lines of the log
        that is behind would find their windows already closed.
        """
        if block.num_rows == 0:
            return
        codes, sources = schema.codes(block.column("source"))
        count = np.bincount(codes + 1, minlength=len(sources) + 1)
        present = np.flatnonzero(count[1:])
        for i in present:
            source = sources[int(i)].as_py()
            if not any(source in rule.sources for rule in self.rules):
                continue
            part = block
            if count[i + 1] != block.num_rows:
                part = block.filter(pa.array(codes == i))
            blk = Block(part, self.calendar, self.login_paths)
            for rule in self.rules:
                if source in rule.sources:
                    self._feed_rule(rule, source, blk, watermark)

    def _feed_rule(
        self, rule: LogRule, source: str, blk: Block, watermark: float | None = None
    ) -> None:
        chosen = select(rule.when, blk, blk.rows)
        # A window state without new lines would evaluate to what it did last time: skip it.
        if not chosen.any():
            return
        for subject in rule.subject:
            if rule.kind == "row":
                self._feed_rows(rule, subject, source, blk, chosen)
            else:
                self._feed_window(rule, subject, source, blk, chosen, watermark)

    def _finding(
        self, rule: LogRule, subject_kind: str, subject: str, first: int, last: int
    ) -> LogFinding:
        key = (rule.name, subject_kind, subject)
        found = self._findings.get(key)
        if found is None:
            found = LogFinding(
                rule=rule.name,
                clause=rule.clause,
                severity=rule.severity,
                subject_kind=subject_kind,
                subject=subject,
                first_seen=first,
                last_seen=last,
                service_id=subject if subject_kind == "service" else None,
                quiet_seconds=rule.quiet_minutes * 60,
                episode_start=first,
            )
            self._findings[key] = found
        found.seen(first, last)
        return found

    def _summarise(self, rule: LogRule, f: LogFinding, measure: Any) -> None:
        # The summary quotes the worst window seen, not merely the latest.
        peak = max(f.facts.get("peak", measure), measure)
        f.facts["peak"] = peak
        shown = f"{peak:.0%}" if isinstance(peak, float) else str(peak)
        f.summary = rule.summary.format(
            subject=f.subject, count=f.count, measure=shown, window_min=rule.window // 60
        )

    # -- row rules --------------------------------------------------------------------------------

    def _feed_rows(
        self, rule: LogRule, subject: str, source: str, blk: Block, chosen: Mask
    ) -> None:
        codes, values = keyed(blk, subject, chosen)
        rows = np.flatnonzero(chosen & (codes >= 0))
        if len(rows) == 0:
            return
        sub = codes[rows].astype(np.int64)
        k = len(values)
        count = np.bincount(sub, minlength=k)
        first = group_min(sub, k, blk.ts[rows])
        last = group_max(sub, k, blk.ts[rows])
        for code in np.flatnonzero((count > 0) & (count >= rule.threshold.min_count)).tolist():
            name = str(values[code].as_py())
            f = self._finding(rule, subject, name, int(first[code]), int(last[code]))
            f.add_settled(source, int(count[code]))
            if len(f.evidence) < MAX_EVIDENCE:
                f.add_evidence(blk.lines(rows[sub == code][:MAX_EVIDENCE]))
            self._summarise(rule, f, f.count)
        if rule.breakdown:
            self._breakdown(rule, subject, blk, chosen, rows)

    def _breakdown(self, rule: LogRule, subject: str, blk: Block, chosen: Mask, rows: Ints) -> None:
        # The audit wants who did what, not only a total (8.3 c: every vendor account).
        columns = [keyed(blk, name, chosen) for name in (subject, *rule.breakdown)]
        combo = np.zeros(len(rows), np.int64)
        k = 1
        for codes, values in columns:
            combo, _ = factorize(combo * (len(values) + 1) + codes[rows] + 1, k * (len(values) + 1))
            k = int(combo.max()) + 1
        count = np.bincount(combo, minlength=k)
        example = rows[group_min(combo, k, np.arange(len(rows), dtype=np.int64))]
        texts = [
            strings_at(values, codes[example].astype(np.int64)).to_pylist()
            for codes, values in columns
        ]
        for i in range(k):
            found = self._findings.get((rule.name, subject, str(texts[0][i])))
            if found is None:
                continue
            table = found.facts.setdefault("breakdown", {})
            key = " ".join(str(t[i]) for t in texts[1:])
            table[key] = table.get(key, 0) + int(count[i])

    # -- window rules -----------------------------------------------------------------------------

    def _feed_window(
        self,
        rule: LogRule,
        subject: str,
        source: str,
        blk: Block,
        chosen: Mask,
        watermark: float | None = None,
    ) -> None:
        codes, subjects = keyed(blk, subject, chosen)
        rows = np.flatnonzero(chosen & (codes >= 0))
        if len(rows) == 0:
            return
        key = (rule.name, subject, source)
        half = max(1, rule.window // 2)
        st = self._windows.get(key)
        if st is None or st.half != half:
            st = self._windows[key] = Window(half)
        batch = build_batch(rule, blk, chosen, rows, (codes, subjects), st)
        if may_fire(rule, batch):
            self._evaluate(rule, subject, source, st, blk, batch)
        keep_from = self._close(rule, subject, source, st, batch, watermark)
        self._sample(rule, subject, st, blk, batch, keep_from)

    def _evaluate(
        self, rule: LogRule, subject: str, source: str, st: Window, blk: Block, b: Batch
    ) -> None:
        th, c = rule.threshold, b.cells
        nb, ns = len(b.bucket_of), len(b.subjects)
        # Each (subject, bucket) cell belongs to two windows: the one it starts (numbered like
        # the bucket) and the one it ends (numbered like the bucket before).
        window_key = np.concatenate([c.subject * nb + c.bucket, c.subject * nb + b.prev[c.bucket]])
        number, keys = factorize(window_key, ns * nb)
        k = len(keys)
        n = group_sum(number, k, np.concatenate([c.n, c.n]))
        num = group_sum(number, k, np.concatenate([c.num, c.num]))
        if rule.measure == "ratio":
            events, measure = num, num / n
        elif rule.measure == "distinct":
            # A window holds at most the values of its two cells together; only if that bound
            # reaches the floors are the values told apart.
            events = n
            bound = group_sum(number, k, np.concatenate([b.cell_distinct, b.cell_distinct]))
            maybe = floors(th, events, bound.astype(np.float64))
            if not maybe.any():
                return
            # Peers are compared on every window; without peers only the candidates count.
            among = np.unique(keys[maybe] // nb) if th.peers_quantile is None else None
            measure = distinct_per_window(b, keys, among)
        else:
            events, measure = n, n.astype(np.float64)
        ok = floors(th, events, measure)
        if not ok.any():
            return
        if th.peers_quantile is not None:
            # Peers are the subjects below the fixed floors: a crowd of floods must not make a
            # flood look normal, and a subject is never its own peer.
            peers = measure[~ok]
            if len(peers) >= PEERS_MIN:
                ok &= measure > th.peers_factor * float(np.quantile(peers, th.peers_quantile))
        fired = np.flatnonzero(ok)
        fired_subject, start = keys[fired] // nb, b.bucket_of[keys[fired] % nb]
        order = np.lexsort((start, fired_subject))
        fired, fired_subject, start = fired[order], fired_subject[order], start[order]
        first = group_min(number, k, np.concatenate([c.first, c.first]))
        last = group_max(number, k, np.concatenate([c.last, c.last]))
        # A finding counts the lines of its open buckets (numerator lines for a ratio).
        counted = c.num if rule.measure == "ratio" else c.n
        mine = np.isin(c.subject, fired_subject)
        per_bucket = dict(
            zip(
                zip(c.subject[mine].tolist(), b.bucket_of[c.bucket[mine]].tolist(), strict=True),
                counted[mine].tolist(),
                strict=True,
            )
        )
        names = strings_at(b.subjects, fired_subject).to_pylist()
        for i, code, w, name in zip(
            fired.tolist(), fired_subject.tolist(), start.tolist(), names, strict=True
        ):
            lines, hits = int(n[i]), int(num[i])
            if th.baseline_factor is not None and not above_baseline(th, st, name, lines, hits):
                continue
            f = self._finding(rule, subject, str(name), int(first[i]), int(last[i]))
            self._open.setdefault((rule.name, subject, source), set()).add(f.key)
            for bucket_no in (w, w + 1):
                f.open_counts[f"{source}:{bucket_no}"] = per_bucket.get((code, bucket_no), 0)
            value: Any = lines
            if rule.measure == "ratio":
                value = round(hits / lines, 3)
            elif rule.measure == "distinct":
                value = int(measure[i])
            if len(f.evidence) < MAX_EVIDENCE:
                ts = b.row_ts
                pick = (b.row_subject == code) & (ts >= w * st.half) & (ts < (w + 2) * st.half)
                if rule.measure == "ratio":
                    pick &= b.row_hit
                read_now = blk.timed_lines(b.rows[np.flatnonzero(pick)[:MAX_EVIDENCE]])
                # The window's lines read in earlier blocks come first: they began it.
                window = earliest(st.sampled(str(name), w) + read_now, MAX_EVIDENCE)
                f.add_evidence([line for _, line in window])
            self._summarise(rule, f, value)

    def _close(
        self,
        rule: LogRule,
        subject: str,
        source: str,
        st: Window,
        b: Batch,
        watermark: float | None = None,
    ) -> int:
        """Keep the entries of buckets still open; fold the closed ones into the baselines and
        settle the findings' counts of closed buckets. Returns the first bucket still open."""
        e = b.entries
        bucket = b.bucket_of[e.bucket]
        newest = int(bucket.max())
        if watermark is not None:
            # -inf: a log read side by side has no line yet, so every bucket stays open.
            reached = int(watermark) // st.half if math.isfinite(watermark) else -(2**62)
            newest = min(newest, reached)
        keep_from = newest - 1 - LATE_BUCKETS
        keep = np.ones(len(bucket), np.bool_)
        if int(bucket.min()) < keep_from:
            gone = bucket < keep_from
            keep = ~gone
            if rule.threshold.baseline_factor is not None:
                ns = len(b.subjects)
                lines = group_sum(e.subject[gone], ns, e.n[gone])
                hits = group_sum(e.subject[gone], ns, e.num[gone])
                whose = np.flatnonzero(lines)
                names = strings_at(b.subjects, whose).to_pylist()
                for name, a, h in zip(
                    names, lines[whose].tolist(), hits[whose].tolist(), strict=True
                ):
                    acc = st.baseline.setdefault(str(name), [0, 0])
                    acc[0] += a
                    acc[1] += h
            self._settle((rule.name, subject, source), source, keep_from)
            st.forget_samples(keep_from)
        st.subject, st.subjects = compact(e.subject[keep], b.subjects)
        st.value, st.values = np.zeros(0, np.int64), pa.array([], pa.string())
        if rule.measure == "distinct":
            st.value, st.values = compact(b.entry_value[keep], b.values)
        st.bucket, st.n, st.num = bucket[keep], e.n[keep], e.num[keep]
        st.first, st.last = e.first[keep], e.last[keep]
        return keep_from

    def _sample(
        self, rule: LogRule, subject: str, st: Window, blk: Block, b: Batch, keep_from: int
    ) -> None:
        """Keep the block's first lines of each subject near the floors in each bucket still
        open (`keep_from` on), so that a window firing in a later block quotes the lines that
        began it."""
        c = b.cells
        near = near_floors(rule, b) & (b.bucket_of[c.bucket] >= keep_from)
        if not near.any():
            return
        take = near[b.row_cell]
        if rule.measure == "ratio":
            take &= b.row_hit
        which = np.flatnonzero(take)
        if len(which) == 0:
            return
        # The first MAX_EVIDENCE rows of each cell, by time.
        which = which[np.lexsort((b.row_ts[which], b.row_cell[which]))]
        cell = b.row_cell[which]
        starts = np.flatnonzero(np.diff(cell, prepend=-1))
        rank = np.arange(len(cell)) - np.repeat(starts, np.diff(starts, append=len(cell)))
        which, cell = which[rank < MAX_EVIDENCE], cell[rank < MAX_EVIDENCE]
        cells, at = np.unique(cell, return_inverse=True)
        names = [str(n) for n in strings_at(b.subjects, c.subject[cells]).to_pylist()]
        buckets = b.bucket_of[c.bucket[cells]].tolist()
        wanted = np.array(
            [
                self._wants_sample(rule, subject, st, n, k)
                for n, k in zip(names, buckets, strict=True)
            ],
            np.bool_,
        )[at]
        if not wanted.any():
            return
        which, at = which[wanted], at[wanted]
        found: dict[int, list[tuple[int, str]]] = {}
        texts = blk.line_texts(b.rows[which])
        for i, ts, text in zip(at.tolist(), b.row_ts[which].tolist(), texts, strict=True):
            if text is not None:
                found.setdefault(i, []).append((ts, text))
        for i, lines in found.items():
            st.keep_sample(names[i], buckets[i], lines, MAX_EVIDENCE)

    def _wants_sample(
        self, rule: LogRule, subject: str, st: Window, name: str, bucket: int
    ) -> bool:
        """Whether lines of `name` in `bucket` may still become evidence: its sample is not
        full, nor the evidence of its finding."""
        if len(st.samples.get((name, bucket), ())) >= MAX_EVIDENCE:
            return False
        f = self._findings.get((rule.name, subject, name))
        return f is None or len(f.evidence) < MAX_EVIDENCE

    def _settle(self, key: tuple[str, str, str], source: str, keep_from: int) -> None:
        prefix = f"{source}:"
        waiting = self._open.get(key, set())
        for fkey in list(waiting):
            f = self._findings.get(fkey)
            still_open = False
            if f is not None:
                for bucket in [k for k in f.open_counts if k.startswith(prefix)]:
                    if int(bucket[len(prefix) :]) < keep_from:
                        f.settle(bucket)
                    else:
                        still_open = True
            if not still_open:
                waiting.discard(fkey)

    # -- results and state ------------------------------------------------------------------------

    def findings(self) -> list[LogFinding]:
        """Every finding so far, most severe first, then by rule and subject."""
        rank = {s: i for i, s in enumerate(reversed(SEVERITIES))}
        return sorted(self._findings.values(), key=lambda f: (rank[f.severity], f.rule, f.subject))

    def to_state(self) -> dict[str, Any]:
        """JSON-able state: open window buckets, baselines and findings (for follow mode)."""
        windows = {"|".join(key): st.to_state() for key, st in self._windows.items()}
        return {
            "version": STATE_VERSION,
            "windows": windows,
            "findings": [f.to_state() for f in self._findings.values()],
        }

    def forget_findings(self, ended_before: int) -> int:
        """Drop findings whose behaviour last showed before `ended_before` (epoch seconds).

        Follow mode stores every finding in the store as it goes, so one that has been quiet
        for a while need not ride in the state for ever; if it starts again, a fresh finding
        with the same key updates the stored one. Returns how many were dropped.
        """
        old = [key for key, f in self._findings.items() if f.last_seen < ended_before]
        for key in old:
            del self._findings[key]
        return len(old)

    def restore(self, state: Mapping[str, Any]) -> None:
        """Take back what `to_state` gave (rules and calendar come from the constructor).

        Windows saved in another layout (`STATE_VERSION`) are not read: they start empty, and
        the findings are kept. Those saved before samples were kept (`SAMPLELESS_VERSION`) are
        read, without samples.
        """
        self._findings = {}
        self._open = {}
        for raw in state.get("findings", []):
            f = LogFinding.from_state(raw)
            self._findings[f.key] = f
            for bucket in f.open_counts:
                source = bucket.rpartition(":")[0]
                self._open.setdefault((f.rule, f.subject_kind, source), set()).add(f.key)
        self._windows = {}
        if state.get("version") not in (STATE_VERSION, SAMPLELESS_VERSION):
            return
        by_name = {r.name: r for r in self.rules}
        for key, raw in state.get("windows", {}).items():
            rule_name, subject, source = key.split("|")
            rule = by_name.get(rule_name)
            if rule is None or rule.kind != "window":
                continue  # a rule removed from the file: its windows go with it
            self._windows[(rule_name, subject, source)] = Window.from_state(raw)
