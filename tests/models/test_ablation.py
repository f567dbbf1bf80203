"""Ablation variants and the results page: python -m pytest tests/models/test_ablation.py -q"""

import pytest

from models.ablation import GOAL_DELTA, PRETRAIN_EPOCHS, VARIANTS, bar_chart, results_markdown, summarize
from models.config import ModelConfig


def test_variants_are_valid_model_configs_and_differ_only_in_flags():
    cfgs = {n: ModelConfig(**v) for n, v in VARIANTS.items()}
    assert not cfgs["baseline"].use_residual and not cfgs["baseline"].use_rfa
    assert cfgs["+residual"].use_residual and not cfgs["+residual"].use_rfa
    assert cfgs["+residual+RFA"].use_rfa
    assert {cfgs[n].residual_kind for n in ("+residual+RFA", "+registered residual+RFA")} == {
        "naive", "registered"}
    flags = {"use_residual", "use_rfa", "residual_kind", "residual_input", "finding_heads", "finding_tokens",
             "pair_states", "decode_with_heads", "swap_average", "amif_align", "gated_fusion",
             "attribute_heads"}
    assert all(set(v) <= flags for v in VARIANTS.values())
    # the paper's variants are the paper's model; the project's additions are separate rows
    assert not any(cfgs[n].finding_heads for n in ("baseline", "+residual", "+residual+RFA"))
    assert cfgs["+finding heads"].finding_tokens and PRETRAIN_EPOCHS["+finding heads+pretraining"] > 0
    assert "+finding heads" not in PRETRAIN_EPOCHS
    # the heads without the residual branch: the pair that isolates the residual's share
    no_res, res = cfgs["baseline+finding heads"], cfgs["+finding heads"]
    assert no_res.finding_heads and not no_res.use_residual and not no_res.use_rfa and res.use_residual
    assert {k: v for k, v in VARIANTS["baseline+finding heads"].items() if k not in ("use_residual", "use_rfa")} == {
        k: v for k, v in VARIANTS["+finding heads"].items() if k not in ("use_residual", "use_rfa")}
    assert cfgs["+finding heads+pair states"].pair_states and not cfgs["+finding heads"].pair_states
    # AMiF's rows add its parts to the default model, one at a time; no other row has them
    amif = [n for n, c in cfgs.items() if c.amif_align or c.gated_fusion]
    assert amif == ["+AMiF alignment+mining", "+AMiF alignment+mining+gated fusion"]
    assert cfgs[amif[0]].amif_align and not cfgs[amif[0]].gated_fusion and cfgs[amif[1]].gated_fusion
    assert cfgs[amif[0]].finding_heads


def _runs():
    # baseline ~0.2, +residual+RFA ~0.35 (meets the goal), +residual ~0.25 (does not)
    table = {"baseline": [0.2, 0.22], "+residual": [0.25, 0.27], "+residual+RFA": [0.35, 0.33]}
    return [{"variant": v, "seed": s, "run_id": f"{v}{s}", "run_name": f"r{s}",
             "metrics": {"test_change_f1": f1, "test_BLEU-4": f1 / 2, "val_change_f1": f1}}
            for v, vals in table.items() for s, f1 in enumerate(vals)]


def test_summary_means_and_goal_verdicts(tmp_path):
    summary = summarize(_runs())
    assert list(summary) == ["baseline", "+residual", "+residual+RFA"]  # VARIANTS order
    mean, sd, n = summary["+residual+RFA"]["test_change_f1"]
    assert (mean, n) == (pytest.approx(0.34), 2) and sd == pytest.approx(0.0141421, rel=1e-4)
    chart = bar_chart(summary, tmp_path / "figures" / "a.png")
    assert chart.stat().st_size > 0
    md = results_markdown(summary, _runs(), "g1", "figures/a.png", "Setup: test.")
    assert "| +residual+RFA | 2 | 0.340 ± 0.014 |" in md
    # paired by seed: +residual is baseline + 0.05 in both seeds, so its interval has no width
    assert f"+residual: Δ change-F1 = {0.26 - 0.21:+.3f} [95 % CI +0.050, +0.050 over 2 paired seeds] vs baseline (not met)" in md
    assert f"+residual+RFA: Δ change-F1 = {0.34 - 0.21:+.3f} [95 % CI " in md and "vs baseline (met)" in md


def test_paired_delta_is_a_t_interval_over_the_seeds_differences():
    from models.ablation import paired_delta

    runs = [{"variant": v, "seed": s, "metrics": {"test_change_f1": f1}}
            for v, vals in {"baseline": [0.1, 0.2, 0.3], "+x": [0.2, 0.4, 0.4]}.items()
            for s, f1 in enumerate(vals)]
    mean, lo, hi, n = paired_delta(runs, "+x")  # differences 0.1, 0.2, 0.1
    assert n == 3 and mean == pytest.approx(0.4 / 3)
    half = 4.302653 * 0.0577350 / 3 ** 0.5  # t(0.975, 2) · sd / √3
    assert (lo, hi) == (pytest.approx(mean - half, rel=1e-4), pytest.approx(mean + half, rel=1e-4))
    assert paired_delta(runs[:1] + runs[3:4], "+x") is None  # one seed: no interval
    assert 0.34 - 0.21 >= GOAL_DELTA > 0.26 - 0.21


def test_question_prior_answers_the_most_frequent_training_answer_per_question():
    from models.ablation import question_prior

    general, area = "what has changed compared to the reference image?", "what has changed in the left lung area?"
    train = [(general, "nothing has changed."), (general, "A. "), (general, "nothing has changed."),
             (area, "B. "), (area, "C. "), (area, "C. ")]
    assert question_prior(train, [general, area, "what has changed in the right apical area?"]) == [
        "nothing has changed.", "C. ", "nothing has changed."]  # unseen question: overall mode
    assert question_prior([], [general]) == [""]


def test_results_page_shows_the_question_prior_row():
    summary = summarize(_runs())
    prior = {"change_f1": 0.051, "exact_match": 0.187, "CIDEr": 1.5}
    md = results_markdown(summary, _runs(), "g1", "figures/a.png", "Setup: test.", prior=prior)
    row = next(line for line in md.splitlines() if line.startswith("| *question prior*"))
    assert "| 0.051 |" in row and "| 0.187 |" in row and "| 1.500 |" in row
    assert "question prior" not in results_markdown(summary, _runs(), "g1", "figures/a.png", "Setup: test.")


def test_per_type_table_lists_variants_that_answered_several_types():
    from models.ablation import per_type_table, summarize

    runs = [{"variant": "+finding heads", "seed": 0, "metrics": {"test_change_f1": 0.5}},
            {"variant": "+all question types", "seed": 0,
             "metrics": {"test_type/difference/change_f1": 0.4, "test_type/presence/accuracy": 0.9}},
            {"variant": "+all question types", "seed": 1,
             "metrics": {"test_type/difference/change_f1": 0.6, "test_type/presence/accuracy": 0.7}}]
    lines = per_type_table(summarize(runs))
    body = [line for line in lines if line.startswith("| +")]
    assert body == ["| +all question types | 0.500 ± 0.141 | 0.800 ± 0.141 | — | — | — | — | — |"]
    assert per_type_table(summarize(runs[:1])) == []


def test_a_pairing_variant_overlays_params_beyond_the_model():
    from models.ablation import PARAMS_OVERLAYS

    see = PARAMS_OVERLAYS["+all question types+See-in-Pairs controls"]
    assert see["pairs"]["single_image_reference"] == "control" and see["train"]["question_types"] == ["all"]
    assert set(PARAMS_OVERLAYS) <= set(VARIANTS)


def test_rows_built_on_the_default_model_are_judged_against_it_by_their_interval():
    from models.ablation import against_default

    table = {"baseline": [0.1, 0.1, 0.1], "baseline+finding heads": [0.30, 0.28, 0.31],
             "+finding heads": [0.40, 0.39, 0.41], "+finding heads+pretraining": [0.38, 0.42, 0.40],
             "+AMiF alignment+mining": [0.45, 0.46, 0.47], "+AMiF alignment+mining+gated fusion": [0.5]}
    runs = [{"variant": v, "seed": s, "run_id": f"{v}{s}", "run_name": f"r{s}", "metrics": {"test_change_f1": f1}}
            for v, vals in table.items() for s, f1 in enumerate(vals)]
    for r in runs:  # pretraining lifts the level answers by 0.1 on every seed; nothing else moves
        if r["variant"] in ("+finding heads", "+finding heads+pretraining"):
            r["metrics"]["test_type/level/item_f1"] = 0.7 + 0.01 * r["seed"] + 0.1 * (r["variant"] != "+finding heads")
    lines = "\n".join(against_default(summarize(runs), runs))
    assert "  - other types: level +0.100 [+0.100, +0.100] * (* beyond its interval)" in lines
    assert "- baseline+finding heads: Δ = -0.103 [95 % CI " in lines and lines.count("hurts") == 1
    assert "- +finding heads+pretraining: Δ = +0.000 [95 % CI" in lines and "within seed noise" in lines
    assert "- +AMiF alignment+mining: Δ = +0.060 [95 % CI" in lines and ": helps" in lines
    assert "- +AMiF alignment+mining+gated fusion: Δ = +0.100 (one seed: no interval)" in lines
    assert "- baseline:" not in lines and "- +finding heads:" not in lines  # the paper's rows, the default itself
    # without the default model's runs there is nothing to judge against
    assert against_default(summarize(runs[:3]), runs[:3]) == []
    # a row without the residual is not judged by the residual goal
    md = results_markdown(summarize(runs), runs, "g", "figures/a.png", "Setup.")
    assert "baseline+finding heads: Δ change-F1 = +0.197 [95 % CI " in md
    assert "vs baseline (no residual branch: not a goal row)" in md


def test_a_row_that_adds_a_part_to_another_row_is_judged_against_that_row():
    """The See-in-Pairs controls change only the single-image questions' reference: the row is
    compared with the all-types row it adds them to, per type; one seed gives point deltas."""
    from models.ablation import against_default

    name, base = "+all question types+See-in-Pairs controls", "+all question types"
    runs = [{"variant": v, "seed": s, "run_id": f"{v}{s}", "run_name": f"r{s}",
             "metrics": {"test_change_f1": 0.39 + 0.01 * s, "test_type/level/item_f1": 0.7 + 0.01 * s + 0.1 * (v == name),
                         "test_type/presence/accuracy": 0.7 + 0.02 * s * (v == name)}}
            for v in (name, base) for s in range(3)]
    lines = "\n".join(against_default(summarize(runs), runs))
    assert "Against the row each adds one part to" in lines and "Against the default model" not in lines
    assert f"- {name}: Δ = +0.000 [95 % CI +0.000, +0.000 over 3 paired seeds]" in lines
    assert "level +0.100 [+0.100, +0.100] *" in lines and "presence +0.020 [" in lines
    one = [r for r in runs if r["seed"] == 0]
    lines = "\n".join(against_default(summarize(one), one))
    assert f"- {name}: Δ = +0.000 (one seed: no interval)" in lines
    assert "  - other types (one seed): presence +0.000; level +0.100" in lines
