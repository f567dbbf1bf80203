"""Per-study finding states and per-pair change targets, read off the question files alone.

Medical-Diff-VQA asks six single-image questions about every main study (which abnormalities,
is there X, where, what type, what level) and one difference question whose answer is the
*complete* change set between the main and the reference study. Together they say, for many
(study, finding) cells, whether the finding is present and at which level — supervision for the
image encoder that the answer strings alone hide behind a decoder. Nothing here reads the
embedded generator's private ground truth: the same code runs on the credentialed download.

How the cells are filled (each rule is a fact of the dataset's templates):
- "what abnormalities are seen in this image?" lists every finding of the study: listed -> 1,
  every other finding -> 0. "is there evidence of any abnormalities ...?" "no" -> all 0.
- "is there evidence of X in this image?" / "is there X?": X -> 1 or 0.
- where / what type / what level is X: X -> 1; the level question also gives X's level.
- the general difference question, complete by construction: added X -> main 1, ref 0; missing X
  -> main 0, ref 1; level change a -> b -> both 1 with levels a and b; every other finding is the
  same in both studies (presence and level), so the two cells are tied and share what either knows.
Ties are resolved with a union-find per finding over studies, so knowledge travels along a
subject's whole timeline. Conflicting evidence (a noisy real label) leaves the cell unknown.

- what type is X: X's type; where (in the image) is X: the place words of X (a side question,
  "left side or right side?", names one word of several and is left out).
- the view of each image: the metadata's view position (pairs.parquet main_view / ref_view).

Codes: presence -1 unknown, 0 absent, 1 present; level -1 unknown, else the index in LEVELS;
change per finding -1 unknown (pair without a general difference question), else CHANGE_KINDS;
type -1 unknown, else the index in TYPES; location -1 unknown, else a bit mask over
LOCATION_WORDS (bit i: word i is named); view (one per image) -1 unknown, else the index in VIEWS.
"""

from __future__ import annotations

from collections import defaultdict

import polars as pl

from assets.diffvqa.grammar import try_parse_answer
from assets.diffvqa.vocabulary import DIFFERENCE_QUESTION, FINDINGS, LEVELS, LOCATION_WORDS, TYPES, VIEWS

CHANGE_KINDS = ("unchanged", "added", "missing", "level")
N_FINDINGS, N_LEVELS = len(FINDINGS), len(LEVELS)
_FINDING_INDEX = {f: i for i, f in enumerate(FINDINGS)}
_LEVEL_INDEX = {lv: i for i, lv in enumerate(LEVELS)}
_TYPE_INDEX = {t: i for i, t in enumerate(TYPES)}
_VIEW_INDEX = {v: i for i, v in enumerate(VIEWS)}
# "area" closes every place ("left lung area"); the others are the place words a location names
PLACE_WORDS = tuple(w for w in LOCATION_WORDS if w != "area")
_PLACES_LONGEST_FIRST = sorted(PLACE_WORDS, key=len, reverse=True)  # "mid to lower" before "mid"
# one list of 30 codes per finding, then one code per image
PER_FINDING_COLUMNS = ("main_presence", "main_level", "ref_presence", "ref_level", "change",
                       "main_type", "ref_type", "main_location", "ref_location")
PER_IMAGE_COLUMNS = ("main_view", "ref_view")
TARGET_COLUMNS = ("pair_id",) + PER_FINDING_COLUMNS + PER_IMAGE_COLUMNS

_PRESENCE_PREFIXES = ("is there evidence of ", "is there ")
_NAMED_PREFIXES = ("where in the image is the ", "where is the ", "what type is the ", "what level is the ",
                   "is the ")


class _Cells:
    """Union-find over (study, finding) cells; each root keeps the values its members saw."""

    def __init__(self):
        self.parent: dict = {}
        self.values: dict = defaultdict(_empty_values)
        # type and place as each study's own question says them: the difference answer ties the
        # cells of an unchanged finding by presence and level only, so what travels along the
        # timeline is a fallback, and a study's own answer wins over it (and over a conflict)
        self.own: dict = defaultdict(lambda: {"type": set(), "location": set()})

    def find(self, x):
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a, b) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        self.parent[rb] = ra
        if rb in self.values:
            moved = self.values.pop(rb)
            for k, seen in moved.items():
                self.values[ra][k] |= seen

    def see(self, cell, presence: int | None = None, level: int | None = None,
            type_: int | None = None, location: int | None = None) -> None:
        v = self.values[self.find(cell)]
        for k, value in (("presence", presence), ("level", level), ("type", type_), ("location", location)):
            if value is not None:
                v[k].add(value)
                if k in ("type", "location"):
                    self.own[cell][k].add(value)

    def get(self, cell) -> tuple[int, int, int, int]:
        """(presence, level, type, location) codes; all but presence only for a present finding."""
        v = self.values.get(self.find(cell)) or _empty_values()
        own = self.own.get(cell, {})

        def one(k):
            seen = own.get(k) or v[k]
            return next(iter(seen)) if len(seen) == 1 and presence == 1 else -1

        presence = next(iter(v["presence"])) if len(v["presence"]) == 1 else -1
        return presence, one("level"), one("type"), one("location")


def _empty_values() -> dict[str, set]:
    return {"presence": set(), "level": set(), "type": set(), "location": set()}


def location_mask(answer: str) -> int | None:
    """The bit mask (over PLACE_WORDS' positions in LOCATION_WORDS) of the place words a "where"
    answer names — "left lower lung area and right lower lung area" names left, right, lower,
    lung — or None when it is a side answer or holds a word the vocabulary lacks."""
    text = answer.strip()
    if text.endswith(" side"):
        return None
    mask = 0
    for part in text.split(" and "):
        part = part.strip().removesuffix(" area").strip()
        while part:
            word = next((w for w in _PLACES_LONGEST_FIRST if part == w or part.startswith(w + " ")), None)
            if word is None:
                return None
            mask |= 1 << LOCATION_WORDS.index(word)
            part = part[len(word):].strip()
    return mask or None


def _finding_after(question: str, prefixes: tuple[str, ...], suffixes: tuple[str, ...]) -> str | None:
    for p in prefixes:
        if question.startswith(p):
            rest = question[len(p):]
            for s in suffixes:
                if rest.endswith(s):
                    name = rest[: len(rest) - len(s)]
                    return name if name in _FINDING_INDEX else None
    return None


def named_finding(question: str) -> str | None:
    """The finding a presence, location, type or level question names, or None. The templates
    first; then, for "is there {finding} in the {location}?", the longest finding name the
    question holds as whole words."""
    q = question.strip().lower()
    f = _finding_after(q, _PRESENCE_PREFIXES + _NAMED_PREFIXES,
                       (" in this image?", " located?", " located on the left side or right side?", "?"))
    if f is not None:
        return f
    words = f" {q.rstrip('?')} "
    return next((name for name in _BY_LENGTH if f" {name} " in words), None)


_BY_LENGTH = sorted(FINDINGS, key=len, reverse=True)


def _observe_single(cells: _Cells, study, qtype: str, question: str, answer: str) -> None:
    if qtype == "abnormality":
        if question.startswith("what abnormalities"):
            listed = {a.strip() for a in answer.split(",")}
            # "... in this image?" lists every finding of the study; "... in the {place}?" names
            # one finding there, which says nothing about the others
            whole = question.endswith(" in this image?")
            for f in FINDINGS:
                if whole or f in listed:
                    cells.see((study, f), presence=int(f in listed))
        elif answer == "no":
            for f in FINDINGS:
                cells.see((study, f), presence=0)
    elif qtype == "presence":
        f = _finding_after(question, _PRESENCE_PREFIXES, (" in this image?", "?"))
        if f and answer in ("yes", "no"):
            cells.see((study, f), presence=int(answer == "yes"))
    elif qtype in ("location", "type", "level"):
        f = _finding_after(question, _NAMED_PREFIXES,
                           (" located?", " located on the left side or right side?", "?"))
        if f:
            cells.see((study, f), presence=1,
                      level=_LEVEL_INDEX.get(answer) if qtype == "level" else None,
                      type_=_TYPE_INDEX.get(answer) if qtype == "type" else None,
                      location=location_mask(answer) if qtype == "location" else None)


def finding_targets(pairs: pl.DataFrame) -> pl.DataFrame:
    """One row per pair_id: main/ref presence and level (30 codes each) and the change per
    finding, as int8 lists (codes in the module docstring)."""
    cells = _Cells()
    changes: dict[str, list[int]] = {}
    views = [c for c in ("main_view", "ref_view") if c in pairs.columns]
    rows = pairs.select("pair_id", "main_study_id", "ref_study_id", "question_type", "question",
                        "answer", *views).to_dicts()
    studies: dict[str, tuple] = {}
    view_codes: dict[str, tuple[int, int]] = {}
    for r in rows:
        main, ref = r["main_study_id"], r["ref_study_id"]
        studies[r["pair_id"]] = (main, ref)
        view_codes[r["pair_id"]] = tuple(_VIEW_INDEX.get(r.get(c) or "", -1) for c in ("main_view", "ref_view"))
        if r["question_type"] != "difference":
            _observe_single(cells, main, r["question_type"], r["question"], r["answer"])
            continue
        if r["question"] != DIFFERENCE_QUESTION:
            continue  # area questions repeat one level sentence of the general answer
        cs = try_parse_answer(r["answer"])
        if cs is None:
            continue
        change = [0] * N_FINDINGS
        touched = set()
        # added: present in main, absent in ref; missing: the other way round
        for items, in_main, code in ((cs.added, 1, 1), (cs.missing, 0, 2)):
            for f in (f for f in items if f in _FINDING_INDEX):
                cells.see((main, f), presence=in_main)
                cells.see((ref, f), presence=1 - in_main)
                change[_FINDING_INDEX[f]] = code
                touched.add(f)
        for lc in cs.levels:
            if lc.finding in _FINDING_INDEX:
                cells.see((main, lc.finding), presence=1, level=_LEVEL_INDEX.get(lc.main_level))
                cells.see((ref, lc.finding), presence=1, level=_LEVEL_INDEX.get(lc.ref_level))
                change[_FINDING_INDEX[lc.finding]] = 3
                touched.add(lc.finding)
        for f in FINDINGS:
            if f not in touched:  # the answer is complete: an unnamed finding did not change
                cells.union((main, f), (ref, f))
        changes[r["pair_id"]] = change
    out = {c: [] for c in TARGET_COLUMNS}
    for pair_id, (main, ref) in studies.items():
        out["pair_id"].append(pair_id)
        for side, study in (("main", main), ("ref", ref)):
            states = [cells.get((study, f)) for f in FINDINGS]
            for k, name in enumerate(("presence", "level", "type", "location")):
                out[f"{side}_{name}"].append([s[k] for s in states])
        out["change"].append(changes.get(pair_id, [-1] * N_FINDINGS))
        out["main_view"].append(view_codes[pair_id][0])
        out["ref_view"].append(view_codes[pair_id][1])
    schema = {"pair_id": pl.String, **{c: pl.List(pl.Int8) for c in PER_FINDING_COLUMNS},
              "main_location": pl.List(pl.Int32), "ref_location": pl.List(pl.Int32),  # 20-bit masks
              **{c: pl.Int8 for c in PER_IMAGE_COLUMNS}}
    return pl.DataFrame(out, schema=schema).sort("pair_id")


def coverage(targets: pl.DataFrame) -> dict[str, float]:
    """Share of known cells per target column: what the encoder is supervised on."""
    out = {}
    for c in TARGET_COLUMNS[1:]:
        flat = targets[c].explode() if c in PER_FINDING_COLUMNS else targets[c]
        out[c] = float((flat >= 0).mean()) if flat.len() else 0.0
    return out
