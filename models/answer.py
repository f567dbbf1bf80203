"""Answer a question about one main/reference pair with a trained ReAl checkpoint: the inference
path behind the MLflow pyfunc (models/pyfunc.py), `spotdiff ask` and the served model.

Preprocessing is the residual assets' own (assets/residuals.py decode_resize + normalise_pad,
assets/registration.py register_affine when the model was trained on registered residuals),
then the evaluation view of models/augment.py: what the model sees at serving time is what it
saw at validation. No MLflow here; the pyfunc wrapper adds it."""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from assets.diffvqa.answer_patterns import question_type_of
from assets.registration import RegistrationConfig, register_affine
from assets.residuals import ImageError, decode_resize, normalise_pad
from assets.storage import FileRefused, read_url
from models.augment import AugmentConfig, augment_pair
from models.checkpoint import load_model_from
from models.data import QA, PairSample
from models.metrics import parse_prediction
from models.predict import grammar_processor, head_patterns
from models.train_loop import collate_for

# A MIMIC film is ~2500 px JPEG, ~1-3 MB; 16 MB of image bytes is far above any real film and
# far below what would hurt the server. Pixels are bounded by assets/residuals.py MAX_PIXELS.
MAX_IMAGE_BYTES = 16 * 1024 * 1024
MAX_QUESTION_CHARS = 500


class InputError(ValueError):
    """A request the model cannot answer; the message says which field and why."""


@dataclass(frozen=True)
class Preprocess:
    """How the training data was made (params residuals + model + train.crop_scale)."""

    image_size: int = 256            # residuals.image_size: the stored side
    low_pct: float = 1.0
    high_pct: float = 99.0
    registered: bool = False         # model.residual_kind == "registered"
    registration: dict = field(default_factory=dict)   # RegistrationConfig fields
    crop_scale: float = 1.0          # train.crop_scale: the centred evaluation crop
    out_size: int = 128              # model.image_size

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocess":
        return cls(**d)


def image_bytes(value, field_name: str, allow_paths: bool) -> bytes:
    """A request field -> encoded image bytes. base64 (PNG/JPEG) always; a file path only when
    the caller allows it (in-process `spotdiff ask`), never over HTTP: a path would let a client
    probe the server's files."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
        raise InputError(f"{field_name}: missing image (give a base64-encoded PNG/JPEG)")
    if isinstance(value, (bytes, bytearray)):
        data = bytes(value)
    elif not isinstance(value, str):
        raise InputError(f"{field_name}: expected a base64 string, got {type(value).__name__}")
    elif allow_paths and len(value) < 4096 and os.path.lexists(value):
        try:  # kind and size checked before a byte is read: a FIFO or /dev/zero link never ends
            data = read_url(value, max_bytes=MAX_IMAGE_BYTES)
        except FileRefused as e:
            raise InputError(f"{field_name}: {e.detail}") from None
    else:
        if len(value) > MAX_IMAGE_BYTES * 4 // 3 + 4:
            raise InputError(f"{field_name}: {len(value)} characters of base64 exceeds the "
                             f"{MAX_IMAGE_BYTES // 2**20} MB image bound")
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            hint = "" if allow_paths else " (file paths are not accepted by the served model)"
            raise InputError(f"{field_name}: not valid base64{hint}") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise InputError(f"{field_name}: {len(data)} bytes exceeds the {MAX_IMAGE_BYTES // 2**20} MB image bound")
    if not data:
        raise InputError(f"{field_name}: empty image")
    return data


def decode(data: bytes, field_name: str, p: Preprocess) -> np.ndarray:
    """Encoded bytes -> the uint8 (S, S) image the residual assets store."""
    try:
        img = decode_resize(data, p.image_size)
    except ImageError as e:
        raise InputError(f"{field_name}: {e.detail}") from None
    except Image.DecompressionBombError as e:
        raise InputError(f"{field_name}: {e}") from None
    except Exception as e:  # Pillow: OSError, SyntaxError, ValueError for undecodable bytes
        raise InputError(f"{field_name}: not a decodable image ({type(e).__name__})") from None
    return normalise_pad(img, p.image_size, p.low_pct, p.high_pct)


def prepare_pair(main: np.ndarray, ref: np.ndarray, p: Preprocess):
    """uint8 (S, S) pair -> main, ref, residual (1, 1, s, s) float, as in validation."""
    m = torch.from_numpy(main).float().div(255.0)[None, None]
    r = torch.from_numpy(ref).float().div(255.0)[None, None]
    if p.registered:
        _, warped = register_affine(m, r, RegistrationConfig(**p.registration))
        # the shards store the registered reference as uint8: round the same way
        r = (warped.clamp(0, 1) * 255.0).round() / 255.0
    aug = AugmentConfig(out_size=p.out_size, crop_scale=p.crop_scale)
    m2, r2, res = augment_pair(m[0], r[0], aug, None)
    return m2[None], r2[None], res[None]


class Answerer:
    """A loaded checkpoint plus its preprocessing. `answer` is deterministic (greedy)."""

    def __init__(self, checkpoint_dir: str | Path, prep: Preprocess, num_beams: int = 1):
        self.model, self.tokenizer, _ = load_model_from(checkpoint_dir)
        self.prep, self.num_beams = prep, num_beams
        self.collate = collate_for(self.tokenizer, self.model.cfg.to_dict())

    def batch(self, main, ref, residual, question: str, answer: str = ""):
        sample = PairSample("request", main[0], ref[0], residual[0], (QA(question, answer, ""),))
        return self.collate([sample])

    @torch.no_grad()
    def answer(self, main, ref, residual, question: str) -> str:
        if not isinstance(question, str) or not question.strip():
            raise InputError("question: missing")
        if len(question) > MAX_QUESTION_CHARS:
            raise InputError(f"question: {len(question)} characters exceeds {MAX_QUESTION_CHARS}")
        b = self.batch(main, ref, residual, question)
        feats = self.model.encode_pairs(b.main, b.ref, b.residual)
        budget = self.model.cfg.max_answer_len - 1
        qtype = question_type_of(question)
        patterns = head_patterns(self.model, feats, b.pair_index, [question], [qtype], self.tokenizer, budget)
        processor = grammar_processor(self.tokenizer, [qtype], self.num_beams, budget, patterns)
        ids = self.model.generate(feats, b.pair_index, b.question_ids, b.question_mask,
                                  max_new_tokens=budget, num_beams=self.num_beams,
                                  logits_processor=processor)[0]
        return self.tokenizer.decode(ids, skip_special_tokens=True,
                                     clean_up_tokenization_spaces=False)

    def ask(self, main_bytes: bytes, ref_bytes: bytes, question: str) -> dict:
        """Decode, register and answer: the answer, its parsed changes, and the prepared (main,
        ref, residual) tensors it was computed from, so a heatmap of the same pair does not
        decode and register it again."""
        main = decode(main_bytes, "main_image", self.prep)
        ref = decode(ref_bytes, "ref_image", self.prep)
        tensors = prepare_pair(main, ref, self.prep)
        text = self.answer(*tensors, question)
        changes = parse_prediction(text)
        return {"answer": text, "changes": changes.to_dict() if changes is not None else None,
                "inputs": tensors}

    @staticmethod
    def _change_score(feats, answer: str):
        """Sum of the change head's logits for the changes the answer names; None if none."""
        from assets.diffvqa.vocabulary import FINDINGS
        from assets.finding_states import CHANGE_KINDS

        changes = parse_prediction(answer) if feats.findings is not None else None
        if changes is None or changes.is_empty:
            return None
        cells = [(FINDINGS.index(item[1]), CHANGE_KINDS.index(item[0]))
                 for item in changes.items() if item[1] in FINDINGS]
        if not cells:
            return None
        return sum(feats.findings.change[0, f, k] for f, k in cells)

    def gradcam(self, main, ref, residual, question: str, answer: str) -> np.ndarray:
        """Grad-CAM on the residual encoder's last feature map (the image encoder's, for the
        main image, when the model has no residual branch). The explained score: with finding
        heads and an answer that names changes, the change head's logits of exactly those
        (finding, kind) cells — the evidence for *what changed*; otherwise the answer's
        log-likelihood. Returns (s, s) in [0, 1]."""
        from models.grounding import cam_maps, last_feature_map

        with last_feature_map(self.model) as saved, torch.enable_grad():
            b = self.batch(main, ref, residual, question, answer)
            feats = self.model.encode_pairs(b.main, b.ref, b.residual)
            score = self._change_score(feats, answer)
            if score is None:
                out = self.model(feats, b.pair_index, b.question_ids, b.question_mask,
                                 b.answer_ids, b.answer_mask)
                score = -out["l_gen"]
            score.backward()
            act = saved["a"]
            # image encoder: row 0 is the main image
            return cam_maps(act.detach()[:1], act.grad[:1], main.shape[-1])[0]


# A request is a handful of pairs; a batch of 1000 would hold the worker for minutes.
MAX_ROWS = 16
INPUT_COLUMNS = ("main_image", "ref_image", "question")


def answer_rows(answerer: "Answerer", rows: list[dict], allow_paths: bool,
                keep_inputs: bool = False) -> list[dict]:
    """The served model's and `spotdiff ask`'s one request path: rows of main_image, ref_image
    (base64, or a path when allow_paths) and question -> answer and changes (JSON, "null" when
    unparseable). A column the model does not read is refused, not ignored: a misspelt field
    would otherwise be answered as if it were absent. With keep_inputs, each row also carries
    the prepared tensors it was answered from ("inputs", see Answerer.ask)."""
    import json

    if len(rows) > MAX_ROWS:
        raise InputError(f"{len(rows)} rows in one request; at most {MAX_ROWS}")
    out = []
    for i, row in enumerate(rows):
        where = f"row {i}: " if len(rows) > 1 else ""
        extra = sorted(set(row) - set(INPUT_COLUMNS))
        if extra:
            raise InputError(f"{where}unknown column(s) {extra}; the model reads {list(INPUT_COLUMNS)}")
        try:
            res = answerer.ask(image_bytes(row.get("main_image"), "main_image", allow_paths),
                               image_bytes(row.get("ref_image"), "ref_image", allow_paths),
                               row.get("question"))
        except InputError as e:
            raise InputError(where + str(e)) from None
        out.append({"answer": res["answer"], "changes": json.dumps(res["changes"]),
                    **({"inputs": res["inputs"]} if keep_inputs else {})})
    return out
