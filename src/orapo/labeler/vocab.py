"""Vocabulary files -> compiled trie regexes (stage 1 and 2 of the rule labeler read these).

The vocabulary is data: plain text files under ``vocab/`` beside this module, one phrase a
line. This module parses the small phrase syntax, expands it, and compiles every phrase of a
vocabulary into **one** regex whose alternation is factored as a character trie, so matching
costs about one step per character of text whatever the number of phrases (a plain ``a|b|c``
alternation of a few hundred phrases is ~25x slower in CPython's ``re``).

Phrase syntax (one phrase a line; ``#`` starts a comment; blank lines are ignored):

=================  ===========================================================================
``pleural effusion``  words, separated by single spaces. Between two words the text may have
                      any run of spaces and hyphens, or nothing (``air space`` matches
                      ``airspace``, ``air-space``, ``air  space``), and one de-identification
                      token ``xxxx`` (``costophrenic xxxx blunting``).
plural forms          added automatically to every word of 4+ letters that is not a function
                      word: ``effusion`` also matches ``effusions``; ``opacity`` ->
                      ``opacities``; ``atelectasis`` -> ``atelectases``; ``thorax`` ->
                      ``thoraces``. Cue vocabularies are compiled without plurals.
``atelecta*``         a trailing ``*`` matches any letters (``atelectasis``, ``atelectatic``).
``(heart|cardiac)``   alternatives: one of the ``|``-separated word sequences.
``[mildly|small]``    optional alternatives: one of them, or nothing.
=================  ===========================================================================

Text is matched after :func:`normalize_text` (lower case), on whole words only.
Files with sections (``[mention]``, ``[unmention]``, ...) start a section with a line holding
only its bracketed name; the sections each vocabulary accepts are listed by the caller.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

VOCAB_DIR = Path(__file__).parent / "vocab"

#: Separator atom between two words of a phrase: spaces/hyphens (or nothing), then at most one
#: de-identification token. Bounded: no nested quantifiers, so no catastrophic backtracking.
SEP = r"[\s\-]*(?:xxxx[\s\-]+)?"
WILDCARD = r"[a-z]*"
#: Words that never take a plural ending.
NO_PLURAL = frozenset(
    [
        "with",
        "without",
        "from",
        "that",
        "this",
        "than",
        "then",
        "into",
        "onto",
        "over",
        "under",
        "upon",
        "there",
        "these",
        "those",
        "what",
        "which",
        "while",
        "where",
        "when",
        "were",
        "been",
        "have",
        "does",
        "done",
        "also",
        "only",
        "both",
        "each",
        "more",
        "most",
        "less",
        "very",
        "much",
        "such",
        "left",
        "right",
        "size",
        "is",
        "as",
    ]
)
MAX_EXPANSIONS = 2000

_WORD_CHARS = re.compile(r"[a-z0-9'./]+(?:-[a-z0-9'./]+)*\*?")
_TRANSLATE = str.maketrans(
    {
        "\u2010": "-",
        "\u2011": "-",
        "\u2012": "-",
        "\u2013": "-",
        "\u2014": "-",
        "\u2212": "-",
        "\u00a0": " ",
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\t": " ",
    }
)
# "effu-\nsion" (a word hyphenated across a line break) -> "effusion".
_LINE_HYPHEN = re.compile(r"(?<=[a-z])-[ \t]*\r?\n[ \t]*(?=[a-z])")


class VocabError(ValueError):
    """A vocabulary file that does not follow the phrase syntax; names the file and line."""


def normalize_text(text: str) -> str:
    """Lower-case ``text``, unify dashes/quotes/spaces, join words hyphenated across lines.

    Every span the labeler reports indexes into this normalized string. Idempotent.

    >>> normalize_text("Pleural Effu-\\nsion \\u2013 XXXX")
    'pleural effusion - xxxx'
    """
    out = text.lower().translate(_TRANSLATE)
    if "-" in out and "\n" in out:
        out = _LINE_HYPHEN.sub("", out)
    return out


# --------------------------------------------------------------------------------------------
# Files and the phrase syntax
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Phrase:
    """One vocabulary line: its text, where it came from, and its section."""

    text: str
    section: str
    source: str  # "file:line"


def read_vocab_file(path: Path, sections: Sequence[str] | None = None) -> list[Phrase]:
    """Read one vocabulary file. With ``sections``, the file must be split into those sections
    (``[name]`` lines); without, every phrase gets the section ``""``."""
    phrases: list[Phrase] = []
    section = "" if sections is None else None
    with path.open(encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, start=1):
            line = raw.split("#", 1)[0].strip().lower()
            if not line:
                continue
            where = f"{path}:{lineno}"
            header = re.fullmatch(r"\[([a-z_]+)\]", line)
            if header and sections is not None and header.group(1) in sections:
                section = header.group(1)
                continue
            if section is None:
                valid = ", ".join(f"[{s}]" for s in sections or ())
                raise VocabError(f"{where}: phrase before any section header ({valid})")
            expand_phrase(line, where)  # validate early, with the line number
            phrases.append(Phrase(line, section, where))
    return phrases


def _split_groups(text: str, where: str) -> list[list[tuple[str, ...]]]:
    """Phrase -> list of slots; each slot is a list of alternatives (word tuples);
    an optional slot includes the empty tuple."""
    slots: list[list[tuple[str, ...]]] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == " ":
            i += 1
            continue
        if ch in "([":
            close = ")" if ch == "(" else "]"
            j = text.find(close, i)
            if j < 0:
                raise VocabError(f"{where}: unclosed {ch!r} in phrase {text!r}")
            inner = text[i + 1 : j]
            if any(c in inner for c in "()[]"):
                raise VocabError(f"{where}: nested groups are not supported: {text!r}")
            alts = [tuple(a.split()) for a in inner.split("|")]
            if any(not a for a in alts):
                raise VocabError(f"{where}: empty alternative in {text[i : j + 1]!r}")
            if ch == "[":
                alts.append(())
            slots.append(alts)
            i = j + 1
            continue
        j = i
        while j < len(text) and text[j] not in " ([":
            j += 1
        slots.append([(text[i:j],)])
        i = j
    return slots


def expand_phrase(text: str, where: str = "<phrase>") -> list[tuple[str, ...]]:
    """Expand alternatives and optional groups into plain word sequences.

    >>> expand_phrase("(heart|cardiac) [size] normal")
    [('heart', 'size', 'normal'), ('heart', 'normal'), ('cardiac', 'size', 'normal'), \
('cardiac', 'normal')]
    """
    slots = _split_groups(text, where)
    total = 1
    for slot in slots:
        total *= len(slot)
    if total > MAX_EXPANSIONS:
        raise VocabError(f"{where}: phrase expands to {total} variants (max {MAX_EXPANSIONS})")
    out = []
    for combo in itertools.product(*slots):
        words = tuple(w for part in combo for w in part)
        if not words:
            raise VocabError(f"{where}: phrase can match the empty string: {text!r}")
        for w in words:
            if not _WORD_CHARS.fullmatch(w):
                raise VocabError(f"{where}: bad word {w!r} in phrase {text!r}")
        out.append(words)
    return out


# --------------------------------------------------------------------------------------------
# Atoms and the trie
# --------------------------------------------------------------------------------------------


def word_atoms(word: str, plural: bool) -> list[str]:
    """A word as regex atoms (one per character, plus one plural/wildcard atom at the end).

    >>> word_atoms("opacity", True)[-1]
    '(?:y|ies)'
    """
    if word.endswith("*"):
        return [re.escape(c) for c in word[:-1]] + [WILDCARD]
    atoms = [re.escape(c) for c in word]
    if not plural or len(word) < 4 or word in NO_PLURAL or not word.isalpha():
        return atoms
    if word.endswith("y") and word[-2] not in "aeiou":
        return atoms[:-1] + ["(?:y|ies)"]
    if word.endswith("sis") or word.endswith("xis"):
        return atoms[:-2] + ["(?:is|es)"]
    if word.endswith("x"):
        return atoms[:-1] + ["(?:x|xes|ces)"]
    if word.endswith("s"):
        return atoms + ["(?:es)?"]
    return atoms + ["(?:e?s)?"]


def phrase_atoms(words: Sequence[str], plural: bool) -> tuple[str, ...]:
    atoms: list[str] = []
    for i, word in enumerate(words):
        if i:
            atoms.append(SEP)
        for part_i, part in enumerate(word.split("-")):  # "port-a-cath": hyphen = separator
            if part_i:
                atoms.append(SEP)
            atoms.extend(word_atoms(part, plural))
    return tuple(atoms)


class _Node:
    __slots__ = ("children", "leaf")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.leaf: int | None = None


def _literal(atom: str) -> str | None:
    """The character an atom matches, if it is a single literal character."""
    if len(atom) == 1:
        return atom
    if len(atom) == 2 and atom[0] == "\\":
        return atom[1]
    return None


def _emit(node: _Node, groups: bool) -> str:
    # Children first (longer matches preferred), then the leaf: with ``groups``, an empty named
    # group that tells which phrase matched (Match.lastgroup); without, an empty alternative.
    literal = sorted(a for a in node.children if _literal(a) is not None)
    others = sorted(a for a in node.children if _literal(a) is None)
    alts = [a + _emit(node.children[a], groups) for a in literal + others]
    if node.leaf is not None:
        alts.append(f"(?P<g{node.leaf}>)" if groups else "")
    if len(alts) == 1:
        return alts[0]
    return "(?:" + "|".join(alts) + ")"


_TAIL = r"(?![a-z0-9])"


@dataclass
class CompiledVocab:
    """One trie regex over many phrases, plus small regexes that name the matched leaf.

    ``regex`` has no groups and finds the matches. A leaf is named by an empty group
    ``g<i>`` (``payloads[i]`` says what it means) in one of the ``leaf_regexes``: the trie
    split by the first two characters of its phrases, so that each has few groups (CPython's
    ``re`` copies every group of a pattern into each match object: with one regex of ~4,000
    groups that costs ~5 us a match).
    """

    regex: re.Pattern
    leaf_regexes: dict[str, re.Pattern]
    payloads: list[frozenset]

    def leaf(self, text: str, start: int) -> int:
        """Index of the leaf (phrase) that :attr:`regex` matched at ``start``."""
        for key in (text[start : start + 2], text[start : start + 1]):
            rx = self.leaf_regexes.get(key)
            if rx is not None:
                m = rx.match(text, start)
                if m is not None and m.lastgroup is not None:
                    return int(m.lastgroup[1:])
        raise AssertionError(f"no leaf regex matches at {start} in {text!r}")

    def finditer(self, text: str) -> Iterable[tuple[int, int, frozenset]]:
        """Non-overlapping matches, leftmost first, longest at each branch:
        ``(start, end, payload)``."""
        for m in self.regex.finditer(text):
            yield m.start(), m.end(), self.payloads[self.leaf(text, m.start())]


def _leaf_regexes(root: _Node) -> dict[str, re.Pattern]:
    """Per first-two-characters key, the part of the trie under it, with leaf groups. Phrases
    whose second atom is not a literal character go under their first character alone."""
    out: dict[str, re.Pattern] = {}
    for a1, n1 in root.children.items():
        c1 = _literal(a1)
        if c1 is None:
            raise VocabError(f"a phrase must start with a letter or digit, not {a1!r}")
        rest = _Node()
        rest.leaf = n1.leaf
        for a2, n2 in n1.children.items():
            c2 = _literal(a2)
            if c2 is None:
                rest.children[a2] = n2
            else:
                out[c1 + c2] = re.compile(a1 + a2 + _emit(n2, True) + _TAIL)
        if rest.children or rest.leaf is not None:
            out[c1] = re.compile(a1 + _emit(rest, True) + _TAIL)
    return out


def compile_vocab(entries: Iterable[tuple[str, object, str]], *, plural: bool) -> CompiledVocab:
    """Compile ``(phrase, payload item, source)`` triples into one trie regex.

    Phrases that expand to the same atoms share a leaf whose payload is the union of their
    payload items (e.g. ``cardiomediastinal silhouette`` is a subject of two observations).
    """
    root = _Node()
    payload_sets: list[set] = []
    for text, item, where in entries:
        for words in expand_phrase(text, where):
            node = root
            for atom in phrase_atoms(words, plural):
                node = node.children.setdefault(atom, _Node())
            if node.leaf is None:
                node.leaf = len(payload_sets)
                payload_sets.append(set())
            payload_sets[node.leaf].add(item)
    if not payload_sets:
        raise VocabError("empty vocabulary: nothing to compile")
    return CompiledVocab(
        re.compile(r"(?<![a-z0-9])" + _emit(root, False) + _TAIL),
        _leaf_regexes(root),
        [frozenset(p) for p in payload_sets],
    )


def read_word_list(path: Path) -> frozenset[str]:
    """A file of single words (gap vocabularies): one or more words a line, no syntax."""
    words: set[str] = set()
    with path.open(encoding="utf-8") as fh:
        for raw in fh:
            words.update(raw.split("#", 1)[0].lower().split())
    return frozenset(words)
