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

# A request is a handful of pairs; a batch of 1000 would hold the worker for minutes.
MAX_ROWS = 16


class SpotdiffReAl(PythonModel):
    def load_context(self, context):
        from models.answer import Answerer, Preprocess

        prep = Preprocess.from_dict(json.loads(Path(context.artifacts["preprocess"]).read_text()))
        self.answerer = Answerer(context.artifacts["checkpoint"], prep)
        self.allow_paths = bool((context.model_config or {}).get("allow_paths", False))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from models.answer import InputError, image_bytes

        if len(model_input) > MAX_ROWS:
            raise InputError(f"{len(model_input)} rows in one request; at most {MAX_ROWS}")
        out = []
        for i, row in enumerate(model_input.to_dict("records")):
            where = f"row {i}: " if len(model_input) > 1 else ""
            try:
                res = self.answerer.ask(image_bytes(row.get("main_image"), "main_image", self.allow_paths),
                                        image_bytes(row.get("ref_image"), "ref_image", self.allow_paths),
                                        row.get("question"))
            except InputError as e:
                raise InputError(where + str(e)) from None
            out.append({"answer": res["answer"], "changes": json.dumps(res["changes"])})
        return pd.DataFrame(out, columns=["answer", "changes"])


mlflow.models.set_model(SpotdiffReAl())
