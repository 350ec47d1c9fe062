"""Start the MLflow tracking server raykd studies log to.

Local (a laptop, or the server test): sqlite + a local artifact folder, on 127.0.0.1 only:

    python mlflow/serve.py --local ~/raykd-mlflow --port 5000
    MLFLOW_TRACKING_URI=http://127.0.0.1:5000 python studies/strategy_grid.py ...

Cluster (k8s/base/mlflow.yaml runs this with no arguments): every setting from the environment.

    MLFLOW_BACKEND_STORE_URI      database URI (required): sqlite:////mlflow/mlflow.db, postgresql://...
    MLFLOW_ARTIFACTS_DESTINATION  where the server stores artifacts it proxies (default: ./mlartifacts)
    MLFLOW_HOST, MLFLOW_PORT      bind address (default 127.0.0.1:5000; the cluster sets 0.0.0.0)
    MLFLOW_ALLOWED_HOSTS          comma-separated Host headers the server answers (needed behind a Service)
    MLFLOW_WORKERS                server worker processes (default 2)
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION  MLflow 3's job runner (GenAI scorers, trace roll-ups), which raykd does not
                                  use: off unless set here ("true"); on, it starts ~8 more Python processes
    MLFLOW_BASIC_AUTH=1           MLflow's basic-auth app; admin credentials from MLFLOW_AUTH_ADMIN_USERNAME and
                                  MLFLOW_AUTH_ADMIN_PASSWORD (from a Secret), users kept in
                                  MLFLOW_AUTH_DATABASE_URI (default: sqlite next to the artifacts), CSRF key
                                  MLFLOW_FLASK_SERVER_SECRET_KEY (default: a random one; set it when several
                                  replicas serve); clients set MLFLOW_TRACKING_USERNAME / _PASSWORD. Needs the
                                  `auth` extra (pip install "raykd[auth]", i.e. mlflow[auth])

Command-line flags override the environment. ``--print`` shows the `mlflow server` command and exits.
Artifacts are proxied by the server (``--serve-artifacts``), so Ray workers need no storage credentials.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import sys
import tempfile
from pathlib import Path


def server_command(args: argparse.Namespace, env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """The `mlflow server` argv and the extra environment it needs."""
    # MLflow 3 starts a job runner beside the server by default (huey consumers: 10 processes in all, each importing
    # mlflow; 36.4 CPU-s per start against 12.2 without, `python benchmarks/mlflow_server.py`). raykd logs runs,
    # metrics and artifacts only.
    extra: dict[str, str] = {
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": env.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    }
    if args.local:
        root = Path(args.local).expanduser().resolve()
        root.mkdir(parents=True, exist_ok=True)
        backend = f"sqlite:///{root / 'mlflow.db'}"
        artifacts = str(root / "mlartifacts")
    else:
        backend = args.backend_store_uri or env.get("MLFLOW_BACKEND_STORE_URI")
        if not backend:
            raise SystemExit(
                "error: no backend store: pass --local DIR, --backend-store-uri URI or set MLFLOW_BACKEND_STORE_URI"
            )
        artifacts = args.artifacts_destination or env.get("MLFLOW_ARTIFACTS_DESTINATION") or "./mlartifacts"
    host = args.host or env.get("MLFLOW_HOST") or "127.0.0.1"
    port = str(args.port or env.get("MLFLOW_PORT") or 5000)
    workers = str(args.workers or env.get("MLFLOW_WORKERS") or 2)
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        backend,
        "--artifacts-destination",
        artifacts,
        "--serve-artifacts",
        "--host",
        host,
        "--port",
        port,
        "--workers",
        workers,
    ]
    allowed = args.allowed_hosts or env.get("MLFLOW_ALLOWED_HOSTS")
    if allowed:
        command += ["--allowed-hosts", allowed]
    if args.basic_auth or env.get("MLFLOW_BASIC_AUTH") == "1":
        user, password = env.get("MLFLOW_AUTH_ADMIN_USERNAME"), env.get("MLFLOW_AUTH_ADMIN_PASSWORD")
        if not user or not password:
            raise SystemExit("error: basic auth needs MLFLOW_AUTH_ADMIN_USERNAME and MLFLOW_AUTH_ADMIN_PASSWORD")
        if len(password) < 12:  # MLflow 3 refuses to start with a shorter admin password
            raise SystemExit("error: MLFLOW_AUTH_ADMIN_PASSWORD must be at least 12 characters")
        database = env.get("MLFLOW_AUTH_DATABASE_URI") or f"sqlite:///{Path(artifacts).resolve().parent / 'auth.db'}"
        config = Path(tempfile.mkdtemp(prefix="raykd-mlflow-auth-")) / "basic_auth.ini"
        config.write_text(
            "[mlflow]\ndefault_permission = READ\n"
            f"database_uri = {database}\nadmin_username = {user}\nadmin_password = {password}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        )
        config.chmod(0o600)
        extra["MLFLOW_AUTH_CONFIG_PATH"] = str(config)
        if not env.get("MLFLOW_FLASK_SERVER_SECRET_KEY"):  # CSRF key; replicas behind one Service must share it
            extra["MLFLOW_FLASK_SERVER_SECRET_KEY"] = secrets.token_hex(32)
        command += ["--app-name", "basic-auth"]
    return command, extra


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--local", metavar="DIR", help="sqlite backend and artifacts in DIR (local use)")
    parser.add_argument("--backend-store-uri")
    parser.add_argument("--artifacts-destination")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--allowed-hosts")
    parser.add_argument("--basic-auth", action="store_true")
    parser.add_argument("--print", action="store_true", help="print the server command and exit")
    args = parser.parse_args(argv)
    command, extra = server_command(args, dict(os.environ))
    shown = " ".join(shlex.quote(part) for part in command)
    if args.print:
        print(shown)
        return 0
    print(f"[raykd] {shown}", flush=True)
    os.execvpe(command[0], command, {**os.environ, **extra})  # the server replaces this process (signals reach it)
    return 0


if __name__ == "__main__":
    sys.exit(main())
