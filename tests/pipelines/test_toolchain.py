"""The two-venv toolchain works: Dagster's selection parser (needs antlr 4.13 in .venv) and DVC's
`exp run -S` (needs antlr 4.9 in .venv-dvc) both run, in real tmp projects.
`python -m pytest tests/pipelines/test_toolchain.py`"""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


def run(cmd, cwd, env=None):
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"{cmd} failed:\n{res.stdout}\n{res.stderr}"
    return res.stdout


def test_dagster_asset_materialize_select(tmp_path):
    (tmp_path / "defs.py").write_text(textwrap.dedent("""
        import dagster as dg

        @dg.asset
        def a() -> int:
            return 1

        @dg.asset
        def b(a: int) -> int:
            open("b.txt", "w").write(str(a + 1))
            return a + 1

        defs = dg.Definitions(assets=[a, b])
    """))
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home")}
    (tmp_path / "home").mkdir()
    dagster = Path(sys.executable).parent / "dagster"
    run([str(dagster), "asset", "materialize", "-f", "defs.py", "--select", "a*"], tmp_path, env)
    assert (tmp_path / "b.txt").read_text() == "2"  # "a*" = a and everything downstream of it
    # the selection parser (antlr) picked exactly the two assets
    res = subprocess.run([str(dagster), "asset", "list", "-f", "defs.py", "--select", "b"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["b"]


@pytest.fixture()
def dvc_project(tmp_path):
    dvc = shutil.which("dvc")
    assert dvc, "dvc not on PATH: run via scripts/test.sh (it links .venv-dvc/bin/dvc)"
    run(["git", "init", "-q"], tmp_path)
    run(["git", "config", "user.email", "t@t"], tmp_path)
    run(["git", "config", "user.name", "t"], tmp_path)
    run([dvc, "init", "-q"], tmp_path)
    (tmp_path / "params.yaml").write_text("profile: a\nscale: 2\n")
    (tmp_path / "dvc.yaml").write_text(textwrap.dedent(f"""
        stages:
          double:
            cmd: {sys.executable} -c "import yaml; p=yaml.safe_load(open('params.yaml')); open('out.txt','w').write(str(p['scale']*21))"
            params: [scale]
            outs: [out.txt]
    """))
    run(["git", "add", "-A"], tmp_path)
    run(["git", "commit", "-qm", "init"], tmp_path)
    return tmp_path, dvc


def test_dvc_repro_then_exp_run_with_set_param(dvc_project):
    path, dvc = dvc_project
    run([dvc, "repro"], path)
    assert (path / "out.txt").read_text() == "42"
    # `exp run -S` is what ablations use; it fails with antlr 4.13 ("Could not deserialize ATN")
    run([dvc, "exp", "run", "-S", "scale=3"], path)
    assert (path / "out.txt").read_text() == "63"
    shown = run([dvc, "exp", "show", "--json"], path)
    assert '"scale": 3' in shown
