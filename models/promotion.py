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
    # The gate every candidate passes first, champion or not: its validation `metric` must beat
    # its own floor (the question prior scored on the same split, tagged at registration) by more
    # than floor_margin, and its answers must parse at least min_parse_rate of the time.
    floor_metric: str = "prior_change_f1"
    floor_margin: float = 0.0
    parse_metric: str = "prediction_parse_rate"
    min_parse_rate: float = 0.0

    @classmethod
    def from_params(cls, registry: dict) -> "PromotionRule":
        """params.yaml's `registry` section: the one place the rule is built."""
        return cls(metric=registry["metric"], tie_breaker=registry["tie_breaker"],
                   margin=float(registry["margin"]),
                   floor_margin=float(registry.get("floor_margin", 0.0)),
                   min_parse_rate=float(registry.get("min_parse_rate", 0.0)))

    def describe(self) -> str:
        return (f"{self.metric} > {self.floor_metric} + {self.floor_margin}, "
                f"{self.parse_metric} >= {self.min_parse_rate}; then {self.metric} > champion + "
                f"{self.margin}; ties by {self.tie_breaker}")


@dataclass(frozen=True)
class Decision:
    promote: bool
    code: str      # machine-readable: no_champion | better | tie_broken | not_better | already_champion
                   # | below_floor | unparseable
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
    floor = candidate.get(rule.floor_metric)
    if floor is not None and c <= floor + rule.floor_margin + _TIE:
        return Decision(False, "below_floor", f"{rule.metric} {c:.4f} does not beat the question prior "
                        f"{floor:.4f} by more than {rule.floor_margin}: not promoted")
    parse = candidate.get(rule.parse_metric)
    if rule.min_parse_rate > 0 and (parse is None or parse < rule.min_parse_rate):
        shown = "unknown" if parse is None else f"{parse:.4f}"
        return Decision(False, "unparseable", f"{rule.parse_metric} {shown} < {rule.min_parse_rate}: "
                        "answers leave the grammar; not promoted")
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
