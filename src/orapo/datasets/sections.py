"""FINDINGS / IMPRESSION extraction from free-text radiology reports (MIMIC-CXR style).

MIMIC-CXR reports are plain text with upper-case section headers, one space of indent::

                                     FINAL REPORT
     EXAMINATION:  CHEST (PA AND LAT)

     INDICATION:  ___F with new onset ascites  // eval for infection

     FINDINGS:

     There is no focal consolidation, pleural effusion or pneumothorax. ...

     IMPRESSION:

     No acute cardiopulmonary process.

:func:`split_sections` follows the logic of ``section_parser.section_text`` in the MIMIC-CXR
repository (MIT-LCP/mimic-cxr, ``txt/``), re-implemented here:

1. A header is a line ``\\n <UPPER CASE, spaces, ()/,->:`` followed by whitespace; the text
   before the first header is the ``preamble``. After a header, the search for the next one
   starts at the next newline (so a header's first line of content never opens a section).
2. Header names are normalised (:data:`SECTION_ALIASES`, then substring rules: a name
   containing ``impression``/``findings``/``history``/``comparison``/``addendum`` becomes that
   name, a name describing views such as ``PA AND LATERAL`` or ``PORTABLE`` becomes
   ``findings``).
3. Empty ``findings`` / ``impression`` sections are dropped.
4. When neither ``findings`` nor ``impression`` remains, the last section is cut at its first
   blank line (``"\\n \\n"``); what follows becomes a ``last_paragraph`` section (this is the
   repository's behaviour: for a report without headers it is everything after the first
   paragraph).

:func:`findings_and_impression` then takes the *last* ``findings`` and the *last*
``impression`` section. Fallback when a report has neither (``create_section_files.py`` uses
the same order to choose the section the CheXpert labels were computed on): the
``last_paragraph`` section if there is one, else the ``comparison`` section (radiologists
sometimes write the whole report there), becomes the impression; the first of the two that is
present is used even when it is blank. Departure: the repository's per-study hand-made
overrides (about 30 named MIMIC studies) are not reproduced; those studies go through the
general rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Header text -> normalised section name (the frequent spellings and typos in MIMIC-CXR).
SECTION_ALIASES: dict[str, str] = {
    "preamble": "preamble",
    "impression": "impression",
    "comparison": "comparison",
    "indication": "indication",
    "findings": "findings",
    "examination": "examination",
    "technique": "technique",
    "history": "history",
    "comparisons": "comparison",
    "clinical history": "history",
    "reason for examination": "indication",
    "notification": "notification",
    "reason for exam": "indication",
    "clinical information": "history",
    "exam": "examination",
    "clinical indication": "indication",
    "conclusion": "impression",
    "chest, two views": "findings",
    "recommendation(s)": "recommendations",
    "type of examination": "examination",
    "reference exam": "comparison",
    "patient history": "history",
    "addendum": "addendum",
    "comparison exam": "comparison",
    "date": "date",
    "comment": "comment",
    "findings and impression": "impression",
    "wet read": "wet read",
    "comparison film": "comparison",
    "recommendations": "recommendations",
    "findings/impression": "impression",
    "pfi": "history",
    "recommendation": "recommendations",
    "wetread": "wet read",
    "ndication": "impression",
    "impresson": "impression",
    "imprression": "impression",
    "imoression": "impression",
    "impressoin": "impression",
    "imprssion": "impression",
    "impresion": "impression",
    "imperssion": "impression",
    "mpression": "impression",
    "impession": "impression",
    "findings/ impression": "impression",
    "finding": "findings",
    "findins": "findings",
    "findindgs": "findings",
    "findgings": "findings",
    "findngs": "findings",
    "findnings": "findings",
    "finidngs": "findings",
    "idication": "indication",
    "reference findings": "findings",
    "comparision": "comparison",
    "comparsion": "comparison",
    "comparrison": "comparison",
    "comparisions": "comparison",
}

#: A header containing one of these names becomes that name (checked in this order).
_MAIN_SECTIONS = ("impression", "findings", "history", "comparison", "addendum")

#: A header describing the views of the study is a findings section ("PA AND LATERAL CHEST:").
_VIEW_HEADER = re.compile(
    "chest|portable|pa and lateral|lateral and pa|ap and lateral|lateral and ap|frontal and"
    "|two views|frontal view|pa view|ap view|one view|lateral view|bone window"
    "|frontal upright|frontal semi-upright|ribs|pa and lat"
)

_HEADER = re.compile(r"\n ([A-Z ()/,-]+):\s")
_PARAGRAPH_BREAK = "\n \n"
_SPACES = re.compile(r"\s+")


def normalize_section_name(name: str) -> str:
    """Header text -> section name (``"CONCLUSION"`` -> ``"impression"``).

    >>> normalize_section_name("PA AND LATERAL VIEWS OF THE CHEST")
    'findings'
    """
    key = name.lower().strip()
    if key in SECTION_ALIASES:
        return SECTION_ALIASES[key]
    for main in _MAIN_SECTIONS:
        if main in key:
            return main
    if _VIEW_HEADER.search(key):
        return "findings"
    return key


def split_sections(text: str) -> list[tuple[str, str]]:
    """Report text -> ``[(section name, raw section text), ...]`` in report order.

    See the module docstring for the rules. A report without any header is one section named
    ``"full report"`` (plus ``"last_paragraph"`` when it has more than one paragraph).
    """
    sections: list[tuple[str, str]] = []
    match = _HEADER.search(text, 0)
    if match is None:
        sections.append(("full report", text))
    else:
        sections.append(("preamble", text[: match.start(1)]))
        while match is not None:
            name = normalize_section_name(match.group(1))
            start = match.end()
            skip = text.find("\n", start)
            match = _HEADER.search(text, skip if skip != -1 else start)
            end = match.start() if match is not None else len(text)
            sections.append((name, text[start:end]))
    sections = [
        (name, body)
        for name, body in sections
        if not (name in ("findings", "impression") and not body.strip())
    ]
    names = {name for name, _ in sections}
    if "findings" not in names and "impression" not in names:
        last_name, last_body = sections[-1]
        if _PARAGRAPH_BREAK in last_body:
            first, *rest = last_body.split(_PARAGRAPH_BREAK)
            sections[-1] = (last_name, first)
            sections.append(("last_paragraph", _PARAGRAPH_BREAK.join(rest)))
    return sections


def clean_text(text: str) -> str:
    """Collapse all runs of whitespace (line breaks, indents) to one space and strip."""
    return _SPACES.sub(" ", text).strip()


@dataclass(frozen=True)
class ReportSections:
    """The two sections orapo trains on, and where the impression came from.

    ``impression_from`` is ``"impression"`` (a header), ``"last_paragraph"`` or
    ``"comparison"`` (the fallbacks), or ``""`` when there is no impression text.
    """

    findings: str
    impression: str
    impression_from: str


def _last(sections: list[tuple[str, str]], name: str) -> str:
    for section_name, body in reversed(sections):
        if section_name == name:
            return clean_text(body)
    return ""


def findings_and_impression(text: str) -> ReportSections:
    """Extract FINDINGS and IMPRESSION from a MIMIC-style report (module docstring rules).

    >>> r = findings_and_impression("\\n FINDINGS: Lungs clear.\\n \\n IMPRESSION: Normal.\\n")
    >>> (r.findings, r.impression, r.impression_from)
    ('Lungs clear.', 'Normal.', 'impression')
    """
    sections = split_sections(text)
    findings = _last(sections, "findings")
    impression = _last(sections, "impression")
    if impression:
        return ReportSections(findings, impression, "impression")
    if findings:
        return ReportSections(findings, "", "")
    names = {name for name, _ in sections}
    for fallback in ("last_paragraph", "comparison"):
        # The first fallback section present wins, even when it is empty (as in the
        # repository): a report whose last paragraph is blank has no impression.
        if fallback in names:
            body = _last(sections, fallback)
            return ReportSections("", body, fallback if body else "")
    return ReportSections("", "", "")
