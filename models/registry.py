"""The MLflow model registry side of spotdiff: register a run's model as a new version of
`spotdiff-real` with alias `candidate`, and move alias `champion` by the promotion rule.

MLflow 3 has aliases, not stages. Everything the rule needs is a tag on the model version
(`val.<metric>`, `test.<metric>`, `data_version`, `git_commit`), so a decision can be re-derived
from the registry alone, and the decision itself is written back as tags on the version.

Consistency under interruption: the only state change that matters is the `champion` alias, set
in one registry call *after* every decision tag is written (decision `pending`). Stopped before
the alias, a re-run reaches the same decision and rewrites the tags; stopped after it, a re-run
finds the candidate already champion and still `pending`, and only marks it `promoted`. Either
way a half-finished promotion is completed, never duplicated (tests/reliability/test_promotion_interrupted.py)."""

from __future__ import annotations

from dataclasses import dataclass

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from models.promotion import Decision, PromotionRule, decide

MODEL_NAME = "spotdiff-real"
CANDIDATE, CHAMPION = "candidate", "champion"


@dataclass(frozen=True)
class PromotionResult:
    name: str
    candidate_version: str
    champion_before: str | None
    champion_after: str | None
    decision: Decision


def metrics_from_tags(tags: dict[str, str], prefix: str = "val.") -> dict[str, float]:
    return {k[len(prefix):]: float(v) for k, v in tags.items() if k.startswith(prefix)}


def tag_version(client: MlflowClient, name: str, version: str, *, val_metrics: dict[str, float],
                test_metrics: dict[str, float] | None = None, data_version: str = "", git_commit: str = "") -> None:
    """Record what promotion and people need on the version, and make it the candidate."""
    for k, v in val_metrics.items():
        client.set_model_version_tag(name, version, f"val.{k}", f"{float(v):.6f}")
    for k, v in (test_metrics or {}).items():
        client.set_model_version_tag(name, version, f"test.{k}", f"{float(v):.6f}")
    client.set_model_version_tag(name, version, "data_version", data_version)
    client.set_model_version_tag(name, version, "git_commit", git_commit)
    client.set_registered_model_alias(name, CANDIDATE, version)


def version_by_alias(client: MlflowClient, name: str, alias: str):
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def promote(client: MlflowClient, rule: PromotionRule, name: str = MODEL_NAME) -> PromotionResult:
    """Move `champion` to the `candidate` version iff the rule says so. Idempotent."""
    candidate = version_by_alias(client, name, CANDIDATE)
    if candidate is None:
        raise LookupError(f"registered model {name!r} has no {CANDIDATE!r} version to promote")
    champion = version_by_alias(client, name, CHAMPION)
    cand_metrics = metrics_from_tags(candidate.tags)
    champ_metrics = metrics_from_tags(champion.tags) if champion is not None else None
    # Versions come back as int or str depending on the store: compare and record them as str.
    cand_v = str(candidate.version)
    before = str(champion.version) if champion is not None else None
    same = before == cand_v
    try:
        decision = decide(rule, cand_metrics, champ_metrics, same_version=same)
    except ValueError as e:
        client.set_model_version_tag(name, cand_v, "promotion.decision", "refused")
        client.set_model_version_tag(name, cand_v, "promotion.reason", str(e))
        raise
    if decision.code == "already_champion" and candidate.tags.get("promotion.decision") == "pending":
        # A run stopped between the alias and the last tag: the why was recorded before the
        # alias moved (below), so only the final word is missing.
        client.set_model_version_tag(name, cand_v, "promotion.decision", "promoted")
    if decision.code != "already_champion":
        # Every tag first, with decision `pending` when the alias is to move: a stop at any call
        # leaves either the old champion (re-run decides again) or the new one with its reason.
        client.set_model_version_tag(name, cand_v, "promotion.decision",
                                     "pending" if decision.promote else "kept_champion")
        client.set_model_version_tag(name, cand_v, "promotion.code", decision.code)
        client.set_model_version_tag(name, cand_v, "promotion.reason", decision.reason)
        client.set_model_version_tag(name, cand_v, "promotion.rule", rule.describe())
        client.set_model_version_tag(name, cand_v, "promotion.champion_before", before or "")
    if decision.promote:
        client.set_registered_model_alias(name, CHAMPION, cand_v)
        client.set_model_version_tag(name, cand_v, "promotion.decision", "promoted")
    after = cand_v if decision.promote else before
    return PromotionResult(name, cand_v, before, after, decision)


def aliases_agree(client: MlflowClient, rule: PromotionRule, name: str = MODEL_NAME) -> tuple[bool, dict]:
    """Re-derive the last promotion decision from the registry's tags alone and check that the
    `champion` alias is where the rule puts it: (agrees, what was compared)."""
    cand = version_by_alias(client, name, CANDIDATE)
    if cand is None:
        return False, {"reason": "candidate alias missing"}
    champ = version_by_alias(client, name, CHAMPION)
    before = cand.tags.get("promotion.champion_before") or None
    prev = client.get_model_version(name, before) if before else None
    d = decide(rule, metrics_from_tags(cand.tags), metrics_from_tags(prev.tags) if prev else None)
    expected = str(cand.version) if d.promote else before
    now = str(champ.version) if champ is not None else None  # a gate may refuse the first candidate
    ok = now == expected and cand.tags.get("promotion.decision") in ("promoted", "kept_champion")
    return ok, {"candidate": str(cand.version), "champion": now or "none", "rule_says": d.code,
                "reason": cand.tags.get("promotion.reason", "")}
