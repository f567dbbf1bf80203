"""The promotion rule: does a candidate model version replace the champion?

Pure function over metric dicts, so the rule is tested without a registry and the registry code
(models/registry.py) only reads tags, calls `decide`, and records the result. Metrics are the
*validation* metrics: the test split is scored once per run and never drives selection."""

from __future__ import annotations

from dataclasses import dataclass

# Two runs with the same seed score identically; anything below this is float noise, not a win.
_TIE = 1e-9


@dataclass(frozen=True)
class PromotionRule:
    metric: str = "change_f1"
    tie_breaker: str = "CIDEr"
    margin: float = 0.0  # the candidate must beat the champion by MORE than this


@dataclass(frozen=True)
class Decision:
    promote: bool
    code: str      # machine-readable: no_evaluation | no_champion | better | tie_broken | not_better | already_champion
    reason: str    # the sentence recorded on the model version


class PromotionRefused(ValueError):
    """The candidate cannot be judged (it was never evaluated)."""


def decide(rule: PromotionRule, candidate: dict[str, float], champion: dict[str, float] | None,
           same_version: bool = False) -> Decision:
    if rule.metric not in candidate:
        raise PromotionRefused(f"candidate has no validation {rule.metric!r}: evaluate it before promotion")
    if same_version:
        return Decision(False, "already_champion", "this version is already the champion")
    c = candidate[rule.metric]
    if champion is None or rule.metric not in champion:
        return Decision(True, "no_champion", f"no champion yet; candidate {rule.metric}={c:.4f}")
    h = champion[rule.metric]
    delta = c - h
    if delta > rule.margin + _TIE:
        return Decision(True, "better", f"{rule.metric} {c:.4f} beats champion {h:.4f} by {delta:+.4f} (> margin {rule.margin})")
    if abs(delta) <= _TIE and rule.margin == 0.0:
        ct, ht = candidate.get(rule.tie_breaker), champion.get(rule.tie_breaker)
        if ct is not None and ht is not None and ct > ht + _TIE:
            return Decision(True, "tie_broken", f"{rule.metric} tied at {c:.4f}; {rule.tie_breaker} {ct:.4f} > {ht:.4f}")
    return Decision(False, "not_better", f"{rule.metric} {c:.4f} vs champion {h:.4f} ({delta:+.4f}, margin {rule.margin}): champion kept")
