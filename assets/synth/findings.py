"""The findings the embedded dataset renders, in Medical-Diff-VQA's own words.

Names and level words come from assets/diffvqa/vocabulary.py only (the dataset's own words win
over everyday radiology wording): a nodule or mass is a focal `lung opacity`, and the largest effusion is
`moderate to large`, never `large`. Each finding has a site (side, lobe or diffuse), the location
words a report would use for it (for location and area questions), a type word, and levels ordered
from least to most severe; the edit in assets/synth/edits.py scales with the level's index."""

from __future__ import annotations

from dataclasses import dataclass

from assets.diffvqa.vocabulary import FINDINGS, LEVELS, LOCATION_WORDS, TYPES

LOBE_SITES = ("left upper", "left lower", "right upper", "right middle", "right lower")


@dataclass(frozen=True)
class FindingSpec:
    name: str
    sites: tuple[str, ...]
    levels: tuple[str, ...]  # least to most severe
    types: tuple[str, ...]


SPECS: dict[str, FindingSpec] = {s.name: s for s in (
    FindingSpec("pleural effusion", ("left", "right"), ("small", "moderate", "moderate to large"), ("layering",)),
    FindingSpec("cardiomegaly", ("heart",), ("mild", "moderate", "severe"), ()),
    FindingSpec("pneumothorax", ("left", "right"), ("small", "moderate"), ()),
    FindingSpec("lung opacity", LOBE_SITES, ("small", "moderate"), ("focal",)),
    FindingSpec("consolidation", LOBE_SITES, ("mild", "moderate", "severe"), ("patchy", "dense")),
    FindingSpec("atelectasis", ("left lower", "right lower", "right middle"), ("minimal", "mild", "moderate"),
                ("plate-like", "compressive")),
    FindingSpec("edema", ("bilateral",), ("mild", "moderate", "severe"), ("interstitial",)),
)}
# The order edits are applied in: later edits see earlier ones (fluid fills a consolidated base).
EDIT_ORDER = ("cardiomegaly", "edema", "consolidation", "atelectasis", "lung opacity",
              "pleural effusion", "pneumothorax")

for _spec in SPECS.values():  # the vocabulary is the contract with the real dataset
    assert _spec.name in FINDINGS, _spec.name
    assert set(_spec.levels) <= set(LEVELS), _spec.levels
    assert set(_spec.types) <= set(TYPES), _spec.types


@dataclass(frozen=True)
class Finding:
    name: str
    site: str
    level: str
    type: str | None = None

    @property
    def spec(self) -> FindingSpec:
        return SPECS[self.name]

    @property
    def level_index(self) -> int:
        return self.spec.levels.index(self.level)

    @property
    def side(self) -> str | None:
        for side in ("left", "right"):
            if self.site.startswith(side):
                return side
        return None

    @property
    def location(self) -> str | None:
        """Location words as a report would put them, or None (cardiomegaly has no location)."""
        if self.name == "pleural effusion":
            words = f"{self.site} pleural"
        elif self.name == "pneumothorax":
            words = f"{self.site} apical"
        elif self.site in LOBE_SITES:
            words = f"{self.site} lung"  # the dataset maps "lobe" to "lung"
        elif self.site == "bilateral":
            words = "bilateral"
        else:
            return None
        assert all(w in LOCATION_WORDS for w in words.replace("mid to lower", "").split()), words
        return words

    def to_dict(self) -> dict:
        return {"name": self.name, "site": self.site, "level": self.level, "type": self.type,
                "location": self.location}
