"""The production stack's servers for tests, each started on 127.0.0.1 in a temporary folder and stopped by the test:

- `S3Server`: moto's S3 server (``moto[server]``, from PyPI) with IAM authentication on: requests must be signed by
  the access key the fixture creates, so wrong credentials fail as they would on AWS or MinIO. MinIO is not
  packaged for Debian or PyPI and nothing else here downloads it; moto is pure Python and installs with pip.
  Moto keeps objects in memory, so restarting moto itself would lose the bucket: `restart()` restarts the server's
  front instead (a TCP listener on the public port that forwards to moto), and clients see what a restarting
  storage server shows them (refused connections, dropped requests) while the objects survive, as on disk.
- `Postgres`: Debian's PostgreSQL (``initdb`` + ``pg_ctl``) in a temporary data folder; `restart()` is a real
  ``pg_ctl restart -m fast`` (every connection dropped).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tests.cluster import free_port

PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)
BUCKET = "raykd"


def wait_for_port(port: int, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout:g} s")


class _Front:
    """A TCP listener on `port` that forwards each connection to `target` (threads; close() drops everything)."""

    def __init__(self, port: int, target: int) -> None:
        self.port, self.target = port, target
        self.listener = socket.create_server(("127.0.0.1", port), reuse_port=False)
        self.sockets: set[socket.socket] = set()
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.listener.close()
        with self.lock:
            for s in self.sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            self.sockets.clear()


class S3Server:
    """moto's S3 with IAM auth on 127.0.0.1; `env` holds what a client needs (credentials, region, endpoint)."""

    def __init__(self, folder: Path) -> None:
        import boto3

        self.port, backend = free_port(), free_port()
        self.log = open(folder / "moto.log", "w")  # noqa: SIM115 - open for the server's lifetime
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(backend)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"},  # the 3 IAM calls below; then signed requests
            start_new_session=True,
        )
        wait_for_port(backend)
        self.front = _Front(self.port, backend)
        self.backend = backend
        endpoint = f"http://127.0.0.1:{self.port}"
        admin = {"aws_access_key_id": "admin", "aws_secret_access_key": "admin", "region_name": "us-east-1"}
        iam = boto3.client("iam", endpoint_url=endpoint, **admin)
        iam.create_user(UserName="raykd")
        key = iam.create_access_key(UserName="raykd")["AccessKey"]
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        iam.put_user_policy(UserName="raykd", PolicyName="s3", PolicyDocument=json.dumps(policy))
        self.env = {
            "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint,
        }
        self.client().create_bucket(Bucket=BUCKET)

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.env["AWS_ENDPOINT_URL"],
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
        )

    def keys(self, prefix: str) -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def restart(self, down_s: float) -> None:
        """The server goes away (open connections dropped, new ones refused) for `down_s` seconds, then comes back
        with every object it had."""
        self.front.close()
        time.sleep(down_s)
        self.front = _Front(self.port, self.backend)

    def stop(self) -> None:
        self.front.close()
        self.proc.kill()
        self.proc.wait(timeout=30)
        self.log.close()


class Postgres:
    """A PostgreSQL server in a temporary folder on a free port, database `mlflow`, user `raykd` (trust auth on
    127.0.0.1)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="raykd-pg-"))  # not under pytest's folders: private to root
        self.data, self.log = self.root / "data", self.root / "postgres.log"
        # PostgreSQL refuses to run as root: as root (CI), run it as Debian's `postgres` user
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user:
            shutil.chown(self.root, pwd.getpwnam(self.user).pw_uid)
        self._run("initdb", "-D", str(self.data), "-U", "raykd", "--auth=trust", "-E", "UTF8")
        self._ctl("start")
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "raykd", "mlflow")
        self.uri = f"postgresql://raykd@127.0.0.1:{self.port}/mlflow"

    def _run(self, tool: str, *args: str) -> None:
        command = [str(PG_BIN / tool), *args]
        if self.user:
            command = ["runuser", "-u", self.user, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=self.root)
        if result.returncode != 0:
            raise AssertionError(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")

    def _ctl(self, action: str, *args: str) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log), "-w", *args, action)

    def restart(self) -> None:
        self._ctl("restart", "-m", "fast")

    def stop(self) -> None:
        self._ctl("stop", "-m", "immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def missing_production_packages() -> str | None:
    """Why the production-stack tests cannot run here, or None."""
    try:
        import boto3  # noqa: F401
        import moto  # noqa: F401
        import psycopg  # noqa: F401
    except ImportError as error:
        return f"{error.name} is not installed (pip install -e '.[test]' brings moto[server], psycopg[binary], boto3)"
    if PG_BIN is None:
        return "PostgreSQL is not installed (Debian: apt-get install postgresql)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: PostgreSQL will not start as root"
    return None
