"""The rule-based labeler: extract mentions -> classify each -> aggregate per report.

Three named stages, as in the CheXpert labeler, each a method you can call and test alone:

1. :meth:`RuleLabeler.extract_mentions`: phrases of each observation's vocabulary
   (``vocab/observations/<observation>.txt``) found in the normalized text. *Unmentions*
   (phrases that look like a mention but are not: ``pericardial effusion``, ``calcified
   granuloma``) are matched too, so that they win over the shorter mention inside them.
2. :meth:`RuleLabeler.classify`: each mention becomes positive (1), negative (0) or
   uncertain (-1) by the cues around it (``vocab/cues/*.txt``): scoped pre-cues ("no",
   "without evidence of", "cannot exclude", "may represent") that reach forward to the end of
   the clause; post-cues ("... is not seen", "... has resolved", "... cannot be excluded")
   that reach back over a list of mentions; "versus"/"or" between two findings; and, for
   *subject* mentions ("heart size", "lungs", "pleural spaces"), predicates ("normal",
   "clear", "enlarged", "borderline") that say what state the subject is in.
3. :func:`aggregate`: per observation, positive beats uncertain beats negative; then No
   Finding by :func:`orapo.observations.apply_no_finding_rule`.

Everything happens inside one sentence (text between ``.``/``;``/``:``/``?``/``!`` followed
by a space, blank lines and list markers): no phrase, scope or list crosses a sentence end.
That makes the result of a sentence independent of its neighbours, so :meth:`RuleLabeler.label`
caches it (reports repeat sentences a lot). The conflict rules are written out in
``docs/labeler.md``. Every position is an index into
:func:`~orapo.labeler.vocab.normalize_text` of the input. Run time is linear in the text: two
trie regexes scan each sentence once and every scope walk is bounded.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

from orapo.labeler.vocab import (
    VOCAB_DIR,
    CompiledVocab,
    VocabError,
    compile_vocab,
    normalize_text,
    read_vocab_file,
    read_word_list,
)
from orapo.observations import (
    NEGATIVE,
    NO_FINDING,
    OBSERVATIONS,
    POSITIVE,
    UNCERTAIN,
    LabelDict,
    apply_no_finding_rule,
    empty_labels,
)

#: Sections of an observation file (``vocab/observations/<slug>.txt``).
MENTION_KINDS: tuple[str, ...] = ("mention", "uncertain", "subject", "unmention")
#: Cue files (``vocab/cues/<kind>.txt``); a phrase listed in several files has several kinds.
CUE_KINDS: tuple[str, ...] = (
    "negation_pre",  # "no", "without", "negative for": forward to the end of the clause
    "negation_post",  # "is not seen", "has resolved": back over the list before it
    "uncertainty_pre",  # "possible", "may represent", "cannot exclude": forward
    "uncertainty_list",  # "differential diagnosis includes": forward, across list commas too
    "uncertainty_post",  # "cannot be excluded", "is suspected": back over the list
    "differential",  # "versus", "or": the finding on each side is uncertain
    "pseudo",  # "no change", "not only": look like cues, are not; end a scope
    "scope_end",  # "but", "however", "which", "with": end every forward scope
    "normal",  # subject predicate -> negative ("normal", "clear", "within normal limits")
    "abnormal",  # subject predicate -> positive ("enlarged", "widened")
    "borderline",  # subject predicate -> uncertain ("borderline", "blunted")
    "inert",  # "nearly resolved": holds a cue word, is no cue; matched so that it is masked
)
_BIT = {kind: 1 << i for i, kind in enumerate(CUE_KINDS)}
NEG_PRE, NEG_POST = _BIT["negation_pre"], _BIT["negation_post"]
UNC_PRE, UNC_LIST, UNC_POST = (
    _BIT["uncertainty_pre"],
    _BIT["uncertainty_list"],
    _BIT["uncertainty_post"],
)
DIFF, PSEUDO, SCOPE_END = _BIT["differential"], _BIT["pseudo"], _BIT["scope_end"]
PRED_NORMAL, PRED_ABNORMAL, PRED_BORDERLINE = _BIT["normal"], _BIT["abnormal"], _BIT["borderline"]
PRE = NEG_PRE | UNC_PRE | UNC_LIST
POST = NEG_POST | UNC_POST
PREDICATE = PRED_NORMAL | PRED_ABNORMAL | PRED_BORDERLINE

#: A forward scope never reaches further than this many characters (bounds the damage of a
#: missing full stop; clauses are shorter).
MAX_SCOPE_CHARS = 250
#: The most mentions one list cue reaches over ("no A, B, C, D or E").
MAX_CHAIN = 12
#: Gaps longer than this are never a list gap or an attachment gap.
MAX_GAP_CHARS = 60
DEFAULT_CACHE_SIZE = 65536
#: How a finding named in a differential ("A versus B") is read (``RuleLabeler(differential=)``).
DIFFERENTIAL_MODES: tuple[str, ...] = ("positive", "uncertain")
#: Longer sentences are not cached (they rarely repeat, and would hold memory).
MAX_CACHED_CHARS = 1000

#: Words after a colon that say the state of what comes before it ("pneumothorax: none",
#: "heart size: normal"): such a colon is no sentence end.
COLON_STATES = (
    "none|negative|absent|normal|unremarkable|clear|enlarged|widened|borderline|intact|not|"
    "within|wnl"
)
#: Sentence ends: . ; : ! ? before a space or the end ("vs." is not one; nor is a colon before
#: one of :data:`COLON_STATES`), a blank line, or a line break before a list marker ("1.",
#: "2)", "-", "*").
SENTENCE_END = re.compile(
    r"(?<![^a-z]vs)(?<!^vs)(?:[.;!?]|:(?![ \t]+(?:" + COLON_STATES + r")(?![a-z0-9])))(?=\s|$)"
    r"|\n[ \t]*\n|\n(?=[ \t]*(?:[0-9]+[.)]|[-*\u2022]))"
)
_GAP_TOKEN = re.compile(r"[a-z0-9'/]+|[^\sa-z0-9'/]")
_LAST_CONJUNCTION = re.compile(r"(?s:.*)(?<![a-z0-9])(?:and|or|nor)(?![a-z0-9])")
_RANK = {POSITIVE: 3, UNCERTAIN: 2, NEGATIVE: 1}


def observation_slug(name: str) -> str:
    """File stem of an observation's vocabulary: ``"Pleural Effusion"`` -> ``pleural_effusion``."""
    return name.lower().replace(" ", "_")


class Mention(NamedTuple):
    """A vocabulary phrase found in the text (stage 1).

    ``observation`` is None for an unmention. ``kind``: ``mention`` (classified by cues,
    positive by default), ``uncertain`` (a hedged phrase: uncertain unless negated),
    ``subject`` (says nothing alone; a predicate gives its state), ``unmention``.
    """

    observation: str | None
    kind: str
    start: int
    end: int
    text: str


class Cue(NamedTuple):
    """A cue phrase found in the text; ``kinds`` are the cue files that list it."""

    kinds: frozenset[str]
    start: int
    end: int
    text: str


class Classified(NamedTuple):
    """A mention with its state (stage 2). ``state`` None: a subject that no predicate reached
    (it gives no label). ``reason`` names the cue(s) that decided."""

    mention: Mention
    state: int | None
    reason: str


class _Meaning:
    """What one mention leaf means: its (observation, kind) pairs and two flags."""

    __slots__ = ("pairs", "finding", "subject_only")

    def __init__(self, pairs: Iterable[tuple[str | None, str]]) -> None:
        real = sorted((p for p in pairs if p[1] != "unmention"), key=lambda p: (p[0] or "", p[1]))
        self.pairs: tuple[tuple[str, str], ...] = tuple(real)  # type: ignore[arg-type]
        self.finding = any(kind in ("mention", "uncertain") for _, kind in real)
        self.subject_only = all(kind == "subject" for _, kind in real)


class _Span:
    """One matched span of a sentence and what the cues said about it."""

    __slots__ = (
        "start",
        "end",
        "meaning",
        "pre",
        "post",
        "diff",
        "diff_obs",
        "predicate",
        "predicate_post",
        "predicate_clause",
    )

    def __init__(self, start: int, end: int, meaning: _Meaning) -> None:
        self.start = start
        self.end = end
        self.meaning = meaning
        self.pre: _CueHit | None = None
        self.post: _CueHit | None = None
        self.diff: _CueHit | None = None
        self.diff_obs: frozenset[str] = frozenset()  # observations a differential hedges
        self.predicate: _CueHit | None = None
        self.predicate_post = False
        self.predicate_clause = True


class _CueHit:
    __slots__ = ("mask", "start", "end")

    def __init__(self, mask: int, start: int, end: int) -> None:
        self.mask = mask
        self.start = start
        self.end = end


def decide(
    kind: str,
    pre: str | None,
    post: str | None,
    diff: bool,
    predicate: int | None,
    clause: bool = True,
) -> int | None:
    """The state of one mention from what reached it (the conflict rules, in one place).

    ``pre``/``post``: ``"negation"``, ``"uncertainty"`` or None (the nearest scoped cue before
    / the list cue after). Subjects take their predicate's state; when the predicate is part of
    a noun phrase (``clause`` False: "enlarged heart", "costophrenic blunting", no verb in
    between) a pre- or post-cue still reaches it ("no costophrenic blunting" -> 0,
    "costophrenic blunting has resolved" -> 0, "possible enlarged heart" -> -1), while a
    predicate clause ("no effusion, the heart is enlarged") is a statement of its own. For other
    mentions, uncertainty beats negation ("no definite X; X cannot be excluded"), negation
    beats a differential ("no effusion or pneumothorax"), and a hedged (``uncertain``) phrase
    that nothing negates stays uncertain.

    >>> decide("mention", "negation", None, False, None)
    0
    >>> decide("mention", "negation", "uncertainty", False, None)
    -1
    >>> decide("mention", None, None, True, None)
    -1
    >>> decide("subject", "negation", None, False, None) is None
    True
    >>> decide("subject", "negation", None, False, -1, clause=False)
    0
    >>> decide("subject", None, "negation", False, -1, clause=False)
    0
    """
    if kind == "subject":
        if predicate is None or clause or predicate == NEGATIVE:
            return predicate
        if "uncertainty" in (pre, post):
            return UNCERTAIN
        if "negation" in (pre, post):
            return NEGATIVE
        return predicate
    if "uncertainty" in (pre, post):
        return UNCERTAIN
    if "negation" in (pre, post):
        return NEGATIVE
    if diff or kind == "uncertain":
        return UNCERTAIN
    return POSITIVE


def combine(states: Iterable[tuple[str, int]]) -> LabelDict:
    """``(observation, state)`` pairs -> label dict: per observation, positive beats uncertain
    beats negative; then the No Finding rule.

    No Finding: a positive global statement ("no acute cardiopulmonary abnormality") proposes
    1 (other states of it are ignored), then :func:`~orapo.observations.apply_no_finding_rule`
    decides: None when any finding is positive or uncertain, or when nothing is mentioned.

    >>> combine([("Edema", 0), ("Edema", -1)])["Edema"]
    -1
    """
    labels = empty_labels()
    for name, state in states:
        if name == NO_FINDING:
            if state == POSITIVE:
                labels[NO_FINDING] = POSITIVE
            continue
        old = labels[name]
        if old is None or _RANK[state] > _RANK[old]:
            labels[name] = state
    return apply_no_finding_rule(labels)


def aggregate(classified: Iterable[Classified]) -> LabelDict:
    """Stage 3: classified mentions -> all 14 observations (see :func:`combine`).

    >>> m = Mention("Edema", "mention", 0, 5, "edema")
    >>> out = aggregate([Classified(m, 0, ""), Classified(m, -1, "")])
    >>> out["Edema"], out["No Finding"]
    (-1, None)
    """
    return combine(
        (c.mention.observation, c.state)
        for c in classified
        if c.mention.observation is not None and c.state is not None
    )


def sentences(ntext: str) -> Iterator[tuple[int, str]]:
    """``(offset, sentence)`` pieces of normalized text between :data:`SENTENCE_END` matches.

    >>> [s for _, s in sentences("no effusion. heart normal; atelectasis vs. scar")]
    ['no effusion', ' heart normal', ' atelectasis vs. scar']
    """
    start = 0
    for m in SENTENCE_END.finditer(ntext):
        if m.start() > start:
            yield start, ntext[start : m.start()]
        start = m.end()
    if start < len(ntext):
        yield start, ntext[start:]


def list_end(sentence: str) -> int:
    """Where the last list of a sentence can end: just after its last "and", "or" or "nor"
    (0 if none). A comma after that point ends a clause rather than separating list items.

    "No effusion, pneumothorax or consolidation": every comma is before "or", a list. In
    "possibly artifact, healed rib fracture noted" the comma ends the hedge's scope.

    >>> s = "possible a, b or c, d"
    >>> s.find(",", list_end(s))
    18
    """
    m = _LAST_CONJUNCTION.match(sentence)
    return m.end() if m else 0


class RuleLabeler:
    """CheXpert-style rule labeler over the vocabulary in ``vocab_dir``.

    ``cache_size``: how many distinct sentences' results :meth:`label` keeps (0: no cache).
    ``differential``: ``"positive"`` (default): a finding named in a differential ("atelectasis
    versus infiltrate", "scarring or atelectasis") counts as present unless something else
    hedges or negates it, as NLM's manual MeSH coding of Open-i reports reads it (docs/labeler.md
    measures both); ``"uncertain"``: CheXpert's convention, each side is uncertain.

    >>> RuleLabeler().label("Mild cardiomegaly. No pleural effusion.")["Cardiomegaly"]
    1
    """

    name = "rule"

    def __init__(
        self,
        vocab_dir: str | Path | None = None,
        cache_size: int = DEFAULT_CACHE_SIZE,
        differential: str = "positive",
    ) -> None:
        if differential not in DIFFERENTIAL_MODES:
            raise ValueError(
                f"differential must be one of {', '.join(DIFFERENTIAL_MODES)}, got {differential!r}"
            )
        self.differential = differential
        self._hedge_differentials = differential == "uncertain"
        self.vocab_dir = Path(vocab_dir) if vocab_dir else VOCAB_DIR
        self.mentions, self._meanings = self._compile_mentions()
        self.cues = self._compile_cues()
        self._cue_masks = [sum(_BIT[k] for k in p) for p in self.cues.payloads]
        cue_dir = self.vocab_dir / "cues"
        self.conjunctions = read_word_list(cue_dir / "conjunction_words.txt")
        self.list_words = read_word_list(cue_dir / "list_gap_words.txt") | self.conjunctions
        self.attach_words = read_word_list(cue_dir / "attach_gap_words.txt")
        self.verbs = read_word_list(cue_dir / "verbs.txt")
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        self._sentence_labels = (
            lru_cache(maxsize=cache_size)(self._sentence_pairs)
            if cache_size
            else self._sentence_pairs
        )

    # ----------------------------------------------------------------------------------------
    # Vocabulary
    # ----------------------------------------------------------------------------------------

    def _compile_mentions(self) -> tuple[CompiledVocab, list[_Meaning]]:
        folder = self.vocab_dir / "observations"
        entries = []
        known = {observation_slug(n): n for n in OBSERVATIONS}
        for path in sorted(folder.glob("*.txt")):
            if path.stem == "neutral":
                name = None
            elif path.stem in known:
                name = known[path.stem]
            else:
                raise VocabError(
                    f"{path}: not an observation vocabulary; expected one of "
                    f"{', '.join(sorted(known))} or neutral"
                )
            for p in read_vocab_file(path, None if name is None else MENTION_KINDS):
                kind = "unmention" if name is None else p.section
                entries.append((p.text, (name if kind != "unmention" else None, kind), p.source))
        vocab = compile_vocab(entries, plural=True)
        return vocab, [_Meaning(p) for p in vocab.payloads]

    def _compile_cues(self) -> CompiledVocab:
        entries = []
        for kind in CUE_KINDS:
            path = self.vocab_dir / "cues" / f"{kind}.txt"
            if not path.is_file():
                raise VocabError(f"{path}: missing cue vocabulary for {kind!r}")
            entries.extend((p.text, kind, p.source) for p in read_vocab_file(path))
        return compile_vocab(entries, plural=False)

    # ----------------------------------------------------------------------------------------
    # Stage 1: mentions (and cues)
    # ----------------------------------------------------------------------------------------

    def _spans(self, s: str) -> list[_Span]:
        meanings = self._meanings
        leaf = self.mentions.leaf
        out = []
        for m in self.mentions.regex.finditer(s):
            start = m.start()
            out.append(_Span(start, m.end(), meanings[leaf(s, start)]))
        return out

    def _cue_hits(self, s: str) -> list[_CueHit]:
        masks = self._cue_masks
        leaf = self.cues.leaf
        hits = []
        for m in self.cues.regex.finditer(s):
            start = m.start()
            hits.append(_CueHit(masks[leaf(s, start)], start, m.end()))
        return hits

    def extract_mentions(self, text: str) -> list[Mention]:
        """Stage 1: every vocabulary phrase in ``text`` (unmentions included), in text order.

        A span that is a phrase of several observations gives one :class:`Mention` each.
        """
        out = []
        for offset, s in sentences(normalize_text(text)):
            for span in self._spans(s):
                out.extend(_span_mentions(span, s, offset))
        return out

    def find_cues(self, text: str) -> list[Cue]:
        """Every cue phrase of ``text`` and every sentence end (kind ``scope_end``)."""
        ntext = normalize_text(text)
        out = []
        for offset, s in sentences(ntext):
            for h in self._cue_hits(s):
                out.append(
                    Cue(_kinds(h.mask), h.start + offset, h.end + offset, s[h.start : h.end])
                )
        for m in SENTENCE_END.finditer(ntext):
            out.append(Cue(frozenset({"scope_end"}), m.start(), m.end(), m.group()))
        return sorted(out, key=lambda c: c.start)

    # ----------------------------------------------------------------------------------------
    # Stage 2: classification
    # ----------------------------------------------------------------------------------------

    def classify(self, text: str, mentions: Sequence[Mention] | None = None) -> list[Classified]:
        """Stage 2: the state of every mention of ``text`` (stage 1 runs if not given;
        ``mentions`` must then come from :meth:`extract_mentions` of the same text)."""
        out: list[Classified] = []
        for offset, s in sentences(normalize_text(text)):
            if mentions is None:
                spans = self._spans(s)
            else:
                spans = _spans_from_mentions(mentions, offset, offset + len(s), self)
            if not spans:
                continue
            self._reach(s, spans, self._cue_hits(s))
            for span in spans:
                for m, state in self._states(span, s, offset):
                    out.append(Classified(m, state, _reason(m, span, s)))
        return out

    def _reach(self, s: str, spans: list[_Span], hits: list[_CueHit]) -> None:
        """Attach every cue of sentence ``s`` to the spans it reaches (mutates ``spans``)."""
        # Forward scopes: the nearest open pre-cue of each span, in one pass.
        active: _CueHit | None = None
        j = 0
        n = len(hits)
        clause_from = -1  # commas at or after this position end clauses (computed if needed)
        for span in spans:
            while j < n and hits[j].start < span.start:
                h = hits[j]
                if h.mask & (SCOPE_END | PSEUDO):
                    active = None
                if h.mask & PRE:
                    active = h
                j += 1
            if active is not None:
                if span.start - active.end > MAX_SCOPE_CHARS:
                    active = None
                elif active.mask & UNC_PRE:
                    # A hedge does not reach across a comma that ends a clause.
                    if clause_from < 0:
                        clause_from = list_end(s)
                    if s.find(",", max(active.end, clause_from), span.start) >= 0:
                        active = None
            span.pre = active
        # Backward and two-sided cues.
        starts = [sp.start for sp in spans]
        ends = [sp.end for sp in spans]
        for h in hits:
            if h.mask & POST:
                self._reach_back(s, spans, ends, h, "post")
            if h.mask & PREDICATE:
                self._reach_back(s, spans, ends, h, "predicate")
                self._reach_forward(s, spans, starts, h)
            if h.mask & DIFF:
                self._differential(s, spans, starts, ends, h)

    def _states(self, span: _Span, s: str, offset: int) -> Iterator[tuple[Mention, int | None]]:
        pre = _polarity(span.pre)
        post = _polarity(span.post)
        predicate = _predicate_state(span.predicate)
        for m in _span_mentions(span, s, offset):
            if m.kind == "unmention":
                continue
            yield (
                m,
                decide(
                    m.kind,
                    pre,
                    post,
                    self._hedge_differentials and m.observation in span.diff_obs,
                    predicate,
                    span.predicate_clause,
                ),
            )

    def _gap(self, s: str, a: int, b: int, words: frozenset[str]) -> bool | None:
        """Is ``s[a:b]`` made only of ``words``, commas, hyphens, brackets and colons? None if not,
        else whether it holds a conjunction."""
        if b - a > MAX_GAP_CHARS:
            return None
        conj = False
        for tok in _GAP_TOKEN.findall(s, a, b):
            if tok in ",-():":
                continue
            if tok not in words:
                return None
            if tok in self.conjunctions:
                conj = True
        return conj

    def _has_verb(self, s: str, a: int, b: int) -> bool:
        return any(tok in self.verbs for tok in _GAP_TOKEN.findall(s, a, b))

    def _chain(self, s: str, spans: list[_Span], first: int, step: int) -> list[_Span]:
        """Spans linked to ``spans[first]`` as one list ("A, B and C"), walking by ``step``.

        A gap of only commas links two items only if a conjunction gap follows it in reading
        order within the list, so "opacity, effusion is not seen" reaches only "effusion".
        """
        chain = [spans[first]]
        gaps: list[bool] = []  # in walking order: does the gap hold a conjunction?
        i = first
        while len(chain) < MAX_CHAIN:
            j = i + step
            if not 0 <= j < len(spans):
                break
            a, b = (spans[j].end, spans[i].start) if step < 0 else (spans[i].end, spans[j].start)
            conj = self._gap(s, a, b, self.list_words)
            if conj is None:
                break
            chain.append(spans[j])
            gaps.append(conj)
            i = j
        if step < 0:  # reading order is the reverse of walking order
            seen_conj = False
            for k, conj in enumerate(gaps):
                seen_conj = seen_conj or conj
                if not seen_conj:
                    return chain[: k + 1]
            return chain
        last_conj = max((k for k, c in enumerate(gaps) if c), default=-1)
        return chain[: last_conj + 2]

    def _reach_back(
        self, s: str, spans: list[_Span], ends: list[int], h: _CueHit, slot: str
    ) -> None:
        k = bisect.bisect_right(ends, h.start) - 1
        if slot == "post":
            # "the nodule in the right lung is not seen": a bare subject ("lung") in between is
            # part of a location, not the target.
            while k > 0 and _bare_subject(spans[k]) and h.start - spans[k - 1].end <= MAX_GAP_CHARS:
                k -= 1
        if k < 0:
            return
        a = spans[k].end
        said = spans[k].predicate
        if slot == "post" and said is not None and a <= said.start and said.end <= h.start:
            # "costophrenic blunting in the left base has cleared": the subject's own
            # predicate is part of the item the post-cue is about.
            a = said.end
        if self._gap(s, a, h.start, self.attach_words) is None:
            return
        clause = self._has_verb(s, a, h.start)
        for span in self._chain(s, spans, k, -1):
            if slot == "post":
                if span.post is None:
                    span.post = h
            elif not span.predicate_post:
                span.predicate, span.predicate_post, span.predicate_clause = h, True, clause

    def _reach_forward(self, s: str, spans: list[_Span], starts: list[int], h: _CueHit) -> None:
        k = bisect.bisect_left(starts, h.end)
        if k >= len(spans) or self._gap(s, h.end, spans[k].start, self.attach_words) is None:
            return
        clause = self._has_verb(s, h.end, spans[k].start)
        for span in self._chain(s, spans, k, +1):
            if not span.predicate_post:  # the nearest pre-predicate wins: later ones overwrite
                span.predicate, span.predicate_clause = h, clause

    def _differential(
        self, s: str, spans: list[_Span], starts: list[int], ends: list[int], h: _CueHit
    ) -> None:
        sides = []
        k = bisect.bisect_right(ends, h.start) - 1
        if k >= 0 and self._gap(s, spans[k].end, h.start, self.list_words) is not None:
            sides.append(spans[k])
        n = bisect.bisect_left(starts, h.end)
        if n < len(spans) and self._gap(s, h.end, spans[n].start, self.list_words) is not None:
            sides.append(spans[n])
        # At least one side must be a finding ("scarring versus atelectasis"). Negation still
        # wins over it: "no effusion or pneumothorax". An observation named on both sides is
        # not in doubt ("atelectasis or collapse", "infiltrate or opacity"): only the others
        # are hedged.
        if any(sp.meaning.finding for sp in sides):
            names = [frozenset(name for name, _ in sp.meaning.pairs) for sp in sides]
            both = names[0] & names[1] if len(names) == 2 else frozenset()
            for sp, own in zip(sides, names, strict=True):
                sp.diff = sp.diff or h
                sp.diff_obs = sp.diff_obs | (own - both)

    # ----------------------------------------------------------------------------------------
    # The whole pipeline
    # ----------------------------------------------------------------------------------------

    def _sentence_pairs(self, s: str) -> tuple[tuple[str, int], ...]:
        """``(observation, state)`` of every classified mention of one sentence."""
        spans = self._spans(s)
        if not spans:
            return ()
        self._reach(s, spans, self._cue_hits(s))
        out = []
        for span in spans:
            pre = _polarity(span.pre)
            post = _polarity(span.post)
            predicate = _predicate_state(span.predicate)
            hedged = span.diff_obs if self._hedge_differentials else frozenset()
            for name, kind in span.meaning.pairs:
                state = decide(kind, pre, post, name in hedged, predicate, span.predicate_clause)
                if state is not None:
                    out.append((name, state))
        return tuple(out)

    def label(self, text: str) -> LabelDict:
        """All 14 observations for one report; empty or whitespace text gives all None."""
        if not text or text.isspace():
            return empty_labels()
        pairs: list[tuple[str, int]] = []
        for _, s in sentences(normalize_text(text)):
            s = s.strip()
            if len(s) <= MAX_CACHED_CHARS:
                pairs.extend(self._sentence_labels(s))
            else:
                pairs.extend(self._sentence_pairs(s))
        return combine(pairs)

    def label_batch(self, texts: Sequence[str]) -> list[LabelDict]:
        return [self.label(t) for t in texts]

    def clear_cache(self) -> None:
        """Forget cached sentence results (for timing a cold start)."""
        if hasattr(self._sentence_labels, "cache_clear"):
            self._sentence_labels.cache_clear()

    def explain(self, text: str) -> list[Classified]:
        """Every mention of ``text`` with its state and the cue that decided it."""
        return self.classify(text)


def _kinds(mask: int) -> frozenset[str]:
    return frozenset(k for k in CUE_KINDS if mask & _BIT[k])


def _span_mentions(span: _Span, s: str, offset: int) -> list[Mention]:
    text = s[span.start : span.end]
    a, b = span.start + offset, span.end + offset
    if not span.meaning.pairs:
        return [Mention(None, "unmention", a, b, text)]
    return [Mention(name, kind, a, b, text) for name, kind in span.meaning.pairs]


def _spans_from_mentions(
    mentions: Sequence[Mention], lo: int, hi: int, labeler: RuleLabeler
) -> list[_Span]:
    """Rebuild the spans of one sentence (``[lo, hi)`` of the text) from stage-1 output."""
    groups: dict[tuple[int, int], list[tuple[str | None, str]]] = {}
    for m in mentions:
        if lo <= m.start < hi:
            groups.setdefault((m.start - lo, m.end - lo), []).append((m.observation, m.kind))
    spans = []
    for (a, b), pairs in sorted(groups.items()):
        if spans and a < spans[-1].end:
            raise ValueError(f"overlapping mentions at {a + lo}")
        spans.append(_Span(a, b, _Meaning(pairs)))
    return spans


def _bare_subject(span: _Span) -> bool:
    """A subject with nothing said about it yet (no predicate attached)."""
    return span.predicate is None and span.meaning.subject_only


def _polarity(h: _CueHit | None) -> str | None:
    """A cue listed both as negation and as uncertainty counts as uncertainty."""
    if h is None:
        return None
    if h.mask & (UNC_PRE | UNC_LIST | UNC_POST):
        return "uncertainty"
    if h.mask & (NEG_PRE | NEG_POST):
        return "negation"
    return None


def _predicate_state(h: _CueHit | None) -> int | None:
    if h is None:
        return None
    if h.mask & PRED_BORDERLINE:
        return UNCERTAIN
    if h.mask & PRED_ABNORMAL:
        return POSITIVE
    if h.mask & PRED_NORMAL:
        return NEGATIVE
    return None


def _reason(m: Mention, span: _Span, s: str) -> str:
    def quote(h: _CueHit) -> str:
        return repr(s[h.start : h.end])

    kind = m.kind
    if kind == "unmention":
        return "unmention"
    if kind == "subject":
        if span.predicate is None:
            return "subject without predicate"
        return f"predicate {quote(span.predicate)}" + ("" if span.predicate_clause else " (phrase)")
    parts = []
    if span.pre is not None:
        parts.append(f"{_polarity(span.pre)} {quote(span.pre)} before")
    if span.post is not None:
        parts.append(f"{_polarity(span.post)} {quote(span.post)} after")
    if span.diff is not None:
        if m.observation in span.diff_obs:
            parts.append(f"differential {quote(span.diff)}")
        else:
            parts.append(f"same observation on both sides of {quote(span.diff)}")
    if kind == "uncertain":
        parts.append("hedged phrase")
    return "; ".join(parts) or "affirmed"
