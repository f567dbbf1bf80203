-- One database per consumer (infra/services.py DATABASES), created on the first start of the
-- compose Postgres (docker-entrypoint-initdb.d).
CREATE DATABASE mlflow;
CREATE DATABASE dagster;
