"""The CLI on a store filled from a catalogue file: sync --file, services, syncs."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from monitord.cli import common, main
from monitord.store import open_store
from monitord.store.findings import upsert_finding
from monitord.store.models import Finding, Incident, Silence
from monitord.textable import display_width
from monitord.timeutil import SHANGHAI
from monitord.types import FindingDraft
from tests.fakeportal import make_service


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A config whose store exists, as the daemon's first start leaves it (empty)."""
    path = tmp_path / "monitord.toml"
    path.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "m.db"}"\n', encoding="utf-8")
    open_store(f"sqlite:///{tmp_path / 'm.db'}").dispose()
    return path


@pytest.fixture
def folder_without_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The working folder: empty, with no config there, in $MONITORD_CONFIG or in /etc."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MONITORD_CONFIG", raising=False)
    monkeypatch.setattr(common, "SYSTEM_CONFIG", tmp_path / "etc" / "monitord.toml")
    return tmp_path


def write_catalogue(path: Path, services: list[dict[str, object]]) -> Path:
    path.write_text(json.dumps({"services": services}, ensure_ascii=False), encoding="utf-8")
    return path


def test_sync_from_a_file_then_list_services_as_json(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    catalogue = write_catalogue(
        tmp_path / "catalogue.json",
        [make_service(1), make_service(2, faq_url=None, status="suspended")],
    )
    assert main(["--config", str(config), "sync", "--file", str(catalogue)]) == 0
    assert "synced 2 services: 2 added" in capsys.readouterr().out
    assert main(["--config", str(config), "services", "--json"]) == 0
    services = json.loads(capsys.readouterr().out)
    assert [(s["id"], s["status"]) for s in services] == [
        ("svc-0001", "online"),
        ("svc-0002", "suspended"),
    ]
    assert services[0]["url"] == "https://svc1.example.test/"
    assert services[0]["name"] == "测试服务1"
    assert services[1]["filing_problems"] == [
        "faq_url: missing (常见问答知识库)",
        "suspension: status is suspended but no suspension was filed (7.2.2)",
    ]


def test_services_table_lines_up_chinese_names(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    catalogue = write_catalogue(tmp_path / "c.json", [make_service(1), make_service(22)])
    main(["--config", str(config), "sync", "--file", str(catalogue)])
    capsys.readouterr()
    main(["--config", str(config), "services"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "NAME", "STATUS", "URL", "FILING", "PROBLEMS"]
    status_column = display_width(lines[0][: lines[0].index("STATUS")])
    for line in lines[1:]:
        assert display_width(line[: line.index("online")]) == status_column


def test_syncs_json_records_ok_and_failed_runs_with_reasons(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write_catalogue(tmp_path / "good.json", [make_service(1)])
    bad = tmp_path / "bad.json"
    bad.write_text("<html>not json</html>", encoding="utf-8")
    assert main(["--config", str(config), "sync", "--file", str(good)]) == 0
    assert main(["--config", str(config), "sync", "--file", str(bad)]) == 1
    assert "sync failed: " in capsys.readouterr().err
    assert main(["--config", str(config), "syncs", "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert [r["outcome"] for r in runs] == ["failed", "ok"]
    assert runs[0]["reason"] == f"{bad}: not valid JSON (Expecting value at line 1)"
    assert runs[0]["started_at"].endswith("+00:00")
    assert runs[1]["reason"] is None


def test_a_mistyped_sync_file_is_a_usage_error_not_a_failed_sync(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "catalogue.jsn"
    assert main(["--config", str(config), "sync", "--file", str(missing)]) == 2
    assert capsys.readouterr().err.endswith(
        f"monitord: --file {missing}: cannot be read (No such file or directory)\n"
    )
    assert main(["--config", str(config), "syncs", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []  # no failed sync recorded


@pytest.mark.parametrize(
    ("paging", "reason"),
    [
        (
            {"total": 5, "next": 2},
            "'next' is 2: the file is one page of the catalogue, not the whole of it",
        ),
        ({"total": 5, "next": None}, "holds 2 services but its 'total' is 5"),
    ],
)
def test_a_file_that_says_it_is_part_of_the_catalogue_is_refused(
    tmp_path: Path,
    config: Path,
    capsys: pytest.CaptureFixture[str],
    paging: dict[str, object],
    reason: str,
) -> None:
    # A page saved from the portal was taken for the whole catalogue: the services of its other
    # pages were marked gone, each a take-down without notice.
    whole = write_catalogue(tmp_path / "whole.json", [make_service(n) for n in range(1, 6)])
    assert main(["--config", str(config), "sync", "--file", str(whole)]) == 0
    page = tmp_path / "page1.json"
    document = {"page": 1, **paging, "services": [make_service(1), make_service(2)]}
    page.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    capsys.readouterr()
    assert main(["--config", str(config), "sync", "--file", str(page)]) == 1
    assert f"sync failed: {page}: {reason}" in capsys.readouterr().err
    assert main(["--config", str(config), "services", "--json"]) == 0
    services = json.loads(capsys.readouterr().out)
    assert [s["gone"] for s in services] == [False] * 5


def test_a_sync_shows_its_warnings(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Recorded with the sync run, they were shown by `syncs --json` alone: not logged, not
    # printed by `sync`, no column in `syncs`.
    catalogue = tmp_path / "c.json"
    services = [make_service(1), make_service(2), make_service(1)]
    catalogue.write_text(json.dumps({"total": "2", "services": services}), encoding="utf-8")
    assert main(["--config", str(config), "sync", "--file", str(catalogue)]) == 0
    out, err = capsys.readouterr()
    said = [
        f"{catalogue}: service svc-0001 listed twice",
        f"{catalogue}: 'total' is '2', not a count of services: whether the whole catalogue "
        "was read is not checked",
    ]
    assert out.splitlines() == [
        "synced 2 services: 2 added, 0 changed, 0 gone, 2 events, 2 warnings",
        *(f"  warning: {line}" for line in said),
    ]
    warned = [line for line in err.splitlines() if " WARNING " in line]
    assert [line.split("catalogue sync: ", 1)[1] for line in warned] == said
    assert main(["--config", str(config), "syncs"]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split()[4:6] == ["CHANGES", "WARNINGS"]
    assert row.split()[4:] == ["+2", "~0", "-0", "2"]


def test_services_on_an_empty_store_says_what_to_do(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(config), "services"]) == 0
    assert "run `monitord sync` first" in capsys.readouterr().out


def test_probe_all_on_an_empty_store_says_what_to_do(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Not an empty table and exit 0, which reads as "every service is fine".
    assert main(["--config", str(config), "probe", "--all"]) == 2
    assert "no online service with a URL (run `monitord sync` first)" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command",
    [
        ["services"],
        ["incidents", "list"],
        ["findings"],
        ["syncs"],
        ["incidents", "show", "1"],
        ["probe", "--all"],
        ["probe", "--service", "svc-1"],
    ],
)
def test_a_command_run_from_a_folder_without_config_creates_no_store(
    folder_without_config: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    # At 3 a.m., from the home folder: it made ./var/monitord.db, said "no active incidents"
    # and exited 0.
    assert main(command) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"monitord: no store at {folder_without_config / 'var' / 'monitord.db'}")
    assert "(store.url of (built-in defaults))" in err
    assert "Looked for --config, $MONITORD_CONFIG, ./monitord.toml" in err
    assert not (folder_without_config / "var").exists()


def test_the_system_config_is_found_from_any_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    system = tmp_path / "etc" / "monitord.toml"
    system.parent.mkdir()
    system.write_text('[portal]\nurl = "https://portal.example.gov.cn"\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MONITORD_CONFIG", raising=False)
    monkeypatch.setattr(common, "SYSTEM_CONFIG", system)
    assert main(["check-config"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"config OK: {system}"
    (tmp_path / "monitord.toml").write_text("", encoding="utf-8")  # ./monitord.toml first
    assert main(["check-config"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "config OK: monitord.toml"


UNPRIVILEGED_ROOT = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
unprivileged_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="runs as root without its file-permission override: needs root and setpriv (util-linux)",
)
"""For the tests that run `as_unprivileged_root`."""


def as_unprivileged_root(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """`monitord ARGS` in cwd as root without the power to bypass file permissions, as the
    service's user meets them (`sudo -u monitord` from a folder it cannot read)."""
    env = {k: v for k, v in os.environ.items() if k != "MONITORD_CONFIG"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    return subprocess.run(
        [*UNPRIVILEGED_ROOT, sys.executable, "-m", "monitord.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@unprivileged_root
def test_a_folder_or_config_the_user_cannot_read_is_one_line_not_a_traceback(
    tmp_path: Path,
) -> None:
    # From a folder this user cannot read, ./monitord.toml's check raised PermissionError.
    locked = tmp_path / "home"
    locked.mkdir(mode=0o700)
    (locked / "monitord.toml").write_text("[store]\n", encoding="utf-8")
    os.chown(locked, 65534, 65534)
    done = as_unprivileged_root(["check-config"], locked)
    assert "Traceback" not in done.stderr
    assert str(locked / "monitord.toml") not in done.stdout + done.stderr
    # The built-in store, var/monitord.db in this folder, cannot be made from it either.
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.count("\n") == 1
    assert f"cannot reach {locked / 'var' / 'monitord.db'} (permission denied)" in done.stderr
    # A config named by --config that cannot be read: one line, a usage error.
    unreadable = tmp_path / "theirs.toml"
    unreadable.write_text("[store]\n", encoding="utf-8")
    os.chown(unreadable, 65534, 65534)
    unreadable.chmod(0o600)
    done = as_unprivileged_root(["--config", str(unreadable), "check-config"], tmp_path)
    assert (done.returncode, done.stderr) == (
        2,
        f"monitord: {unreadable}: cannot read the config file (Permission denied)\n",
    )


@unprivileged_root
def test_a_store_whose_folder_takes_no_new_file_is_refused_naming_the_folder(
    tmp_path: Path,
) -> None:
    # A store file anyone may write, in a folder this user cannot write in: `monitord run`
    # failed with "attempt to write a readonly database", naming neither the folder nor the
    # -wal and -shm files SQLite must make there, and check-config said nothing of it.
    folder = tmp_path / "p"
    folder.mkdir()
    open_store(f"sqlite:///{folder / 'monitord.db'}").dispose()
    (folder / "monitord.db").chmod(0o666)
    os.chown(folder, 65534, 65534)
    config = tmp_path / "site.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{folder / "monitord.db"}"\n', encoding="utf-8")
    done = as_unprivileged_root(["--config", str(config), "check-config"], tmp_path)
    assert (done.returncode, done.stdout) == (2, "")
    why = (
        f"cannot open the store at sqlite:///{folder}/monitord.db: SQLite must write "
        f"monitord.db-wal beside it: cannot write in {folder} (permission denied)"
    )
    assert done.stderr == f"monitord: {config}: store.url: {why}\n"
    # The daemon's own refusal names the folder too.
    done = as_unprivileged_root(["--config", str(config), "run"], tmp_path)
    assert done.returncode != 0
    assert done.stderr == (
        f"monitord: cannot read the store at sqlite:///{folder}/monitord.db: SQLite must write "
        f"monitord.db-wal beside it: cannot write in {folder} (permission denied)\n"
    )


@unprivileged_root
@pytest.mark.parametrize(
    "command",
    [["status"], ["backup", "copy.db"], ["migrate", "--check"], ["sync", "--file", "c.json"]],
)
def test_a_store_in_a_folder_the_user_cannot_enter_is_one_line_not_a_traceback(
    tmp_path: Path, command: list[str]
) -> None:
    # Every store command ended in a PermissionError traceback on the store's path.
    locked = tmp_path / "p"
    locked.mkdir(mode=0o700)
    open_store(f"sqlite:///{locked / 'monitord.db'}").dispose()
    os.chown(locked, 65534, 65534)
    config = tmp_path / "site.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{locked / "monitord.db"}"\n', encoding="utf-8")
    write_catalogue(tmp_path / "c.json", [make_service(1)])
    done = as_unprivileged_root(["--config", str(config), *command], tmp_path)
    assert (done.returncode, done.stderr) == (
        2,
        f"monitord: cannot reach the store at {locked / 'monitord.db'} (store.url of {config}): "
        f"this user may not enter {locked} or a folder above it (permission denied): run this "
        "as the store's owner, or change the folder's permissions\n",
    )


@unprivileged_root
def test_a_relative_store_path_from_a_folder_the_user_cannot_read_is_named(
    tmp_path: Path,
) -> None:
    locked = tmp_path / "home"
    locked.mkdir(mode=0o700)
    os.chown(locked, 65534, 65534)
    config = tmp_path / "site.toml"
    config.write_text('[store]\nurl = "sqlite:///var/monitord.db"\n', encoding="utf-8")
    done = as_unprivileged_root(["--config", str(config), "status"], locked)
    assert done.returncode == 2
    assert done.stderr.startswith(
        f"monitord: cannot reach the store at {locked / 'var' / 'monitord.db'} "
    )
    assert done.stderr.count("\n") == 1


@unprivileged_root
def test_a_log_file_the_daemon_cannot_write_fails_the_reload_check(tmp_path: Path) -> None:
    # The unit's reload check said "config OK" with a warning, exit 0, and the daemon, sent
    # SIGHUP, refused the config: `systemctl reload` succeeded without the new config.
    locked = tmp_path / "logs"
    locked.mkdir(mode=0o555)
    config = tmp_path / "site.toml"
    config.write_text(f'[logging]\nfile = "{locked / "m.log.jsonl"}"\n', encoding="utf-8")
    problem = (
        f'{config}: logging.file = "{locked / "m.log.jsonl"}": cannot write in {locked} '
        "(permission denied) as this user"
    )
    done = as_unprivileged_root(["--config", str(config), "check-config", "--for-reload"], tmp_path)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == f"monitord: {problem}; the daemon would refuse to reload with it\n"
    # Run by an operator, who may not be the daemon's user, it stays a warning.
    done = as_unprivileged_root(["--config", str(config), "check-config"], tmp_path)
    assert (done.returncode, done.stdout.splitlines()[0]) == (0, f"config OK: {config}")
    assert done.stderr.startswith(f"warning: {problem}; the daemon refuses to start or reload")


def test_a_log_folder_behind_a_dangling_symlink_fails_the_reload_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The reload check said "config OK" and the daemon refused the reload ("File exists").
    link = tmp_path / "logdir"
    link.symlink_to(tmp_path / "not-mounted" / "logs")
    config = tmp_path / "site.toml"
    config.write_text(f'[logging]\nfile = "{link / "m.log.jsonl"}"\n', encoding="utf-8")
    assert main(["--config", str(config), "check-config", "--for-reload"]) == 2
    assert capsys.readouterr().err == (
        f'monitord: {config}: logging.file = "{link / "m.log.jsonl"}": cannot make its folder '
        f"({link} is a symbolic link to a folder that does not exist "
        f"({tmp_path / 'not-mounted' / 'logs'})) as this user; the daemon would refuse to "
        "reload with it\n"
    )


def test_an_empty_config_path_is_refused_not_replaced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # `--config "$UNSET"` read ./monitord.toml, or the built-in defaults, without a word.
    monkeypatch.chdir(tmp_path)
    assert main(["--config", "", "check-config"]) == 2
    assert (
        capsys.readouterr().err == "monitord: --config: expected a file path, got an empty string\n"
    )


@pytest.mark.parametrize("command", [["syncs"], ["incidents", "list"]])
def test_a_limit_past_what_the_store_takes_is_a_usage_error(
    config: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    # SQLite's OverflowError came out as a traceback.
    limit = "99999999999999999999"
    with pytest.raises(SystemExit) as exit_:
        main(["--config", str(config), *command, "--limit", limit])
    assert exit_.value.code == 2
    assert f"argument --limit: expected a number up to 2147483647, got {limit}" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize("limit", ["0", "-1"])
def test_a_limit_below_one_is_a_usage_error(
    config: Path, capsys: pytest.CaptureFixture[str], limit: str
) -> None:
    # SQLite read LIMIT -1 as "no limit" and 0 showed an empty table.
    with pytest.raises(SystemExit) as exit_:
        main(["--config", str(config), "syncs", "--limit", limit])
    assert exit_.value.code == 2
    assert f"argument --limit: expected at least 1, got {limit}" in capsys.readouterr().err


def test_a_store_folder_that_cannot_be_made_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("", encoding="utf-8")
    path = tmp_path / "site.toml"
    path.write_text(f'[store]\nurl = "sqlite:///{blocker}/sub/m.db"\n', encoding="utf-8")
    assert main(["--config", str(path), "sync", "--file", str(tmp_path / "c.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"monitord: {path}: store.url: cannot create {blocker}")
    assert err.count("\n") == 1


def run_daemon(config: Path) -> subprocess.CompletedProcess[str]:
    """`monitord run` as a process; a timeout, not a hang, should it start after all."""
    env = {k: v for k, v in os.environ.items() if k != "MONITORD_SMTP_PASSWORD"}
    return subprocess.run(
        [sys.executable, "-m", "monitord.cli", "--config", str(config), "run"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_run_refuses_a_log_file_it_cannot_write(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(
        f'[store]\nurl = "sqlite:///{tmp_path / "m.db"}"\n[logging]\nfile = "{tmp_path}"\n',
        encoding="utf-8",
    )
    done = run_daemon(path)
    assert done.returncode == 2
    assert done.stderr == (
        f'monitord: {path}: logging.file = "{tmp_path}": cannot write {tmp_path} (Is a directory)\n'
    )


def test_run_refuses_an_smtp_url_without_its_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every e-mail alert failed at delivery and was retried for ever.
    monkeypatch.delenv("MONITORD_SMTP_PASSWORD", raising=False)
    path = tmp_path / "site.toml"
    path.write_text(
        f'[store]\nurl = "sqlite:///{tmp_path / "m.db"}"\n[alerts]\n'
        'management = ["mailto://monitord:{smtp_password}@smtp.example.gov.cn"]\n',
        encoding="utf-8",
    )
    done = run_daemon(path)
    assert done.returncode == 2
    assert done.stderr == (
        f"monitord: {path}: alerts.management[0] uses {{smtp_password}}, but no SMTP password is "
        "set: set MONITORD_SMTP_PASSWORD in the environment or name a file with "
        "alerts.smtp_password_file\n"
    )
    # Commands an operator runs from a shell without the daemon's secrets still work.
    open_store(f"sqlite:///{tmp_path / 'm.db'}").dispose()
    assert main(["--config", str(path), "services"]) == 0


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_output_to_a_full_disk_is_one_line_not_a_traceback(config: Path) -> None:
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "monitord.cli", "--config", str(config), "services", "--json"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert done.stderr.endswith("monitord: cannot write the output (No space left on device)\n")
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_output_in_an_encoding_without_chinese_is_escaped_not_a_traceback(
    tmp_path: Path, config: Path, encoding: str
) -> None:
    catalogue = write_catalogue(tmp_path / "c.json", [make_service(1)])
    assert main(["--config", str(config), "sync", "--file", str(catalogue)]) == 0
    env = {**os.environ, "PYTHONIOENCODING": encoding}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "monitord.cli", "--config", str(config), *args],
            capture_output=True,
            text=True,
            encoding="ascii",
            env=env,
            timeout=60,
        )

    table = run("services")
    assert (table.returncode, table.stderr) == (0, "")
    assert "\\u6d4b\\u8bd5\\u670d\\u52a11" in table.stdout  # 测试服务1, escaped
    listed = run("services", "--json")
    assert listed.returncode == 0
    assert json.loads(listed.stdout)[0]["name"] == "测试服务1"  # JSON reads the escapes back
    helped = run("incidents", "notify", "--help")
    assert (helped.returncode, helped.stderr) == (0, "")
    assert "\\u521d\\u6b65\\u5224\\u5b9a" in helped.stdout  # 初步判定


@pytest.mark.parametrize(
    ("command", "size_mb", "limit"),
    [
        (["sync", "--file"], 65, "the catalogue file's limit (64 MiB)"),
        (["review", "admins", "--file"], 17, "an accounts export's limit (16 MiB)"),
        (["complaints", "import"], 65, "a complaint export's limit (64 MiB)"),
    ],
)
def test_a_file_too_large_to_read_is_refused_unread_in_one_line(
    tmp_path: Path,
    config: Path,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
    size_mb: int,
    limit: str,
) -> None:
    # Read whole, /dev/zero or a huge file ran the machine out of memory.
    huge = tmp_path / "huge"
    with huge.open("wb") as file:
        file.truncate(size_mb << 20)  # sparse: never written, never read
    assert main(["--config", str(config), *command, str(huge)]) == 2
    assert capsys.readouterr().err.endswith(f"monitord: {huge}: larger than {limit}: not read\n")
    assert main(["--config", str(config), "syncs", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []  # nothing recorded


def test_a_config_too_large_to_read_is_refused_unread_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `--config /dev/zero` hung, reading without end.
    huge = tmp_path / "monitord.toml"
    with huge.open("wb") as file:
        file.truncate(2 << 20)
    assert main(["--config", str(huge), "check-config"]) == 2
    assert capsys.readouterr().err == (
        f"monitord: {huge}: larger than a config file's limit (1 MiB): not read\n"
    )


def test_a_reader_that_goes_away_is_not_a_traceback(tmp_path: Path, config: Path) -> None:
    catalogue = write_catalogue(tmp_path / "c.json", [make_service(i) for i in range(1, 400)])
    assert main(["--config", str(config), "sync", "--file", str(catalogue)]) == 0
    reader = subprocess.Popen(
        [sys.executable, "-m", "monitord.cli", "--config", str(config), "services", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert reader.stdout is not None and reader.stderr is not None
    reader.stdout.read(10)
    reader.stdout.close()  # as `| head -c 10` does
    with reader.stderr:
        err = reader.stderr.read()
    assert reader.wait(timeout=60) == 1
    assert b"Traceback" not in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["http://"], "'http://': expected an http:// or https:// URL with a host"),
        (
            ["https://portal:99999/"],
            "'https://portal:99999/': expected an http:// or https:// URL whose port is a number "
            "up to 65535",
        ),
        (["--service", "svc-0001", "--all"], "give a URL, --service ID or --all, not several"),
    ],
)
def test_probe_refuses_what_it_cannot_probe(
    config: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    # A URL without a host or a port out of range "probed" into one crash per kind;
    # --service with --all ignored --all.
    assert main(["--config", str(config), "probe", *args]) == 2
    assert capsys.readouterr().err == f"monitord: {message}\n"


def test_probe_refuses_a_ca_file_that_is_not_pem(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # It was an ssl.SSLError traceback.
    bundle = tmp_path / "ca.pem"
    bundle.write_text("hello\n", encoding="utf-8")
    status = main(
        ["--config", str(config), "probe", "https://127.0.0.1:1/", "--ca-file", str(bundle)]
    )
    assert status == 2
    assert capsys.readouterr().err == (
        f"monitord: --ca-file {str(bundle)!r}: expected a PEM file of CA certificates "
        "([X509: NO_CERTIFICATE_OR_CRL_FOUND] no certificate or crl found)\n"
    )


FORGED_NAME = "企业开办\x1b[2J\x9b\u202e\n2026-12-04 svc-9999  伪造  online"


def test_catalogue_text_cannot_forge_a_row_or_drive_the_terminal(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A provider's service name went verbatim to the terminal: escape sequences cleared the
    # screen, a bidirectional override reordered the line, a newline forged a row.
    catalogue = write_catalogue(tmp_path / "c.json", [make_service(1, name=FORGED_NAME)])
    assert main(["--config", str(config), "sync", "--file", str(catalogue)]) == 0
    capsys.readouterr()
    assert main(["--config", str(config), "services"]) == 0
    out = capsys.readouterr().out
    assert not {"\x1b", "\x9b", "\u202e"} & set(out)
    lines = out.splitlines()
    assert len(lines) == 2
    # Piped, the cell comes whole (nothing cut), its control characters escaped on one line.
    assert "企业开办\\x1b[2J\\x9b\\u202e\\n2026-12-04 svc-9999  伪造  online  online" in lines[1]
    assert main(["--config", str(config), "services", "--json"]) == 0
    out = capsys.readouterr().out
    assert not {"\x1b", "\x9b", "\u202e"} & set(out)
    assert json.loads(out)[0]["name"] == FORGED_NAME  # escaped, and still the same JSON value


@pytest.mark.parametrize(
    "command",
    [
        ["backup", "-"],
        ["report", "--quarter", "2026q3", "--out", "-"],
        ["sync", "--file", "-"],
        [
            "evidence",
            "add",
            "--clause",
            "7.3.1",
            "--kind",
            "x",
            "--file",
            "-",
            "--date",
            "2026-01-01",
        ],
        ["complaints", "import", "-"],
        ["review", "admins", "--file", "-"],
        ["scan", "import", "-", "--service", "svc-0001"],
    ],
)
def test_a_file_named_dash_is_refused_where_standard_input_is_not_read(
    folder_without_config: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    # `report --out -` wrote the PDF to a file called "-" and recorded that path; `backup -`
    # did the same with the store; the imports then read that file as their input.
    try:
        status = main(command)
    except SystemExit as refused:  # argparse refuses an argument's value this way
        status = int(refused.code or 0)
    assert status == 2
    assert "'-' (standard input or output) is not taken here" in capsys.readouterr().err
    assert not (folder_without_config / "-").exists()


@pytest.mark.parametrize(
    "command",
    [
        ["incidents", "show", "99999999999999999999"],
        ["incidents", "ack", "2147483648"],
        ["silence", "expire", "3000000000"],
        ["findings", "--accept", "99999999999", "--reason", "r", "--until", "2027-01-01"],
    ],
)
def test_a_number_beyond_any_id_is_refused_before_the_store_is_asked(
    folder_without_config: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    # The store was asked, and SQLite's OverflowError came back as a traceback.
    with pytest.raises(SystemExit) as refused:
        main(command)
    assert refused.value.code == 2
    assert "expected a number up to 2147483647" in capsys.readouterr().err


def test_a_sync_that_takes_a_down_service_offline_resolves_its_outage(
    tmp_path: Path, config: Path
) -> None:
    from monitord.config import parse_config
    from monitord.probing import load_targets, record_results
    from monitord.store.models import Finding
    from monitord.timeutil import system_clock
    from monitord.types import ProbeResult

    catalogue = tmp_path / "catalogue.json"
    assert (
        main(
            [
                "--config",
                str(config),
                "sync",
                "--file",
                str(write_catalogue(catalogue, [make_service(1)])),
            ]
        )
        == 0
    )
    store = open_store(f"sqlite:///{tmp_path / 'm.db'}")
    probes = parse_config({}, "test", env={}).probes
    try:
        (target,) = load_targets(store)
        for _ in range(3):
            now = system_clock()
            failed = ProbeResult(
                "availability", target.url, False, 5.0, now, error="refused", service_id=target.id
            )
            record_results(store, {target.id: target}, [failed], probes, now)
        write_catalogue(catalogue, [make_service(1, status="offline")])
        assert main(["--config", str(config), "sync", "--file", str(catalogue)]) == 0
        with store.session() as session:
            found = {(f.rule, f.state) for f in session.scalars(select(Finding))}
    finally:
        store.dispose()
    assert ("service_down", "resolved") in found and ("service_down", "open") not in found


@pytest.mark.parametrize(
    ("command", "said"),
    [
        (
            ["incidents", "open", "--kind", "outage", "--service", "svc-0001", "--summary", "x",
             "--occurred-at", "0001-01-01T00:00"],
            "--occurred-at '0001-01-01T00:00': expected an ISO 8601 time from 1970 on",
        ),
        (
            ["silence", "add", "--service", "svc-0001", "--reason", "x", "--until",
             "9999-12-31T23:59:59-05:00"],
            "--until '9999-12-31T23:59:59-05:00': expected an ISO 8601 time from 1970 on",
        ),
        (
            ["silence", "add", "--service", "svc-0001", "--reason", "x", "--for", "99999999d"],
            "duration '99999999d': at most 3650 days",
        ),
        (
            ["silence", "add", "--service", "svc-0001", "--reason", "x", "--for", "9999999999d"],
            "duration '9999999999d': at most 3650 days",
        ),
    ],
)  # fmt: skip
def test_a_time_no_clock_shows_is_refused_in_one_line(
    config: Path, capsys: pytest.CaptureFixture[str], command: list[str], said: str
) -> None:
    # OverflowError: date value out of range, as a traceback.
    assert main(["--config", str(config), *command]) == 2
    err = capsys.readouterr().err
    assert said in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("2099-03-31T12:00:00Z", dt.datetime(2099, 3, 31, 12, 0, tzinfo=dt.UTC)),
        ("2099-03-31T12:00:00+02:00", dt.datetime(2099, 3, 31, 10, 0, tzinfo=dt.UTC)),
        ("2099-03-31", dt.datetime(2099, 3, 30, 16, 0, tzinfo=dt.UTC)),  # 00:00 Beijing time
    ],
)
def test_an_acceptance_lasts_until_the_moment_given_in_its_own_offset(
    config: Path, capsys: pytest.CaptureFixture[str], given: str, stored: dt.datetime
) -> None:
    # --until 2027-03-31T12:00:00Z was stored as 04:00 UTC: its offset was replaced by +08:00.
    store = open_store(f"sqlite:///{config.parent / 'm.db'}")
    try:
        with store.session() as session:
            finding = upsert_finding(
                session,
                FindingDraft(
                    rule="zap:40012",
                    clause="8.3 b",
                    severity="high",
                    subject_kind="service",
                    subject="svc-0001 /search?q",
                    summary="跨站脚本",
                    service_id="svc-0001",
                ),
                dt.datetime.now(dt.UTC),
            )
            session.flush()
            finding_id = finding.id
        command = ["findings", "--accept", str(finding_id), "--reason", "误报", "--until", given]
        assert main(["--config", str(config), *command]) == 0
        local = stored.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M")
        assert f"finding {finding_id} accepted until {local} CST" in capsys.readouterr().out
        with store.session() as session:
            accepted = session.get(Finding, finding_id)
            assert accepted is not None and accepted.accepted_until == stored
    finally:
        store.dispose()


def test_an_acceptance_given_non_utf8_text_is_stored_with_replacement_characters(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A GBK-encoded --reason or --by on a UTF-8 terminal arrives as lone surrogates
    # (surrogateescape): UnicodeEncodeError as a traceback, nothing accepted.
    store = open_store(f"sqlite:///{config.parent / 'm.db'}")
    try:
        with store.session() as session:
            finding = upsert_finding(
                session,
                FindingDraft(
                    rule="zap:40012",
                    clause="8.3 b",
                    severity="high",
                    subject_kind="service",
                    subject="svc-0001 /search?q",
                    summary="跨站脚本",
                    service_id="svc-0001",
                ),
                dt.datetime.now(dt.UTC),
            )
            session.flush()
            finding_id = finding.id
        reason = os.fsdecode("误报".encode("gbk") + " 误报".encode())  # GBK, then UTF-8
        by = os.fsdecode("王".encode("gbk"))
        command = ["findings", "--accept", str(finding_id), "--until", "2099-03-31"]
        command += ["--reason", reason, "--by", by]
        assert main(["--config", str(config), *command]) == 0
        assert f"finding {finding_id} accepted until" in capsys.readouterr().out
        with store.session() as session:
            accepted = session.get(Finding, finding_id)
            assert accepted is not None
            assert accepted.state == "accepted"
            assert accepted.accepted_reason == "\ufffd" * 4 + " 误报"
            assert accepted.accepted_by == "\ufffd\ufffd"
    finally:
        store.dispose()


def test_text_and_ids_typed_on_a_gbk_terminal_are_kept_with_replacement_characters(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GBK bytes on a UTF-8 terminal arrive as lone surrogates: a summary, a silence's reason or
    # an id made of them failed in the store with a UnicodeEncodeError traceback.
    catalogue = write_catalogue(tmp_path / "c.json", [make_service(1)])
    assert main(["--config", str(config), "sync", "--file", str(catalogue)]) == 0
    gbk = os.fsdecode("服务商电话报告".encode("gbk"))
    replaced = "".join("\ufffd" if "\udc80" <= ch <= "\udcff" else ch for ch in gbk)
    assert replaced != gbk
    opened = ["incidents", "open", "--kind", "data_exposure", "--service", "svc-0001"]
    assert main(["--config", str(config), *opened, "--summary", gbk + " 已报告"]) == 0
    assert main(["--config", str(config), "incidents", "ack", "1", "--note", gbk]) == 0
    silenced = ["silence", "add", "--service", "svc-0001", "--for", "1h", "--reason", gbk]
    assert main(["--config", str(config), *silenced]) == 0
    capsys.readouterr()
    store = open_store(f"sqlite:///{config.parent / 'm.db'}")
    try:
        with store.session() as session:
            incident = session.get(Incident, 1)
            assert incident is not None and incident.summary == replaced + " 已报告"
            assert session.scalars(select(Silence.reason)).all() == [replaced]
    finally:
        store.dispose()

    for command in (
        ["usage", gbk],
        ["findings", "--service", gbk],
        ["scan", gbk],
        ["probe", "--service", gbk],
        ["silence", "add", "--service", gbk, "--for", "1h", "--reason", "演练"],
        [*opened[:-1], gbk, "--summary", "泄露"],
    ):
        status = main(["--config", str(config), *command])
        err = capsys.readouterr().err
        assert "Traceback" not in err and "surrogates" not in err, command
        if command[0] in ("scan", "probe", "silence", "incidents"):
            assert status == 2, command
            assert repr(replaced) in err, command


@pytest.mark.parametrize(
    ("by", "said"),
    [
        ("李" * 201, "--by: 201 characters, at most 200"),
        ("李四\x1b[31m", "--by: holds a control character; write a plain name"),
        ("李四\n管理员", "--by: holds a control character; write a plain name"),
    ],
)
def test_a_by_no_store_column_holds_is_refused_in_one_line_by_every_command(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str], by: str, said: str
) -> None:
    # Over 200 characters, PostgreSQL refused it (StringDataRightTruncation) as a traceback.
    document = tmp_path / "pentest.pdf"
    document.write_bytes(b"%PDF-1.4 report")
    accounts = tmp_path / "accounts.csv"
    accounts.write_text(
        "account,role,vendor,last_login,granted_by,end_date\nboss,法人,,2026-11-01,,\n",
        encoding="utf-8",
    )
    commands = [
        ["evidence", "add", "--clause", "7.3.2", "--kind", "pentest", "--file", str(document),
         "--date", "2026-09-20"],
        ["review", "admins", "--file", str(accounts)],
        ["silence", "add", "--service", "svc-0001", "--reason", "演练", "--for", "2h"],
        ["findings", "--accept", "1", "--reason", "误报", "--until", "2099-03-31"],
    ]  # fmt: skip
    for command in commands:
        assert main(["--config", str(config), *command, "--by", by]) == 2, command
        err = capsys.readouterr().err
        assert err == f"monitord: {said}\n", command


def test_reason_or_until_without_accept_is_refused_in_one_line(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # They were ignored, and the findings listed as if nothing had been asked.
    for flag, value in (("--reason", "误报"), ("--until", "2099-03-31")):
        assert main(["--config", str(config), "findings", flag, value]) == 2
        assert capsys.readouterr().err == (
            f"monitord: {flag}: only with --accept ID (to accept a finding)\n"
        )
