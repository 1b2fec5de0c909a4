"""A real PgBouncer for the tests, configured from the recipe in docs/operations.md.

The ``ini`` block of the doc's "PgBouncer" section is the configuration: the test fills in only its
own server (host, port, database of the ``[databases]`` entry), a free port on 127.0.0.1, paths in
a temporary directory and authentication (``trust`` with an ``auth_file`` naming the test's user:
the test servers trust local connections). Everything else — ``pool_mode``, ``max_client_conn``,
``default_pool_size`` — is used as documented, so the doc cannot drift from what is tested.

PgBouncer refuses to run as root: as root it runs as the owner of the server's unix socket
directory (the user PostgreSQL runs as, who can reach that socket), else as the unprivileged
``pgflowci`` user (created like ``.ci/run`` does for PostgreSQL 15).
"""

from __future__ import annotations

import configparser
import contextlib
import io
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import psycopg
from psycopg.conninfo import make_conninfo

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "operations.md"
CI_USER = "pgflowci"
_FILLED_IN = ("listen_addr", "listen_port", "unix_socket_dir", "auth_type", "auth_file", "logfile", "pidfile")


def binary() -> str | None:
    """The ``pgbouncer`` executable (Debian installs it in /usr/sbin), or None."""
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/local/sbin")


def recipe() -> str:
    """The ``ini`` block of the "PgBouncer" section of docs/operations.md."""
    text = DOC.read_text("utf-8")
    section = text.split("\n## PgBouncer\n", 1)
    assert len(section) == 2, f"{DOC} has no '## PgBouncer' section"
    found = re.search(r"^```ini\n(.*?)^```", section[1].split("\n## ", 1)[0], re.S | re.M)
    assert found, f"the PgBouncer section of {DOC} has no ```ini block"
    return found.group(1)


@attrs.frozen
class Server:
    """Where the test's PostgreSQL is, as libpq resolved it (defaults filled in)."""

    host: str  # a name or address, or a unix socket directory
    port: int
    dbname: str
    user: str
    password: str

    @classmethod
    def of(cls, dsn: str) -> Server:
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            info = conn.info
            return cls(info.host, info.port, info.dbname, info.user, info.password or "")


def config(server: Server, port: int, workdir: Path) -> tuple[str, str]:
    """The recipe with the test's server, port and paths filled in; and the database name clients
    use (the recipe's ``[databases]`` entry)."""
    parser = configparser.ConfigParser(
        interpolation=None, delimiters=("=",), comment_prefixes=(";", "#"), strict=True
    )
    parser.optionxform = str  # keep names as written
    parser.read_string(recipe())
    settings = parser["pgbouncer"]
    missing = [key for key in _FILLED_IN if key not in settings]
    assert not missing, f"the recipe in {DOC} lacks {missing}"
    assert settings["pool_mode"] == "transaction", "the recipe is the transaction-pooling one"
    (alias, target), *more = parser.items("databases")
    assert not more, "the recipe has one [databases] entry"
    fields = dict(part.split("=", 1) for part in target.split())
    assert {"host", "port", "dbname"} <= fields.keys(), f"[databases] {alias} = {target}"
    fields.update(host=server.host, port=str(server.port), dbname=server.dbname)
    parser["databases"][alias] = " ".join(f"{k}={v}" for k, v in fields.items())
    settings.update({
        "listen_addr": "127.0.0.1", "listen_port": str(port), "unix_socket_dir": str(workdir),
        "auth_type": "trust", "auth_file": str(workdir / "userlist.txt"),
        "logfile": str(workdir / "pgbouncer.log"), "pidfile": str(workdir / "pgbouncer.pid"),
    })  # fmt: skip
    out = io.StringIO()
    parser.write(out)
    return out.getvalue(), alias


@attrs.frozen
class Bouncer:
    """A running PgBouncer: ``dsn`` goes through it, ``direct_dsn`` straight to PostgreSQL."""

    dsn: str
    direct_dsn: str
    workdir: Path

    def log(self) -> str:
        path = self.workdir / "pgbouncer.log"
        return path.read_text("utf-8", "replace") if path.exists() else ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _run_as(server: Server) -> str | None:
    """The user PgBouncer runs as when we are root (None: ourselves)."""
    if os.geteuid() != 0:
        return None
    if server.host.startswith("/"):
        owner = os.stat(server.host).st_uid
        if owner != 0:
            return pwd.getpwuid(owner).pw_name
    try:
        pwd.getpwnam(CI_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", CI_USER], check=True
        )
    return CI_USER


@contextlib.contextmanager
def running(direct_dsn: str, attempts: int = 3) -> Iterator[Bouncer]:
    """PgBouncer in front of ``direct_dsn``'s server, from the doc's recipe; stopped on exit."""
    exe = binary()
    assert exe is not None
    server = Server.of(direct_dsn)
    user = _run_as(server)
    for attempt in range(1, attempts + 1):
        workdir = Path(tempfile.mkdtemp(prefix="pgflow-pgbouncer-"))
        try:
            port = _free_port()
            ini, alias = config(server, port, workdir)
            (workdir / "pgbouncer.ini").write_text(ini, "utf-8")
            (workdir / "userlist.txt").write_text(f'"{server.user}" "{server.password}"\n', "utf-8")
            cmd = [exe, str(workdir / "pgbouncer.ini")]
            if user is not None:
                entry = pwd.getpwnam(user)
                for path in (workdir, *workdir.iterdir()):
                    os.chown(path, entry.pw_uid, entry.pw_gid)
                cmd[1:1] = ["-u", user]  # PgBouncer refuses to run as root: it switches to the user
            dsn = make_conninfo(
                "", host="127.0.0.1", port=port, dbname=alias, user=server.user,
                password=server.password or None, connect_timeout=10,
            )  # fmt: skip
            with open(workdir / "console.log", "wb") as console:
                proc = subprocess.Popen(
                    cmd, stdout=console, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
                )
            try:
                if _wait_ready(proc, dsn):
                    yield Bouncer(dsn, direct_dsn, workdir)
                    return
            finally:
                _stop(proc)
            output = (workdir / "console.log").read_text("utf-8", "replace")
            if attempt == attempts or "Address already in use" not in output:
                raise AssertionError(f"pgbouncer did not start: {' '.join(cmd)}\n{output}")
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


def _wait_ready(proc: subprocess.Popen[bytes], dsn: str, timeout: float = 15.0) -> bool:
    """True once a query goes through PgBouncer; False if it exited first."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        try:
            with psycopg.connect(dsn, prepare_threshold=None, autocommit=True) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()  # SIGTERM: immediate shutdown
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
