"""Scores for generated answers: the field's NLG metrics, computed as the papers do, plus what
they do not report — whether the *change* was right.

NLG: pycocoevalcap (the coco-caption code EKAID, PLURAL and ReAl use): PTB tokenizer (Java,
lower-cased, punctuation dropped), one reference per question, BLEU-1..4, METEOR 1.5, ROUGE-L and
CIDEr (pycocoevalcap's Cider is CIDEr-D: clipped counts, Gaussian length penalty, x10).

Change: reference and prediction are parsed with the answer grammar into change sets
(assets/diffvqa/grammar.py) and compared as sets of atoms ("added", f) / ("missing", f) /
("level", f, from, to): micro precision, recall and F1 over all questions. Exact match,
"nothing has changed" accuracy, bootstrap 95 % intervals and a per-template breakdown complete it.
See docs/model.md for the conventions (0/0 := 0, off-grammar predictions, normalisation)."""

from __future__ import annotations

import contextlib
import hashlib
import threading
from pathlib import Path

import numpy as np

from assets.diffvqa.answer_patterns import ANSWER_PATTERNS, answer_pattern
from assets.diffvqa.grammar import ChangeSet, try_parse_answer
from assets.diffvqa.vocabulary import NOTHING_CHANGED

NLG_KEYS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
TEMPLATE_KINDS = ("level", "added", "missing")


def normalize_answer(text: str) -> str:
    """Whitespace-collapsed; a difference sentence gets back its grammar-mandated trailing space
    (a decoder that stops right after the final '.' said the same thing)."""
    text = " ".join(text.split())
    if text and text != NOTHING_CHANGED and text.endswith("."):
        text += " "
    return text


def parse_prediction(text: str) -> ChangeSet | None:
    """Strict first (vocabulary-checked levels split correctly: "moderate to large"); if a finding
    is invented, lenient, so the invented atom counts as a false positive instead of erasing the
    whole answer. None: off-grammar, scored as an empty change set."""
    text = normalize_answer(text)
    return try_parse_answer(text) or try_parse_answer(text, strict=False)


def template_of(changes: ChangeSet | None) -> str:
    """'nothing', or the sentence kinds present ('level+added', 'missing', ...), or 'other'."""
    if changes is None:
        return "other"
    if changes.is_empty:
        return "nothing"
    present = {"level": changes.levels, "added": changes.added, "missing": changes.missing}
    return "+".join(k for k in TEMPLATE_KINDS if present[k])


# ---- change-level metrics ----------------------------------------------------------------

def change_counts(predictions: list[str], answers: list[str]) -> dict[str, np.ndarray]:
    """Per-question arrays: tp/fp/fn atoms, exact match, the nothing-changed decision, and
    which references/predictions parse. A reference off the grammar (a non-difference question)
    is left out of the change counts (gold_ok False) but still counts for exact match."""
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions for {len(answers)} answers")
    n = len(answers)
    out = {k: np.zeros(n) for k in ("tp", "fp", "fn", "exact", "nothing_gold", "nothing_pred",
                                     "gold_ok", "pred_ok")
           + tuple(f"{w}_{kind}" for kind in TEMPLATE_KINDS for w in ("tp", "gold"))}
    for i, (pred, ans) in enumerate(zip(predictions, answers)):
        p_text, a_text = normalize_answer(pred), normalize_answer(ans)
        out["exact"][i] = p_text == a_text
        out["nothing_gold"][i] = a_text == NOTHING_CHANGED
        out["nothing_pred"][i] = p_text == NOTHING_CHANGED
        gold, got = try_parse_answer(a_text), parse_prediction(p_text)
        out["pred_ok"][i] = got is not None
        if gold is None:
            continue
        out["gold_ok"][i] = 1
        g, p = gold.items(), (got.items() if got is not None else frozenset())
        out["tp"][i], out["fp"][i], out["fn"][i] = len(g & p), len(p - g), len(g - p)
        for kind in TEMPLATE_KINDS:  # recall per change kind: is "missing" ever found?
            gk = {a for a in g if a[0] == kind}
            out[f"tp_{kind}"][i], out[f"gold_{kind}"][i] = len(gk & p), len(gk)
    return out


def _ratio(num, den):
    """Elementwise num/den with 0/0 := 0 (sklearn's zero_division=0)."""
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def _stats_from_sums(s: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The scalar metrics from (possibly batched) sums of the per-question counts."""
    tp, fp, fn = s["tp"], s["fp"], s["fn"]
    return {
        "change_precision": _ratio(tp, tp + fp),
        "change_recall": _ratio(tp, tp + fn),
        "change_f1": _ratio(2 * tp, 2 * tp + fp + fn),  # = 2PR/(P+R) whenever that is defined
        "exact_match": _ratio(s["exact"], s["n"]),
        # the decision "nothing changed" vs "something changed", right or wrong, over all questions
        "nothing_changed_accuracy": _ratio(s["nothing_agree"], s["n"]),
        "nothing_changed_recall": _ratio(s["nothing_both"], s["nothing_gold"]),
        # of the questions whose reference is a difference answer: a single-image answer ("yes",
        # "left lung") is no difference answer, right or wrong (per_type_scores has its own rate)
        "prediction_parse_rate": _ratio(s["pred_ok"], s["gold_ok"]),
        **{f"change_recall_{k}": _ratio(s[f"tp_{k}"], s[f"gold_{k}"]) for k in TEMPLATE_KINDS},
    }


def _per_question(c: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {
        "tp": c["tp"], "fp": c["fp"], "fn": c["fn"], "exact": c["exact"],
        "pred_ok": c["pred_ok"] * c["gold_ok"], "gold_ok": c["gold_ok"], "n": np.ones_like(c["tp"]),
        "nothing_agree": (c["nothing_gold"] == c["nothing_pred"]).astype(float),
        "nothing_both": c["nothing_gold"] * c["nothing_pred"],
        "nothing_gold": c["nothing_gold"],
        **{f"{w}_{k}": c[f"{w}_{k}"] for k in TEMPLATE_KINDS for w in ("tp", "gold")},
    }


def change_scores(predictions: list[str], answers: list[str]) -> dict[str, float]:
    """Change P/R/F1, exact match and nothing-changed accuracy: pure Python, no Java, cheap
    enough for every validation epoch."""
    cols = _per_question(change_counts(predictions, answers))
    stats = _stats_from_sums({k: v.sum() for k, v in cols.items()})
    return {k: float(v) for k, v in stats.items()}


def bootstrap_ci(cols: dict[str, np.ndarray], stat_fn, n_boot: int = 1000, seed: int = 0,
                 chunk: int = 100) -> dict[str, tuple[float, float]]:
    """Percentile 95 % intervals: resample questions with replacement n_boot times and recompute
    `stat_fn` from the resampled column sums. Chunked so memory stays n·chunk."""
    n = len(next(iter(cols.values())))
    if n == 0 or n_boot <= 0:
        return {}
    rng = np.random.default_rng(seed)
    draws: dict[str, list[np.ndarray]] = {}
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
        sums = {k: v[idx].sum(axis=1) for k, v in cols.items()}
        for k, v in stat_fn(sums).items():
            draws.setdefault(k, []).append(np.asarray(v, dtype=float))
    return {k: (float(np.percentile(np.concatenate(v), 2.5)), float(np.percentile(np.concatenate(v), 97.5)))
            for k, v in draws.items()}


# ---- NLG metrics (pycocoevalcap) ------------------------------------------------------------

def nlg_scores(predictions: list[str], answers: list[str]) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Corpus scores exactly as coco-caption computes them, and the per-question scores of the
    metrics whose corpus score is their mean (ROUGE-L; CIDEr with its IDF fixed on this corpus)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tok = PTBTokenizer()
    gts = tok.tokenize({i: [{"caption": a}] for i, a in enumerate(answers)})
    res = tok.tokenize({i: [{"caption": p}] for i, p in enumerate(predictions)})
    if not any(refs[0].strip() for refs in gts.values()):
        # CIDEr would fail inside max() over empty document frequencies, naming nothing.
        raise ValueError("no reference answer has a word to score against (all empty or punctuation)")
    scores: dict[str, float] = {}
    per_q: dict[str, np.ndarray] = {}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores.update({f"BLEU-{k + 1}": float(b) for k, b in enumerate(bleu)})
    scores["METEOR"] = _meteor(Meteor(), gts, res)
    for name, scorer in (("ROUGE-L", Rouge()), ("CIDEr", Cider())):
        score, each = scorer.compute_score(gts, res)
        scores[name], per_q[name] = float(score), np.asarray(each, dtype=float)
    return scores, per_q


# METEOR answers over a pipe to a JVM; a JVM that stalls is killed after this long, which ends
# the wait with an error instead of a hang. Generous: a full test split scores in about a minute.
METEOR_TIMEOUT_S = 1800.0


def _meteor(meteor, gts: dict, res: dict, timeout_s: float = METEOR_TIMEOUT_S) -> float:
    """pycocoevalcap's Meteor.compute_score, never hanging: on an error it keeps its lock held,
    and Meteor.__del__ (run at `del`, or at interpreter exit) waits on that lock forever. Here
    the lock is released and the JVM stopped whatever happens; a failure is one RuntimeError."""
    watchdog = threading.Timer(timeout_s, meteor.meteor_p.kill)
    watchdog.daemon = True
    watchdog.start()
    try:
        return float(meteor.compute_score(gts, res)[0])
    except Exception as e:  # its JVM died or was killed: a short read, a broken pipe
        raise RuntimeError(f"METEOR scorer failed ({type(e).__name__}: {e}; "
                           f"its Java process exited with {meteor.meteor_p.poll()})") from e
    finally:
        watchdog.cancel()
        if meteor.lock.locked():
            meteor.lock.release()
        # Stop its JVM now, not at interpreter exit; __del__ then finds nothing left to do.
        meteor.meteor_p.kill()
        meteor.meteor_p.wait()
        with contextlib.suppress(OSError):  # a pipe to a dead process may not flush
            meteor.meteor_p.stdin.close()


# ---- everything -------------------------------------------------------------------------------

DEFAULT_BOOTSTRAP = 1000
# A report's record of what it scored (models/lifecycle/evaluate.py reuses a report that matches)
SCORED_WITH = "scored_with"


def scored_with(predictions: Path, n_boot: int, seed: int) -> dict:
    """The predictions file's sha256 (streamed) and the bootstrap settings of a report."""
    with predictions.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    return {"predictions_sha256": digest, "bootstrap": int(n_boot), "seed": int(seed)}


def score_predictions(predictions: list[str], answers: list[str], questions: list[str] | None = None,
                      n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0, nlg: bool = True,
                      question_types: list[str] | None = None) -> dict:
    """The full report: flat numbers (NLG_KEYS, change_*, exact_match, ...), `ci95`
    {metric: [lo, hi]}, and `per_template` {template of the reference: {n, metrics}}; with
    questions, also `per_question_form` (the general question vs the area questions); with
    question_types, `per_type` (per_type_scores). When the questions are of several types, the
    headline numbers (NLG, change, exact match, the breakdowns) are the difference questions'
    alone, comparable with a difference-only run; `per_type` scores every type."""
    if not answers:
        raise ValueError("no predictions to score")
    if question_types is not None and len(question_types) != len(answers):
        raise ValueError(f"{len(question_types)} question types for {len(answers)} answers")
    if question_types is not None and "difference" in question_types and set(question_types) != {"difference"}:
        keep = [i for i, t in enumerate(question_types) if t == "difference"]
        report = score_predictions([predictions[i] for i in keep], [answers[i] for i in keep],
                                   [questions[i] for i in keep] if questions is not None else None,
                                   n_boot=n_boot, seed=seed, nlg=nlg)
        report["n_all_types"] = len(answers)
        report["per_type"] = per_type_scores(predictions, answers, question_types, n_boot, seed)
        return report
    counts = change_counts(predictions, answers)
    cols = _per_question(counts)
    report: dict = {"n": len(answers), "n_change_scored": int(counts["gold_ok"].sum())}
    nlg_per_q: dict[str, np.ndarray] = {}
    if nlg:
        nlg_corpus, nlg_per_q = nlg_scores(predictions, answers)
        report.update(nlg_corpus)
    report.update({k: float(v) for k, v in _stats_from_sums({k: v.sum() for k, v in cols.items()}).items()})

    def mean_cols(sums):  # ROUGE-L and CIDEr are means of per-question scores
        return {k: sums[k] / sums["n"] for k in nlg_per_q}

    ci = bootstrap_ci(cols, _stats_from_sums, n_boot, seed)
    if nlg:
        ci.update(bootstrap_ci({**nlg_per_q, "n": cols["n"]}, mean_cols, n_boot, seed))
    report["ci95"] = {k: [lo, hi] for k, (lo, hi) in ci.items()}
    templates = [template_of(try_parse_answer(normalize_answer(a))) for a in answers]
    report["per_template"] = _breakdown(cols, templates)
    if questions is not None:
        forms = ["area" if " area?" in q else "general" for q in questions]
        report["per_question_form"] = _breakdown(cols, forms)
    if question_types is not None:
        report["per_type"] = per_type_scores(predictions, answers, question_types, n_boot, seed)
    return report


# ---- per question type --------------------------------------------------------------------
# Closed questions are scored by accuracy; open ones whose answer names findings, places,
# levels or types by item-level F1 (micro over questions: an answer "edema, pleural effusion"
# against "pleural effusion" is one hit and one false item, not simply wrong); the difference
# question by change-F1.
CLOSED_TYPES = ("presence", "view")
ITEM_TYPES = ("abnormality", "location", "level", "type")


def answer_items(text: str, question_type: str) -> set[str]:
    """The items an open answer names: list entries (", " and "and"), for a location the place
    words without the trailing "area"/"side"."""
    t = normalize_answer(text).strip().rstrip(".").strip()
    if question_type == "location":
        return {w for w in t.replace(",", " ").split() if w not in ("area", "side", "and", "the")}
    parts = [p.strip() for p in t.replace(" and ", ", ").split(",")]
    return {p.removeprefix("and ").strip() for p in parts if p.strip()}


def per_type_scores(predictions: list[str], answers: list[str], question_types: list[str],
                    n_boot: int = 0, seed: int = 0) -> dict[str, dict]:
    """{question type: {n, and accuracy | item_f1/precision/recall | change-F1 and friends, and
    with n_boot > 0 `ci95` of the type's headline metric (TYPE_METRIC), questions resampled}}."""
    out: dict[str, dict] = {}
    for qt in sorted(set(question_types)):
        idx = [i for i, t in enumerate(question_types) if t == qt]
        preds, golds = [predictions[i] for i in idx], [answers[i] for i in idx]
        row: dict = {"n": len(idx)}
        if qt in ANSWER_PATTERNS:  # in its own type's answer language (what constrained decoding keeps)
            pattern = answer_pattern(qt)
            row["parse_rate"] = float(np.mean([pattern.fullmatch(p) is not None for p in preds]))
        # per-question columns and the statistic of their sums: the score, and its bootstrap
        if qt == "difference":
            cols, stat = _per_question(change_counts(preds, golds)), _stats_from_sums
        elif qt in CLOSED_TYPES:
            cols = {"correct": np.array([normalize_answer(p).strip() == normalize_answer(g).strip()
                                         for p, g in zip(preds, golds)], dtype=float),
                    "n": np.ones(len(idx))}
            stat = _accuracy_from_sums
        else:
            counts = [(len(pi & gi), len(pi - gi), len(gi - pi))
                      for pi, gi in ((answer_items(p, qt), answer_items(g, qt)) for p, g in zip(preds, golds))]
            cols = {k: np.array([c[j] for c in counts], dtype=float) for j, k in enumerate(("tp", "fp", "fn"))}
            stat = _items_from_sums
        row.update({k: float(v) for k, v in stat({k: v.sum() for k, v in cols.items()}).items()})
        if n_boot > 0 and qt in TYPE_METRIC:  # a user's file may name types of its own
            metric = TYPE_METRIC[qt]
            ci = bootstrap_ci(cols, lambda sums: {metric: stat(sums)[metric]}, n_boot, seed)
            row["ci95"] = list(ci[metric])
        out[qt] = row
    return out


# The headline score of each question type
TYPE_METRIC = {"difference": "change_f1", "presence": "accuracy", "view": "accuracy",
               "abnormality": "item_f1", "location": "item_f1", "level": "item_f1", "type": "item_f1"}


def _accuracy_from_sums(s: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"accuracy": _ratio(s["correct"], s["n"])}


def _items_from_sums(s: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Micro item precision/recall/F1 from summed hits, false items and missed items."""
    tp, fp, fn = s["tp"], s["fp"], s["fn"]
    return {"item_precision": _ratio(tp, tp + fp), "item_recall": _ratio(tp, tp + fn),
            "item_f1": _ratio(2 * tp, 2 * tp + fp + fn)}


def _breakdown(cols: dict[str, np.ndarray], groups: list[str]) -> dict[str, dict]:
    groups_arr = np.asarray(groups)
    out = {}
    for g in sorted(set(groups)):
        sel = groups_arr == g
        stats = _stats_from_sums({k: v[sel].sum() for k, v in cols.items()})
        out[g] = {"n": int(sel.sum()), **{k: float(v) for k, v in stats.items()}}
    return out
