"""The served model's guards (models/serving_app.py) on MLflow's real scoring app: a body past
the bound is refused with 413 before it is read whole (declared or chunked), and an error body
is one line of reason — never the server's stack trace.
`python -m pytest tests/reliability/test_serving_guards.py`"""

from pathlib import Path

import pytest

MODEL_CODE = '''
import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class Echo(PythonModel):
    def predict(self, context, model_input: pd.DataFrame, params=None):
        if (model_input["question"] == "").any():
            raise ValueError("question: missing")
        if (model_input["question"] == "boom").any():
            raise RuntimeError("CUDA error at /srv/spotdiff/models/model.py:123")
        return pd.DataFrame({"answer": model_input["question"]})


mlflow.models.set_model(Echo())
'''


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    import mlflow
    from fastapi.testclient import TestClient

    from models.serving_app import build_app

    d = tmp_path_factory.mktemp("echo")
    (d / "echo_model.py").write_text(MODEL_CODE)
    signature = mlflow.models.ModelSignature(
        inputs=mlflow.types.Schema([mlflow.types.ColSpec("string", "question")]))
    mlflow.pyfunc.save_model(str(d / "model"), python_model=str(d / "echo_model.py"), signature=signature)
    return TestClient(build_app(str(d / "model")))


@pytest.mark.timeout(120)
def test_an_error_is_one_line_of_reason_without_the_stack_trace(client):
    r = client.post("/invocations", json={"dataframe_records": [{"question": ""}]})
    assert r.status_code == 400
    assert r.json() == {"error_code": "BAD_REQUEST", "message": "question: missing"}
    assert "Traceback" not in r.text and "/" not in r.json()["message"]
    ok = client.post("/invocations", json={"dataframe_records": [{"question": "hi"}]})
    assert ok.status_code == 200 and ok.json()["predictions"] == [{"answer": "hi"}]



@pytest.mark.timeout(120)
def test_an_internal_failure_is_a_500_that_shows_nothing_of_the_server(client, caplog):
    """MLflow labels every exception from predict a 400 with its message; one that is not about
    the request (here a RuntimeError naming a server path) reaches the client as a plain 500,
    and its trace goes to the server log."""
    with caplog.at_level("ERROR", logger="spotdiff.serve"):
        r = client.post("/invocations", json={"dataframe_records": [{"question": "boom"}]})
    assert r.status_code == 500
    assert r.json() == {"error_code": "INTERNAL_ERROR", "message": "internal error; see the server log"}
    assert "/srv" not in r.text and "CUDA" not in r.text
    assert "CUDA error at /srv" in caplog.text


@pytest.mark.timeout(120)
def test_a_body_past_the_bound_is_refused_before_it_is_read(client):
    from models.serving_app import MAX_BODY_BYTES

    big = b'{"dataframe_records": [{"question": "' + b"A" * MAX_BODY_BYTES + b'"}]}'
    r = client.post("/invocations", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "exceeds the bound" in r.json()["message"]
    chunks = (big[i:i + 2**20] for i in range(0, len(big), 2**20))  # no Content-Length: chunked
    r = client.post("/invocations", content=chunks, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "exceeds the bound" in r.json()["message"]
    # just under the bound still reaches the model
    fits = b'{"dataframe_records": [{"question": "' + b"A" * 1000 + b'"}]}'
    assert client.post("/invocations", content=fits, headers={"Content-Type": "application/json"}).status_code == 200


@pytest.mark.timeout(120)
@pytest.mark.parametrize("body", [
    {"dataframe_records": [{"question": "hi", "extra": "x"}]},
    {"dataframe_split": {"columns": ["question", "extra"], "data": [["hi", "x"]]}},
    {"inputs": {"question": ["hi"], "extra": ["x"]}},
], ids=["records", "split", "inputs"])
def test_a_column_the_signature_does_not_name_is_refused_not_dropped(client, body):
    r = client.post("/invocations", json=body)
    assert r.status_code == 400, r.text
    assert r.json() == {"error_code": "BAD_REQUEST",
                        "message": "unknown column(s) ['extra']; the model reads ['question']"}


@pytest.mark.timeout(120)
def test_a_csv_request_is_checked_by_its_header_row(client):
    csv_type = {"Content-Type": "text/csv"}
    r = client.post("/invocations", content=b"question,extra\nhi,x\n", headers=csv_type)
    assert r.status_code == 400 and r.json()["message"] == "unknown column(s) ['extra']; the model reads ['question']"
    r = client.post("/invocations", content=b'"questoin"\r\nhi\r\n', headers={"Content-Type": "text/csv; charset=utf-8"})
    assert r.status_code == 400 and "['questoin']" in r.json()["message"]
    ok = client.post("/invocations", content=b"question\nhi\n", headers=csv_type)
    assert ok.status_code == 200 and ok.json()["predictions"] == [{"answer": "hi"}]
