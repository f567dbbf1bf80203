"""The MLflow pyfunc of spotdiff-real, logged *from code* (models/serving.py passes this file as
`python_model`): MLflow stores this source, not a cloudpickle of live objects, so loading the
model never unpickles anything; the weights are safetensors (models/checkpoint.py).

Input: a DataFrame with `main_image`, `ref_image` (base64 PNG/JPEG; a file path only when loaded
with model_config={"allow_paths": True}, as `spotdiff ask` does) and `question`.
Output: `answer` and `changes` (the parsed change set as JSON, "null" when unparseable)."""

import json
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class SpotdiffReAl(PythonModel):
    def load_context(self, context):
        from models.answer import Answerer, Preprocess

        prep = Preprocess.from_dict(json.loads(Path(context.artifacts["preprocess"]).read_text()))
        self.answerer = Answerer(context.artifacts["checkpoint"], prep)
        self.allow_paths = bool((context.model_config or {}).get("allow_paths", False))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from models.answer import answer_rows

        rows = answer_rows(self.answerer, model_input.to_dict("records"), self.allow_paths)
        return pd.DataFrame(rows, columns=["answer", "changes"])


mlflow.models.set_model(SpotdiffReAl())
