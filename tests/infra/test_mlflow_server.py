"""The MLflow tracking server of infra/k8s on a real backend: its manifest's own command, arguments and
environment (the Secrets it references filled in by the test), run here against PostgreSQL from Debian's package
(a cluster of the test's own, on 127.0.0.1) and an S3-compatible store (moto's server, on 127.0.0.1). A run with
a parameter, a metric and an artifact is logged and read back; the run is in PostgreSQL and the artifact in the
bucket; the server answers the in-cluster Host header and refuses another. ``bash infra/install.sh --dev``
installs PostgreSQL."""

import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import pytest

from deploy_checks import MLFLOW_SERVICE, _args

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        pytest.fail("PostgreSQL's server is not installed (no /usr/lib/postgresql/*/bin/initdb): run "
                    "`bash infra/install.sh --dev`", pytrace=False)
    return Path(found[-1]).parent


class Postgres:
    """A throwaway cluster: initdb in a temp folder, TCP on 127.0.0.1 only (password auth), a socket in the
    folder (trust, for the setup). As root, the server runs as the postgres user (or nobody)."""

    def __init__(self) -> None:
        self.bin, self.port = pg_bin(), free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="arfm-pg-"))
        self.user = None
        if os.geteuid() == 0:
            self.user = "postgres" if "postgres" in {p.pw_name for p in pwd.getpwall()} else "nobody"
            os.chown(self.dir, pwd.getpwnam(self.user).pw_uid, pwd.getpwnam(self.user).pw_gid)

    def run(self, *cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.bin / cmd[0]), *cmd[1:]], user=self.user, cwd=self.dir, check=True,
                              capture_output=True, text=True, timeout=120)

    def start(self) -> None:
        self.run("initdb", "-D", str(self.dir / "data"), "-U", "admin", "--auth-local=trust",
                 "--auth-host=scram-sha-256", "--encoding=UTF8", "--no-instructions")
        self.run("pg_ctl", "-D", str(self.dir / "data"), "-l", str(self.dir / "log"), "-w", "-t", "60", "start",
                 "-o", f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir}")

    def sql(self, statement: str, db: str = "postgres") -> str:
        return self.run("psql", "-h", str(self.dir), "-p", str(self.port), "-U", "admin", "-d", db, "-At",
                        "-v", "ON_ERROR_STOP=1", "-c", statement).stdout.strip()

    def stop(self) -> None:
        if (self.dir / "data" / "postmaster.pid").exists():
            self.run("pg_ctl", "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


def manifest_server(rendered) -> dict:
    dep = next(o for o in rendered["gpu"] if o["kind"] == "Deployment" and o["metadata"]["name"] == MLFLOW_SERVICE)
    return dep["spec"]["template"]["spec"]["containers"][0]


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the MLflow server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the MLflow server did not answer /health in {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def test_mlflow_server_on_postgres_and_s3(rendered, tmp_path):
    import boto3
    import requests
    from mlflow.tracking import MlflowClient
    from moto.server import ThreadedMotoServer

    server = manifest_server(rendered)
    args = _args(server)
    db = urllib.parse.urlsplit(args["--backend-store-uri"])
    bucket = urllib.parse.urlsplit(args["--artifacts-destination"])
    assert db.scheme == "postgresql+psycopg" and db.password is None and bucket.scheme == "s3"
    password = secrets.token_hex(16)
    # the Secrets the manifest references, as `kubectl create secret` would hold them
    secret_values = {("arfm-mlflow-db", "password"): password, ("arfm-mlflow-s3", "access-key-id"): "arfm-test",
                     ("arfm-mlflow-s3", "secret-access-key"): secrets.token_hex(16)}

    pg, moto, proc = Postgres(), None, None
    started = time.time()
    try:
        pg.start()
        pg.sql(f"CREATE ROLE {db.username} LOGIN PASSWORD '{password}'")
        pg.sql(f"CREATE DATABASE {db.path.lstrip('/')} OWNER {db.username}")

        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
        moto.start()
        s3_url = "http://%s:%d" % moto.get_host_and_port()
        s3 = boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1",
                          aws_access_key_id=secret_values[("arfm-mlflow-s3", "access-key-id")],
                          aws_secret_access_key=secret_values[("arfm-mlflow-s3", "secret-access-key")])
        s3.create_bucket(Bucket=bucket.netloc)

        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_", "PG"))}
        for var in server["env"]:
            ref = var.get("valueFrom", {}).get("secretKeyRef")
            env[var["name"]] = secret_values[(ref["name"], ref["key"])] if ref else var["value"]
        env["MLFLOW_S3_ENDPOINT_URL"] = s3_url  # the S3 endpoint here (AWS itself needs none)
        port = free_port()
        local = {"--host": "127.0.0.1", "--port": str(port), "--workers": "1",
                 "--backend-store-uri": args["--backend-store-uri"].replace(db.netloc.split("@")[1],
                                                                            f"127.0.0.1:{pg.port}"),
                 # the manifest's hosts, and this test's address (as `kubectl port-forward` gives localhost:5000)
                 "--allowed-hosts": f"{args['--allowed-hosts']},127.0.0.1:{port}"}
        argv = [f"{k}={local.get(k, v)}" if v or k in local else k for k, v in args.items()]
        assert server["command"] == ["mlflow", "server"]
        log = tmp_path / "mlflow.log"
        with open(log, "w") as out:
            proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", *argv], env=env, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc, log)

        client = MlflowClient(tracking_uri=url)
        exp = client.create_experiment("arfm-k8s-check")
        run = client.create_run(exp, run_name="backend-check")
        client.log_param(run.info.run_id, "paradigm", "fm")
        for step, value in enumerate([2.5, 1.25, 0.625]):
            client.log_metric(run.info.run_id, "loss", value, step=step)
        note = tmp_path / "note.txt"
        note.write_text("logged through the tracking server\n")
        client.log_artifact(run.info.run_id, str(note))
        client.set_terminated(run.info.run_id)

        back = client.get_run(run.info.run_id)
        assert back.data.params == {"paradigm": "fm"}
        assert [m.value for m in client.get_metric_history(run.info.run_id, "loss")] == [2.5, 1.25, 0.625]
        assert back.info.status == "FINISHED"
        fetched = client.download_artifacts(run.info.run_id, "note.txt", str(tmp_path / "back"))
        assert Path(fetched).read_text() == note.read_text()
        # where they live: the run in PostgreSQL, the artifact in the bucket
        assert pg.sql(f"SELECT name FROM runs WHERE run_uuid = '{run.info.run_id}'", db="mlflow") == "backend-check"
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket.netloc).get("Contents", [])]
        assert any(k.startswith(bucket.path.strip("/") + "/") and k.endswith(f"{run.info.run_id}/artifacts/note.txt")
                   for k in keys), keys

        api = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
        assert requests.get(api, headers={"Host": f"{MLFLOW_SERVICE}:5000"}, timeout=10).status_code == 200
        assert requests.get(api, headers={"Host": "elsewhere.example:5000"}, timeout=10).status_code == 403
        print(f"PostgreSQL + S3 + MLflow server: {time.time() - started:.1f} s")
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if moto is not None:
            moto.stop()
        pg.stop()
