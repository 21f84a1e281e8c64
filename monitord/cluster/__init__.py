"""Several daemons on one store: who is alive, who runs each once-only job, who probes what.

The engine is PostgreSQL itself (README, "Running several daemons", and docs/cluster-engines.md
say why): every daemon writes a heartbeat row stamped with the database's clock; a job that must
run once across the cluster is held by a lease row (`job_leases`) that its holder renews with
each heartbeat and any daemon takes once it lapsed; the probes are split by rendezvous hashing
of the services over the live members of a zone, so a member that joins or dies moves only its
own share. A daemon that cannot reach the store renews nothing: its leases lapse (it stops
running those jobs a second before the others may take them) and its share goes to the others.
A job run under a lease (`running_under`) commits only while its lease still has the fence it
ran under: a run that outlived its lease (the daemon paused, or cut off mid-run) writes nothing.

On SQLite there is one daemon (the store's flock refuses a second): `SoloCoordinator` holds
every job and the whole share, and writes its member row so that `monitord cluster` shows it.
"""

from __future__ import annotations

import contextvars
import dataclasses
import datetime as dt
import hashlib
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, case, delete, func, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

import monitord
from monitord.config import ClusterSettings
from monitord.errors import LeaseLost, Replaced, StoreError
from monitord.store import DaemonClaim, Store, bound_lock_wait, gone_from_this_host
from monitord.store.models import ClusterMember, JobLease, LogHourStat, LogSource, set_writer
from monitord.timeutil import UTC, Clock

__all__ = [
    "UPGRADE_STEPS",
    "Coordinator",
    "LeaseTerm",
    "Member",
    "SharedCoordinator",
    "SoloCoordinator",
    "Split",
    "database_now",
    "make_coordinator",
    "members",
    "owner_of",
    "running_under",
]

MARGIN_SECONDS = 1.0
"""A holder stops running a leased job this long before the others may take it."""
UPGRADE_STEPS = (
    "To upgrade a cluster: stop every daemon (`monitord cluster` lists them), back up the "
    "store (pg_dump), install the new version on every machine, `monitord migrate`, then "
    "start the daemons again"
)
"""What to do when daemons of two versions meet on one store (README, "Upgrading a cluster")."""
FENCED_COMMIT_IDLE_SECONDS = 1.0
"""How long a leased job's commit may wait on its daemon (paused, or cut off) while it holds its
lease row, which a daemon taking the lease over waits for: PostgreSQL then ends that session,
and the commit with it."""


@dataclass(frozen=True)
class Member:
    """A daemon as `monitord cluster` shows it."""

    name: str
    zone: str
    host: str
    pid: int
    started_at: dt.datetime
    heartbeat_at: dt.datetime
    stopped_at: dt.datetime | None
    alive: bool
    jobs: tuple[str, ...]
    probe_share: int
    last_round_at: dt.datetime | None
    version: str

    def as_json(self) -> dict[str, Any]:
        """The member for `monitord cluster --json` and the API (times ISO 8601, UTC)."""
        values = dataclasses.asdict(self)
        for key, value in values.items():
            if isinstance(value, dt.datetime):
                values[key] = value.isoformat()
        values["jobs"] = list(self.jobs)
        return values


@dataclass(frozen=True)
class LeaseTerm:
    """A once-only job as one daemon holds it: the lease row it runs under while that row
    names `holder` with `fence`."""

    job: str
    holder: str
    fence: int


_running_term: contextvars.ContextVar[LeaseTerm | None] = contextvars.ContextVar(
    "monitord_lease_term", default=None
)
"""The lease the job running in this context holds (asyncio.to_thread carries it into the
job's store work)."""


@contextmanager
def running_under(term: LeaseTerm | None) -> Iterator[None]:
    """Run a job under `term`: each commit of its store sessions checks the lease first
    (None: a job that needs no lease, or the one daemon on SQLite, commits freely)."""
    token = _running_term.set(term)
    try:
        yield
    finally:
        _running_term.reset(token)


def _idle_limit() -> str:
    return f"{round(FENCED_COMMIT_IDLE_SECONDS * 1000)}ms"


def _refuse_commit_without_lease(session: Session) -> None:
    """Before a commit of a leased job: raise LeaseLost unless its lease row still has the
    job's holder and fence. FOR SHARE: a daemon taking the lease over waits for this commit
    to end, so the job's writes land before the new holder's run, or not at all; and never
    long, since PostgreSQL ends the commit of a daemon that stops answering in the middle of
    it (FENCED_COMMIT_IDLE_SECONDS)."""
    term = _running_term.get()
    if term is None:
        return
    # Asked before the run's pending rows are flushed: written first, they met the new
    # holder's rows (a unique key of the quarter's verdicts) and failed as an IntegrityError
    # with a traceback instead of as the lost lease.
    with session.no_autoflush:
        session.execute(
            select(func.set_config("idle_in_transaction_session_timeout", _idle_limit(), True))
        )
        held = session.execute(
            select(JobLease.job)
            .where(
                JobLease.job == term.job,
                JobLease.holder == term.holder,
                JobLease.fence == term.fence,
            )
            .with_for_update(read=True)
        ).first()
    if held is None:
        raise LeaseLost(
            f"the lease of {term.job} passed to another daemon while {term.holder} ran it "
            f"(term {term.fence}): what this run had not committed is not written"
        )


@dataclass
class BeatReport:
    """What changed at a heartbeat, for the log."""

    taken: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    joined: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)


def _weight(member: str, service_id: str) -> bytes:
    return hashlib.blake2b(f"{member}\0{service_id}".encode(), digest_size=8).digest()


def owner_of(service_id: str, names: Iterable[str]) -> str:
    """The member that probes service_id: the highest rendezvous weight among names."""
    return max(names, key=lambda name: _weight(name, service_id))


@dataclass(frozen=True)
class Split:
    """Who probes what, as this daemon sees it now: the members its zone's services are
    shared among (rendezvous hashing), itself included."""

    me: str
    names: frozenset[str]

    def mine(self, service_id: str) -> bool:
        """Whether this daemon probes service_id."""
        return len(self.names) <= 1 or owner_of(service_id, self.names) == self.me


class Coordinator:
    """What the daemon asks of the cluster; the base is the one-daemon answer."""

    def __init__(self, store: Store, settings: ClusterSettings, clock: Clock) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.name = settings.member_name()
        self.zone = settings.zone
        self.run = secrets.token_hex(4)
        self._members: dict[str, str] = {self.name: self.zone}
        """Live members (name → zone) at the last heartbeat."""
        set_writer(self.name)

    def join(self) -> None:
        """Register this daemon (at start); raises StoreError when its name is taken."""
        with self.store.session() as session:
            self._register(session)
            _adopt_log_cursors(session, self.name, self.clock())

    def _register(self, session: Session) -> None:
        now = self.clock()
        row = session.get(ClusterMember, self.name)
        if row is None:
            row = ClusterMember(name=self.name, started_at=now, heartbeat_at=now)
            session.add(row)
        row.zone, row.run = self.zone, self.run
        row.host, row.pid = socket.gethostname(), os.getpid()
        row.version = monitord.__version__
        row.started_at = row.heartbeat_at = now
        row.stopped_at = None

    def beat(self, jobs: Sequence[str]) -> BeatReport:
        """Say this daemon is alive (and, in a cluster, renew or take the jobs' leases)."""
        with self.store.session() as session:
            session.execute(
                update(ClusterMember)
                .where(ClusterMember.name == self.name)
                .values(heartbeat_at=self.clock())
            )
        return BeatReport()

    def holds(self, job: str) -> bool:
        """Whether this daemon runs `job` now."""
        return True

    def term(self, job: str) -> LeaseTerm | None:
        """The lease a run of `job` starting now runs under (`running_under`); None when
        its writes need no fence (one daemon: nobody else runs it)."""
        return None

    def split(self, settle_seconds: float = 0.0) -> Split:
        """Who probes what now (one daemon: this one, everything)."""
        return Split(self.name, frozenset({self.name}))

    def share(self, service_ids: Sequence[str], settle_seconds: float = 0.0) -> list[str]:
        """The services this daemon probes now (of service_ids, in their order)."""
        split = self.split(settle_seconds)
        return [sid for sid in service_ids if split.mine(sid)]

    def live_names(self) -> set[str]:
        """The members alive at the last heartbeat, this one included."""
        return set(self._members)

    def counted(self) -> bool:
        """Whether the others count this daemon alive now (one daemon: always)."""
        return True

    def record_round(self, probed: int) -> None:
        """Note how many services this daemon probed in the round that just ended."""
        with self.store.session() as session:
            session.execute(
                update(ClusterMember)
                .where(ClusterMember.name == self.name)
                .values(probe_share=probed, last_round_at=self.clock())
            )

    def leave(self) -> None:
        """At a clean stop: say so, and give the jobs back at once."""
        with self.store.session() as session:
            session.execute(
                update(ClusterMember)
                .where(ClusterMember.name == self.name, ClusterMember.run == self.run)
                .values(stopped_at=self.clock())
            )
            session.execute(delete(JobLease).where(JobLease.holder == self.name))


SoloCoordinator = Coordinator
"""One daemon on a SQLite store: every job and every service is its own."""


def _db_now() -> ColumnElement[Any]:
    # timestamp without time zone in UTC, as UTCDateTime stores it, whatever the session's zone.
    return func.timezone("UTC", func.now())


class SharedCoordinator(Coordinator):
    """Daemons on one PostgreSQL store, coordinated by heartbeats and leases in it."""

    def __init__(
        self,
        store: Store,
        settings: ClusterSettings,
        clock: Clock,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(store, settings, clock)
        self._monotonic = monotonic
        self._held: dict[str, float] = {}
        """Job → the monotonic time until which this daemon may run it."""
        self._fences: dict[str, int] = {}
        """Job → the fence of the lease this run of the daemon holds (its term): a lease is
        this run's only while its row has this daemon's name and this fence."""
        self._ages: dict[str, float] = {}
        """Member → seconds since it started, at the last heartbeat (self._beat_at)."""
        store.before_commit(_refuse_commit_without_lease)
        self._beat_at = monotonic()
        self._counted_until = 0.0
        """The monotonic time until which the others count this daemon alive, with a second
        to spare (a heartbeat's lease, from when it was sent)."""

    def _lapse(self) -> ColumnElement[Any]:
        return _db_now() - dt.timedelta(seconds=self.settings.lease_seconds)

    def join(self) -> None:
        """Register this daemon; refuse a name that a live daemon already has."""
        with self.store.session() as session:
            row = session.execute(
                select(ClusterMember, ClusterMember.heartbeat_at > self._lapse())
                .where(ClusterMember.name == self.name)
                .with_for_update()
            ).first()
            if row is not None:
                member, fresh = row
                alive = fresh and member.stopped_at is None and member.run != self.run
                if alive and not gone_from_this_host(member.host, member.pid):
                    raise StoreError(
                        f"a monitord daemon named {self.name!r} is already running on "
                        f"{member.host} (pid {member.pid}) with the store at "
                        f"{self.store.display_url}: give this one another [cluster] name, or, "
                        f"if that daemon was killed, start this one again in "
                        f"{self.settings.lease_seconds:g} s, when its lease has lapsed"
                    )
            self._refuse_other_versions(session)
            self._register(session)
            session.flush()
            session.execute(
                update(ClusterMember)
                .where(ClusterMember.name == self.name)
                .values(started_at=_db_now(), heartbeat_at=_db_now())
            )
            _adopt_log_cursors(session, self.name, self.clock())
        self.beat(())

    def _refuse_other_versions(self, session: Session) -> None:
        """Raise StoreError when live members of another monitord version run on the store."""
        others = session.execute(
            select(ClusterMember.name, ClusterMember.version)
            .where(
                ClusterMember.name != self.name,
                ClusterMember.heartbeat_at > self._lapse(),
                ClusterMember.stopped_at.is_(None),
                ClusterMember.version != monitord.__version__,
            )
            .order_by(ClusterMember.name)
        ).all()
        if others:
            listed = ", ".join(f"{name} ({version or 'unknown'})" for name, version in others)
            raise StoreError(
                f"monitord daemons of another version are running on the store at "
                f"{self.store.display_url}: {listed}; this one is {monitord.__version__}, and "
                f"daemons of two versions never run on one store. {UPGRADE_STEPS}"
            )

    def beat(self, jobs: Sequence[str]) -> BeatReport:
        """Heartbeat, renew or take every lease of `jobs` that is free, and read who is alive.

        One short transaction; the local deadline of each lease is counted from before it
        was sent, so this daemon always stops before the database lets another take over.
        """
        sent = self._monotonic()
        report = BeatReport()
        with self.store.session() as session:
            beaten = session.execute(
                update(ClusterMember)
                .where(ClusterMember.name == self.name, ClusterMember.run == self.run)
                .values(heartbeat_at=_db_now())
            )
            if beaten.rowcount == 0:  # type: ignore[attr-defined]
                self._step_down()
                raise self._replaced(session)
            held = self._take_leases(session, jobs) if jobs else {}
            rows = session.execute(
                select(
                    ClusterMember.name,
                    ClusterMember.zone,
                    func.extract("epoch", _db_now() - ClusterMember.started_at),
                ).where(
                    ClusterMember.heartbeat_at > self._lapse(),
                    ClusterMember.stopped_at.is_(None),
                )
            ).all()
        alive = {name: zone for name, zone, _age in rows}
        alive[self.name] = self.zone
        self._ages = {name: float(age) for name, _zone, age in rows}
        self._beat_at = sent
        deadline = sent + self.settings.lease_seconds - MARGIN_SECONDS
        self._counted_until = deadline
        # By term, not by local deadline: a job held at the last beat and renewed by nobody
        # but another daemon is lost, however long this one was paused in between.
        report.taken = sorted(job for job, fence in held.items() if self._fences.get(job) != fence)
        report.lost = sorted(set(self._fences) - set(held))
        self._held = {job: deadline for job in held}
        self._fences = held
        report.joined = sorted(set(alive) - set(self._members))
        report.gone = sorted(set(self._members) - set(alive))
        self._members = alive
        return report

    def _step_down(self) -> None:
        """Hold nothing from now on (another run of this daemon's name took its place)."""
        self._held, self._fences, self._counted_until = {}, {}, 0.0

    def _replaced(self, session: Session) -> Replaced:
        row = session.get(ClusterMember, self.name)
        where = f"on {row.host} (pid {row.pid})" if row is not None else "elsewhere"
        return Replaced(
            f"another monitord daemon named {self.name!r} joined the cluster {where} while "
            f"this one (pid {os.getpid()}) did not answer for over a lease: it runs this "
            "daemon's jobs now, so this one stops; give each daemon its own [cluster] name"
        )

    def _take_leases(self, session: Session, jobs: Sequence[str]) -> dict[str, int]:
        """Renew the leases this run holds and take the lapsed ones; job → fence of each held.

        A lease is renewed only by the run that took it (its name and its fence): another
        process started under the same name takes it as a new term, with the next fence.
        """
        now = _db_now()
        until = now + dt.timedelta(seconds=self.settings.lease_seconds)
        statement = pg_insert(JobLease).values(
            [
                {
                    "job": job,
                    "holder": self.name,
                    "fence": 1,
                    "acquired_at": now,
                    "expires_at": until,
                }
                for job in jobs
            ]
        )
        excluded = statement.excluded
        terms = [(job, fence) for job, fence in self._fences.items()]
        mine = (JobLease.holder == self.name) & tuple_(JobLease.job, JobLease.fence).in_(terms)
        upsert = statement.on_conflict_do_update(
            index_elements=[JobLease.job],
            set_={
                "holder": excluded.holder,
                "expires_at": excluded.expires_at,
                # Kept while the same daemon renews; a new holder starts a new term.
                "acquired_at": case((mine, JobLease.acquired_at), else_=excluded.acquired_at),
                "fence": case((mine, JobLease.fence), else_=JobLease.fence + 1),
            },
            where=mine | (JobLease.expires_at < now),
        ).returning(JobLease.job, JobLease.fence)
        return {job: fence for job, fence in session.execute(upsert).all()}

    def holds(self, job: str) -> bool:
        """Whether this daemon holds `job`'s lease, with a second to spare."""
        return self._monotonic() < self._held.get(job, 0.0)

    def term(self, job: str) -> LeaseTerm | None:
        """The lease a run of `job` starting now runs under: this daemon's term of it (a
        term it no longer holds refuses every commit)."""
        return LeaseTerm(job, self.name, self._fences.get(job, 0))

    def counted(self) -> bool:
        """Whether the others count this daemon alive now: its last heartbeat's lease holds.
        What it measures when they do not (it is cut off from the store) is written late."""
        return self._monotonic() < self._counted_until

    def split(self, settle_seconds: float = 0.0) -> Split:
        """Who probes what now: the live members of this daemon's zone, a member counted once
        it has run `settle_seconds` (the others go on probing its share until it probes it
        itself, so that no service goes unprobed when a daemon joins). This daemon counts
        itself at once: for a few seconds a joining daemon's share is probed twice, never
        not at all.
        """
        since_beat = self._monotonic() - self._beat_at
        members, ages = self._members, self._ages  # replaced whole by the heartbeat thread
        names = frozenset(
            name
            for name, zone in members.items()
            if zone == self.zone
            and (name == self.name or ages.get(name, 0.0) + since_beat >= settle_seconds)
        )
        return Split(self.name, names)

    def record_round(self, probed: int) -> None:
        """Note how many services this daemon probed in its last round."""
        with self.store.session() as session:
            session.execute(
                update(ClusterMember)
                .where(ClusterMember.name == self.name, ClusterMember.run == self.run)
                .values(probe_share=probed, last_round_at=_db_now())
            )

    def leave(self) -> None:
        """At a clean stop: say so and give this run's leases back (lapsed at once, their
        fences kept growing), so the others take over now."""
        terms = [(job, fence) for job, fence in self._fences.items()]
        self._step_down()
        with self.store.session() as session:
            session.execute(
                update(ClusterMember)
                .where(ClusterMember.name == self.name, ClusterMember.run == self.run)
                .values(stopped_at=_db_now())
            )
            if terms:
                session.execute(
                    update(JobLease)
                    .where(
                        JobLease.holder == self.name,
                        tuple_(JobLease.job, JobLease.fence).in_(terms),
                    )
                    .values(expires_at=_db_now() - dt.timedelta(seconds=1))
                )


def _adopt_log_cursors(session: Session, name: str, now: dt.datetime) -> None:
    """Take the log cursors and this hour's statistics written before logs belonged to a
    daemon (migration 0009): they were the one daemon's, now named `name`."""
    if session.scalar(select(func.count()).select_from(LogSource).where(LogSource.daemon == "")):
        mine = set(session.scalars(select(LogSource.path).where(LogSource.daemon == name)))
        for source in session.scalars(select(LogSource).where(LogSource.daemon == "")):
            if source.path not in mine:
                source.daemon = name
    session.execute(
        update(LogHourStat)
        .where(LogHourStat.daemon.is_(None), LogHourStat.hour >= now - dt.timedelta(hours=2))
        .values(daemon=name)
    )


def make_coordinator(store: Store, settings: ClusterSettings, clock: Clock) -> Coordinator:
    """The coordinator for this store: shared on PostgreSQL, solo on SQLite."""
    if store.url.get_backend_name() == "postgresql":
        return SharedCoordinator(store, settings, clock)
    return SoloCoordinator(store, settings, clock)


def _session_now(session: Session) -> dt.datetime:
    """Now by PostgreSQL's clock, in UTC."""
    db_now: dt.datetime | None = session.scalar(select(_db_now()))
    assert db_now is not None, "now() is never null"
    return db_now.replace(tzinfo=UTC)


def database_now(store: Store, clock: Clock) -> dt.datetime:
    """Now by the clock that stamps the heartbeats: PostgreSQL's (so that a machine whose own
    clock is off still tells how long ago each beat was), or on SQLite, whose rows this
    machine stamps, `clock`'s."""
    if store.url.get_backend_name() != "postgresql":
        return clock()
    with store.session() as session:
        return _session_now(session)


def _member(row: ClusterMember, alive: bool, jobs: Sequence[str]) -> Member:
    return Member(
        name=row.name,
        zone=row.zone,
        host=row.host,
        pid=row.pid,
        started_at=row.started_at,
        heartbeat_at=row.heartbeat_at,
        stopped_at=row.stopped_at,
        alive=alive,
        jobs=tuple(jobs),
        probe_share=row.probe_share,
        last_round_at=row.last_round_at,
        version=row.version,
    )


def members(
    store: Store, lease_seconds: float, now: dt.datetime, once_jobs: Sequence[str] = ()
) -> list[Member]:
    """Every member the store knows, alive ones first, with the jobs each holds.

    On SQLite there is one daemon: it is alive while it holds the store's flock (it writes
    its heartbeat only every half minute), and then it runs every job of once_jobs.
    """
    with store.session() as session:
        bound_lock_wait(session)  # a table locked for minutes holds no request, no command
        if store.url.get_backend_name() != "postgresql":
            running = DaemonClaim(store).held_elsewhere()
            rows = session.scalars(select(ClusterMember).order_by(ClusterMember.heartbeat_at))
            # The newest row is the daemon holding the flock; older ones ran before it.
            listed = [_member(row, False, ()) for row in rows]
            if running and listed and listed[-1].stopped_at is None:
                listed[-1] = dataclasses.replace(listed[-1], alive=True, jobs=tuple(once_jobs))
            return listed[::-1]
        now = _session_now(session)
        leases: dict[str, list[str]] = {}
        for lease in session.scalars(select(JobLease).order_by(JobLease.job)):
            if lease.expires_at > now:
                leases.setdefault(lease.holder, []).append(lease.job)
        lapse = now - dt.timedelta(seconds=lease_seconds)
        listed = [
            _member(
                row, row.stopped_at is None and row.heartbeat_at > lapse, leases.get(row.name, ())
            )
            for row in session.scalars(select(ClusterMember))
        ]
    return sorted(listed, key=lambda m: (not m.alive, m.name))
