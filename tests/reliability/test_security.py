"""Security: checkpoints never run pickled code, credentials live only in the environment, and the
logs of a data run carry no answer text or image bytes.
`python -m pytest tests/reliability/test_security.py`"""

import os
import pickle
import re
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest
import torch

from models import checkpoint as ckpt

REPO = Path(__file__).resolve().parents[2]
CODE_DIRS = ("assets", "models", "pipelines", "infra")


class Payload:
    """Unpickling this runs a shell command: the attack a checkpoint file can carry."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("file", [ckpt.OPTIM, ckpt.WEIGHTS])
def test_malicious_checkpoint_file_is_refused_and_never_runs(tmp_path, file):
    marker = tmp_path / "pwned"
    folder = tmp_path / "ckpt"
    folder.mkdir()
    with open(folder / file, "wb") as f:  # torch.save's zip pickle, the usual .pt form
        torch.save({"optimizer": Payload(marker), "scheduler": None}, f)
    model = torch.nn.Linear(2, 2)
    with pytest.raises(Exception) as e:
        if file == ckpt.OPTIM:
            ckpt.load_optimizer(folder, torch.optim.SGD(model.parameters(), lr=0.1))
        else:
            ckpt.load_weights(folder, model)
    assert not marker.exists(), "the pickled payload ran"
    assert isinstance(e.value, pickle.UnpicklingError) or file == ckpt.WEIGHTS


def _py_sources():
    for d in CODE_DIRS:
        yield from sorted((REPO / d).rglob("*.py"))


def test_code_never_unpickles():
    """Every torch.load passes weights_only=True; no pickle/joblib/mlflow.pytorch loading."""
    bad = []
    for path in _py_sources():
        text = path.read_text()
        for m in re.finditer(r"torch\.load\((?:[^()]|\([^()]*\))*\)", text):
            if "weights_only=True" not in m.group(0):
                bad.append(f"{path.relative_to(REPO)}: {m.group(0)}")
        for pat in (r"\bpickle\.loads?\(", r"\bjoblib\.load\(", r"mlflow\.pytorch\.load_model\(",
                    r"\bdill\.loads?\(", r"\bcloudpickle\.loads?\("):
            bad += [f"{path.relative_to(REPO)}: {m.group(0)}" for m in re.finditer(pat, text)]
    assert not bad, bad


# ---- credentials -------------------------------------------------------------------------------
SECRET_PATTERNS = {
    "aws_access_key_id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "private_key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    # a URL with a literal password (not ${VAR} / {placeholder}): user:pw@host
    "url_password": re.compile(r"://[\w.-]+:(?![$\{])[^@\s/'\"]{3,}@"),
}
# In config files (YAML, env, SQL, TOML, INI): a secret-named key given a literal value.
# (The key must end in the secret word: `postgresqlSecretName`, `secretRef` name a Secret object.)
CONFIG_SECRET = re.compile(
    r"(?im)^[ \t]*-?[ \t]*[\"']?[\w.-]*(?:password|secret|access_key|access_key_id|api_key|token)[\"']?[ \t]*[:=][ \t]*"
    r"(?![\s#]|$|\$\{|\{[ \t]*env|[\"']?\$|(?:true|false|null|~)\b)(\S+)")
CONFIG_SUFFIXES = {".yaml", ".yml", ".env", ".example", ".sql", ".toml", ".ini", ".cfg", ""}


def scan(name: str, text: str) -> list[str]:
    hits = [f"{name}: {k}" for k, rx in SECRET_PATTERNS.items() if rx.search(text)]
    if Path(name).suffix in CONFIG_SUFFIXES or name.endswith("config"):
        hits += [f"{name}: {m.group(0).strip()}" for m in CONFIG_SECRET.finditer(text)]
    return hits


# Planted values are assembled at run time, so this file itself passes the scan of tracked files.
FAKE_KEY_ID = "AKIA" + "IOSFODNN7EXAMPLE"


def test_scanner_finds_planted_secrets():
    assert scan("params.yaml", "s3:\n  secret_access_key: wJalrXUtnFEMI/K7MDENG\n")
    assert scan("x.py", f'KEY = "{FAKE_KEY_ID}"')
    assert scan("a.yaml", "uri: postgresql://spotdiff:" + "hunter22@db:5432/mlflow")
    assert scan(".env.example", "AWS_SECRET_ACCESS_KEY=abc123\n")
    assert not scan("a.yaml", "uri: postgresql://spotdiff:${POSTGRES_PASSWORD:?set}@db/x\n"
                              "password: {env: DAGSTER_PG_PASSWORD}\nAWS_SECRET_ACCESS_KEY=\nPOSTGRES_PASSWORD=\n"
                              "generatePostgresqlPasswordSecret: false\npostgresqlSecretName: pg-secret\n")


def test_no_credentials_in_tracked_files():
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    hits = []
    for name in files:
        path = REPO / name
        if not path.is_file() or path.suffix in {".png", ".jpg", ".gz", ".parquet"}:
            continue
        try:
            hits += scan(name, path.read_text())
        except UnicodeDecodeError:
            continue
    assert not hits, hits


def test_s3_keys_come_from_the_environment(monkeypatch):
    """Storage options carry only the endpoint; boto reads AWS_* keys from the environment."""
    from assets.params import storage_options

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-in-any-file")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:8333")
    opts = storage_options("s3://bucket/data")
    assert opts == {"client_kwargs": {"endpoint_url": "http://127.0.0.1:8333"}}
    assert "not-in-any-file" not in repr(opts)


# ---- logs --------------------------------------------------------------------------------------
@pytest.mark.slow  # a whole smoke data run: kept out of the fast lane
def test_data_run_logs_no_answers_or_image_bytes(smoke_dataset, tmp_path):
    """`spotdiff pairs` and `spotdiff residuals` on the smoke dataset, default logging: stdout and
    stderr hold counts and paths, never an answer sentence, a question or image bytes."""
    exe = shutil.which("spotdiff") or "spotdiff"
    mimic, dq = smoke_dataset / "mimic-cxr-jpg", smoke_dataset / "medical-diff-vqa"
    prep, res = tmp_path / "prep", tmp_path / "res"
    logs = b""
    for cmd in (["pairs", "--mimic-root", str(mimic), "--diffvqa-root", str(dq), "--out", str(prep)],
                ["residuals", "--prepared", str(prep), "--out", str(res), "--group"]):
        if cmd[0] == "residuals":  # one group (the first one with pairs) is enough to see its logs
            cmd.append(pl.read_parquet(prep / "pairs.parquet")["group"][0])
        r = subprocess.run([exe, *cmd, "--profile", "smoke"], capture_output=True, timeout=300)
        assert r.returncode == 0, r.stderr.decode()[-2000:]
        logs += r.stdout + r.stderr
    text = logs.decode(errors="replace")
    assert "pairs" in text and "shards" in text  # the run did log its counts
    questions = pl.read_csv(dq / "mimic_pair_questions.csv", infer_schema=False)
    sensitive = {s.strip() for s in questions["answer"].to_list() + questions["question"].to_list()
                 if s and len(s.strip()) > 12}  # short answers ("no", "yes") are common words
    assert sensitive
    leaked = [s for s in sensitive if s in text]
    assert not leaked, leaked[:3]
    for magic in (b"\xff\xd8\xff", b"\x89PNG", b"PAR1"):  # JPEG, PNG, parquet
        assert magic not in logs
    jpeg = next(mimic.rglob("*.jpg")).read_bytes()
    import base64

    assert base64.b64encode(jpeg[:48]).decode()[:32] not in text
