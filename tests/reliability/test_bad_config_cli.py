"""Bad params.yaml values and bad command-line arguments: one line naming the key or argument,
exit code 2, no traceback, and no output written. `python -m pytest tests/reliability/test_bad_config_cli.py`"""

import pytest
import yaml
from typer.testing import CliRunner

from pipelines.cli import app
from assets.params import PARAMS_ENV
from tests.fixtures.tiny_mimic import write_tiny

runner = CliRunner()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prep")
    t = write_tiny(tmp / "raw", subjects=3)
    r = runner.invoke(app, ["pairs", "--mimic-root", str(t.mimic_root), "--diffvqa-root", str(t.diffvqa_root),
                            "--out", str(tmp / "prep"), "--profile", "smoke"])
    assert r.exit_code == 0, r.output
    return tmp / "prep"


def _flat(output: str) -> str:
    return "".join(output.split())  # rich wraps long lines, even mid-word


@pytest.mark.parametrize("key, value", [
    ("image_size", "big"), ("register", "maybe"), ("batch_size", 2.5), ("low_pct", [1]),
    ("register_iters", "40,20"),
])
def test_unparseable_params_value_names_the_key(prepared, tmp_path, monkeypatch, key, value):
    from assets.params import repo_root

    params = yaml.safe_load((repo_root() / "params.yaml").read_text())
    params["residuals"][key] = value
    params["profiles"]["smoke"]["residuals"].pop(key, None)
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(params))
    monkeypatch.setenv(PARAMS_ENV, str(bad))
    out = tmp_path / "res"
    r = runner.invoke(app, ["residuals", "--prepared", str(prepared), "--out", str(out), "--group", "p10",
                            "--profile", "smoke"])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and _flat(f"residuals.{key}") in _flat(r.output)
    assert not (out / "manifest.json").exists()


@pytest.mark.parametrize("args, message", [
    (["residuals", "--bogus"], "No such option"),
    (["residuals", "--group"], "requires an argument"),
    (["residuals", "--group", "p42"], "'p42': not one of"),
    (["residuals", "--group", "../p10"], "not one of"),
    (["ingest", "--profile", "nope"], "profile 'nope' not in profiles"),
    (["train", "--set", "train.epochs"], "expected section.key=value"),
    (["no-such-command"], "No such command"),
])
def test_bad_cli_arguments_are_one_clear_error(prepared, tmp_path, args, message):
    r = runner.invoke(app, args + (["--prepared", str(prepared)] if args[0] == "residuals" and len(args) > 2 else []))
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and _flat(message) in _flat(r.output)
