"""The shortest text that turns a partial answer into a whole one, found on an automaton of the
answer's regular expression.

Constrained decoding closes an answer along this completion when its token budget runs out. A
breadth-first search over characters, pruned by the `regex` package's partial matching, finds it
too, but in a list of findings every string of a finding sequence is a distinct frontier entry:
an untrained model that starts "the main image is missing the findings of " under a 40-token
budget cost ~2 s a call and gave up at 400k states (measured: 32 calls, 32 s of one test). On a
Thompson NFA of the same expression the search is over automaton states, which the findings'
alternatives share: a few milliseconds, and exact.

The automaton is built from the parse tree of Python's own regular-expression compiler
(`re._parser`: the standard library has no public regex-to-automaton API, and the patterns
here use only the syntax both `re` and `regex` read the same way). Lookaheads are left out (an
assertion consumes nothing), so every completion is checked against the real pattern; a pattern
with syntax this builder does not know gets None from `automaton` and its callers fall back."""

from __future__ import annotations

import functools
import re
from collections import deque
from re import _constants as C
from re import _parser


class Unsupported(ValueError):
    pass


class Automaton:
    """States are ints; `eps[s]` the states reached without a character, `edges[s]` the
    (characters, state) moves on one character of the set."""

    def __init__(self, tree) -> None:
        self.eps: list[list[int]] = []
        self.edges: list[list[tuple[frozenset, int]]] = []
        self.start = self._new()
        self.accept = self._seq(tree, self.start)

    def _new(self) -> int:
        self.eps.append([])
        self.edges.append([])
        return len(self.eps) - 1

    def _seq(self, items, s: int) -> int:
        for op, av in items:
            s = self._item(op, av, s)
        return s

    def _item(self, op, av, s: int) -> int:
        if op is C.LITERAL:
            return self._chars(frozenset(chr(av)), s)
        if op is C.IN:
            chars = set()
            for kind, value in av:
                if kind is C.LITERAL:
                    chars.add(chr(value))
                elif kind is C.RANGE:
                    chars.update(map(chr, range(value[0], value[1] + 1)))
                else:  # negated sets and categories (\w, \d) would need the whole alphabet
                    raise Unsupported(str(kind))
            return self._chars(frozenset(chars), s)
        if op is C.SUBPATTERN:
            _, add_flags, del_flags, p = av
            if add_flags or del_flags:
                raise Unsupported("inline flags")
            return self._seq(p, s)
        if op is C.BRANCH:
            end = self._new()
            for alt in av[1]:
                a = self._new()
                self.eps[s].append(a)
                self.eps[self._seq(alt, a)].append(end)
            return end
        if op in (C.MAX_REPEAT, C.MIN_REPEAT, C.POSSESSIVE_REPEAT):
            lo, hi, p = av
            for _ in range(lo):
                s = self._seq(p, s)
            if hi is C.MAXREPEAT:
                loop = self._new()
                self.eps[s].append(loop)
                self.eps[self._seq(p, loop)].append(loop)
                return loop
            end = self._new()
            self.eps[s].append(end)
            for _ in range(hi - lo):
                s = self._seq(p, s)
                self.eps[s].append(end)
            return end
        if op is C.ASSERT:
            return s  # consumes nothing; the real pattern judges the completion
        raise Unsupported(str(op))

    def _chars(self, chars: frozenset, s: int) -> int:
        t = self._new()
        self.edges[s].append((chars, t))
        return t

    def _closure(self, states) -> set[int]:
        seen, todo = set(states), list(states)
        while todo:
            for t in self.eps[todo.pop()]:
                if t not in seen:
                    seen.add(t)
                    todo.append(t)
        return seen

    def after(self, text: str) -> set[int]:
        """The states `text` can lead to from the start (empty: it cannot begin an answer)."""
        current = self._closure([self.start])
        for ch in text:
            current = self._closure([t for s in current for chars, t in self.edges[s] if ch in chars])
            if not current:
                break
        return current

    def shortest_tail(self, states: set[int], max_len: int) -> str | None:
        """The shortest non-empty text from any of `states` to the accepting state (0-1 BFS:
        a character costs 1, an epsilon move 0), or None if none within max_len."""
        # node = (state, moved): `moved` once a character was taken, so an accept reached by
        # epsilon alone (the prefix already whole, or a lookahead left out) does not count
        dist = {(s, False): 0 for s in states}
        back: dict[tuple[int, bool], tuple[tuple[int, bool], str]] = {}
        todo = deque((s, False) for s in states)
        while todo:
            node = todo.popleft()
            s, moved = node
            if moved and s == self.accept:
                out = []
                while node in back:
                    node, ch = back[node]
                    out.append(ch)
                return "".join(reversed(out))
            d = dist[node]
            for t in self.eps[s]:  # free: followed even at the length limit
                if dist.get((t, moved), max_len + 1) > d:
                    dist[(t, moved)] = d
                    back[(t, moved)] = (node, "")
                    todo.appendleft((t, moved))
            if d >= max_len:
                continue
            for chars, t in self.edges[s]:
                if dist.get((t, True), max_len + 1) > d + 1:
                    dist[(t, True)] = d + 1
                    back[(t, True)] = (node, min(chars))
                    todo.append((t, True))
        return None


@functools.lru_cache(maxsize=256)
def automaton(pattern: str, flags: int = 0) -> Automaton | None:
    """The automaton of a pattern string, or None where it is beyond this builder: syntax `re`
    does not read (the `regex` package's own), or flags that change what a character matches
    (ignore-case, verbose; `flags` are the compiled pattern's, beyond Unicode and version 0)."""
    import regex

    if flags & ~(regex.UNICODE | regex.VERSION0):
        return None
    try:
        tree = _parser.parse(pattern)
    except (re.error, RecursionError, OverflowError):
        return None
    if tree.state.flags & ~re.UNICODE:  # inline (?i), (?x), ...
        return None
    try:
        return Automaton(tree.data)
    except (Unsupported, RecursionError):
        return None
