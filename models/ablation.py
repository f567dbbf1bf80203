"""The paper's Table 2 ablations as model-config overrides, and the results page built from the
runs' metrics (plain dicts in; the MLflow query lives in models/tracking.py).

Every variant trains with the same train params (budget, seeds, data); only `model` flags move."""

from __future__ import annotations

import statistics
from pathlib import Path

from models.metrics import TYPE_METRIC

# The paper's model (no finding heads) in its Table 2 variants, then what this project adds on
# the strongest of them: the finding heads and tokens, and encoder pretraining before them.
# The related methods' options are off in every row that does not name them, so a row means the
# same model whatever params.yaml's defaults become.
_OTHERS = {"amif_align": False, "gated_fusion": False}
_PAPER = {"finding_heads": False, "finding_tokens": False, "pair_states": False, "decode_with_heads": False,
          "attribute_heads": False,
          "swap_average": False, **_OTHERS}
_HEADS = {"use_residual": True, "use_rfa": True, "residual_kind": "registered",
          "finding_heads": True, "finding_tokens": True, "pair_states": False, "attribute_heads": True,
          **_OTHERS}
VARIANTS: dict[str, dict] = {
    "baseline": {"use_residual": False, "use_rfa": False, **_PAPER},
    "+residual": {"use_residual": True, "use_rfa": False, "residual_kind": "naive", **_PAPER},
    "+residual+RFA": {"use_residual": True, "use_rfa": True, "residual_kind": "naive", **_PAPER},
    "+registered residual+RFA": {"use_residual": True, "use_rfa": True,
                                 "residual_kind": "registered", **_PAPER},
    # the heads on the paper's baseline: with "+finding heads" it measures the residual's own share
    "baseline+finding heads": {**_HEADS, "use_residual": False, "use_rfa": False},
    "+finding heads": _HEADS,
    "+finding heads+pretraining": _HEADS,
    "+finding heads+pair states": {**_HEADS, "residual_input": "stack", "pair_states": True},
    # AMiF (seed method 001) on the default model: alignment with mined negatives, then the gate
    "+AMiF alignment+mining": {**_HEADS, "amif_align": True},
    "+AMiF alignment+mining+gated fusion": {**_HEADS, "amif_align": True, "gated_fusion": True},
    # the decoder also answers the six single-image question types (per-type metrics) ...
    "+all question types": _HEADS,
    # ... and answers them by comparison with a matched normal study (See-in-Pairs, seed 004)
    "+all question types+See-in-Pairs controls": _HEADS,
}
# Variants that change more than the model: params overlays. One that changes `pairs` gets its
# own pairs and residuals under its run folder (models/lifecycle/ablate.py).
PARAMS_OVERLAYS: dict[str, dict] = {
    "+all question types": {"train": {"question_types": ["all"]}},
    "+all question types+See-in-Pairs controls": {"train": {"question_types": ["all"]},
                                                   "pairs": {"single_image_reference": "control"}},
}
# Variants that run the encoder-pretraining stage first, with this many epochs (others: none).
PRETRAIN_EPOCHS: dict[str, int] = {"+finding heads+pretraining": 4}  # the measured setting (docs/results.md)
TABLE_METRICS = ("change_f1", "change_precision", "change_recall", "exact_match", "BLEU-4",
                 "METEOR", "ROUGE-L", "CIDEr")
GOAL_DELTA = 0.10  # the residual variants should beat the baseline by >= 0.10 change-F1


def question_prior(train: list[tuple[str, str]], test_questions: list[str]) -> list[str]:
    """The answer a model gives if it reads only the question: for each test question, the most
    frequent training answer to that exact question (ties: the first seen); a question never seen
    in training gets the most frequent answer overall. Scored like a model, it is the floor a
    model that uses the images must clear (the ablation table's `question prior` row)."""
    from collections import Counter

    per_q: dict[str, Counter] = {}
    for q, a in train:
        per_q.setdefault(q, Counter())[a] += 1
    overall = Counter(a for _, a in train)
    fallback = overall.most_common(1)[0][0] if overall else ""
    return [per_q[q].most_common(1)[0][0] if q in per_q else fallback for q in test_questions]


def question_prior_scores(pairs, split: str, question_types, nlg: bool = True, n_boot: int = 10,
                          seed: int = 0) -> dict | None:
    """The question prior scored on `split` of a pairs table (polars: question_type, question,
    answer, split), learning from its train split; None when either split is empty."""
    import polars as pl

    from models.metrics import score_predictions

    keep_all = not question_types or "all" in question_types
    if not keep_all:
        pairs = pairs.filter(pl.col("question_type").is_in(list(question_types)))
    train, held = pairs.filter(pl.col("split") == "train"), pairs.filter(pl.col("split") == split)
    if train.is_empty() or held.is_empty():
        return None
    preds = question_prior(list(zip(train["question"], train["answer"])), held["question"].to_list())
    return score_predictions(preds, held["answer"].to_list(), n_boot=n_boot, seed=seed, nlg=nlg)


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(runs: list[dict]) -> dict[str, dict[str, tuple[float, float, int]]]:
    """runs: [{"variant", "seed", "metrics": {test_*/val_*: float}}] -> variant -> metric ->
    (mean, sd, n seeds), in VARIANTS order."""
    out: dict[str, dict] = {}
    for name in VARIANTS:
        mine = [r for r in runs if r["variant"] == name]
        if not mine:
            continue
        keys = sorted({k for r in mine for k in r["metrics"]})
        out[name] = {}
        for k in keys:
            vals = [r["metrics"][k] for r in mine if k in r["metrics"]]
            out[name][k] = (*_mean_sd(vals), len(vals))
    return out


def paired_delta(runs: list[dict], name: str, base: str = "baseline",
                 metric: str = "test_change_f1") -> tuple[float, float, float, int] | None:
    """A variant minus the baseline, seed by seed (same seed: same data order and start), as
    (mean, 95 % low, 95 % high, seeds): Student's t over the paired differences, which is what
    three seeds can say. None below two paired seeds."""
    from scipy.stats import t as student_t

    by_seed = {r["seed"]: r["metrics"].get(metric) for r in runs if r["variant"] == base}
    diffs = [r["metrics"][metric] - by_seed[r["seed"]] for r in runs
             if r["variant"] == name and metric in r["metrics"] and by_seed.get(r["seed"]) is not None]
    if len(diffs) < 2:
        return None
    mean, sd = _mean_sd(diffs)
    half = float(student_t.ppf(0.975, len(diffs) - 1)) * sd / len(diffs) ** 0.5
    return mean, mean - half, mean + half, len(diffs)


def bar_chart(summary: dict, path: Path, metrics=("test_change_f1", "test_BLEU-4", "test_CIDEr")) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.6))
    for ax, m in zip(axes, metrics):
        means = [summary[n].get(m, (0.0, 0.0, 0))[0] for n in names]
        sds = [summary[n].get(m, (0.0, 0.0, 0))[1] for n in names]
        ax.bar(range(len(names)), means, yerr=sds, capsize=3,
               color=["#999999"] + ["#3b7dd8"] * (len(names) - 1))
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_title(m.replace("test_", "test "))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path




def per_type_table(summary: dict) -> list[str]:
    """Markdown lines: per question type scores of the variants that answered more than one type
    (mean ± sd over seeds); empty when none did."""
    rows = {name: {t: m.get(f"test_type/{t}/{k}") for t, k in TYPE_METRIC.items()} for name, m in summary.items()}
    rows = {n: r for n, r in rows.items() if sum(v is not None for v in r.values()) > 1}
    if not rows:
        return []
    lines = ["Per question type (test; change-F1 for difference, accuracy for presence/view, "
             "item-F1 for the others):", "",
             "| variant | " + " | ".join(TYPE_METRIC) + " |", "|---|" + "---|" * len(TYPE_METRIC)]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{v[0]:.3f} ± {v[1]:.3f}" if v else "—" for v in r.values()) + " |")
    return lines + [""]


DEFAULT_VARIANT = "+finding heads"  # the model the default profile trains


# Rows that add one part to another row than the default: each is also compared with that row.
ADDS_TO = {"+AMiF alignment+mining+gated fusion": "+AMiF alignment+mining",
           "+all question types+See-in-Pairs controls": "+all question types"}


def _against(summary: dict, runs: list[dict], name: str, base: str) -> list[str]:
    """Markdown lines: `name` minus `base`, seed by seed, change-F1 with the verdict its interval
    allows, then the single-image types (a part may help there only); point differences of the
    means when fewer than two seeds pair up."""
    paired = paired_delta(runs, name, base=base)
    if paired is None:
        delta = summary[name]["test_change_f1"][0] - summary[base]["test_change_f1"][0]
        out = [f"- {name}: Δ = {delta:+.3f} (one seed: no interval)"]
        others = [f"{t} {summary[name][k][0] - summary[base][k][0]:+.3f}"
                  for t, k in ((t, f"test_type/{t}/{m}") for t, m in TYPE_METRIC.items())
                  if t != "difference" and k in summary[name] and k in summary[base]]
        return out + ([f"  - other types (one seed): {'; '.join(others)}"] if others else [])
    mean, low, high, n = paired
    out = [f"- {name}: Δ = {mean:+.3f} [95 % CI {low:+.3f}, {high:+.3f} over {n} paired seeds]: "
           f"{_verdict(low, high)}"]
    others = []
    for t, k in TYPE_METRIC.items():
        d = None if t == "difference" else paired_delta(runs, name, base=base, metric=f"test_type/{t}/{k}")
        if d is not None:
            beyond = _verdict(d[1], d[2]) != "within seed noise"
            others.append(f"{t} {d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]{' *' if beyond else ''}")
    return out + ([f"  - other types: {'; '.join(others)} (* beyond its interval)"] if others else [])


def against_default(summary: dict, runs: list[dict], default: str = DEFAULT_VARIANT) -> list[str]:
    """Markdown lines: each row built on the default model (one part added or taken away) against
    the default model itself, seed by seed; a part earns the default profile only when the whole
    interval is above zero. Then each row of ADDS_TO against the row it adds its part to."""
    has = lambda n: n in summary and "test_change_f1" in summary[n]  # noqa: E731
    out = []
    if has(default):
        out += [f"Against the default model (`{default}`), seed-paired change-F1:", ""]
        for name in summary:
            if name != default and VARIANTS[name].get("finding_heads") and has(name):
                out += _against(summary, runs, name, default)
        out.append("")
    pairs = [(n, b) for n, b in ADDS_TO.items() if has(n) and has(b)]
    if pairs:
        out += ["Against the row each adds one part to, seed-paired change-F1:", ""]
        for name, base in pairs:
            out += _against(summary, runs, name, base)
        out.append("")
    return out


def _verdict(low: float, high: float) -> str:
    return "helps" if low > 0 else "hurts" if high < 0 else "within seed noise"


def results_markdown(summary: dict, runs: list[dict], group: str, chart: str, setup: str,
                     prior: dict[str, float] | None = None) -> str:
    """docs/results.md: the table (test metrics, mean ± sd over seeds), the chart, the goal."""
    lines = ["# Results: ablations (paper Table 2 and the finding heads)", "",
             f"Generated by `spotdiff ablate` from the MLflow runs tagged `ablation={group}` "
             f"({len(runs)} runs). Do not edit by hand; re-run `spotdiff ablate --report-only "
             f"--group {group}`.", "", setup, "",
             "Test split, scored once per run with the best-on-validation checkpoint; mean ± sd "
             "over seeds (n = seeds).", "",
             "| variant | n | " + " | ".join(TABLE_METRICS) + " | val change_f1 (last epoch) |",
             "|---|---|" + "---|" * (len(TABLE_METRICS) + 1)]
    for name, m in summary.items():
        n = m.get("test_change_f1", (0, 0, 0))[2]
        cells = [f"{m[f'test_{k}'][0]:.3f} ± {m[f'test_{k}'][1]:.3f}" if f"test_{k}" in m else "—"
                 for k in TABLE_METRICS]
        val = m.get("val_change_f1")
        cells.append(f"{val[0]:.3f}" if val else "—")
        lines.append(f"| {name} | {n} | " + " | ".join(cells) + " |")
    if prior:  # no images, no training: what the question text alone earns
        cells = [f"{prior[k]:.3f}" if k in prior else "—" for k in TABLE_METRICS]
        lines.append("| *question prior* (most frequent train answer per question) | — | "
                     + " | ".join(cells) + " | — |")
    lines += ["", f"![ablation bar chart]({chart})", ""]
    lines += per_type_table(summary)
    base = summary.get("baseline", {}).get("test_change_f1")
    if base:
        lines.append(f"Goal: residual variants beat the baseline by ≥ {GOAL_DELTA:.2f} change-F1.")
        lines.append("")
        for name, m in summary.items():
            if name == "baseline" or "test_change_f1" not in m:
                continue
            delta = m["test_change_f1"][0] - base[0]
            verdict = (("met" if delta >= GOAL_DELTA else "not met") if VARIANTS[name]["use_residual"]
                       else "no residual branch: not a goal row")
            paired = paired_delta(runs, name)
            ci = (f" [95 % CI {paired[1]:+.3f}, {paired[2]:+.3f} over {paired[3]} paired seeds]"
                  if paired else "")
            lines.append(f"- {name}: Δ change-F1 = {delta:+.3f}{ci} vs baseline ({verdict})")
        lines.append("")
    lines += against_default(summary, runs)
    lines += ["Runs:", ""]
    for r in sorted(runs, key=lambda r: (list(VARIANTS).index(r["variant"]), r["seed"])):
        lines.append(f"- {r['variant']} seed {r['seed']}: MLflow run `{r['run_id']}` "
                     f"(`{r['run_name']}`)")
    return "\n".join(lines) + "\n"
