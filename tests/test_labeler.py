"""Rule labeler: worked values for each stage, a table of tricky sentences, the vocabulary."""

from __future__ import annotations

import pytest

from orapo.labeler import (
    LABELERS,
    Classified,
    Labeler,
    Mention,
    RuleLabeler,
    aggregate,
    decide,
    get_labeler,
    label_report,
)
from orapo.labeler.rule import combine, list_end, sentences
from orapo.labeler.vocab import (
    VocabError,
    compile_vocab,
    expand_phrase,
    normalize_text,
    read_vocab_file,
    word_atoms,
)
from orapo.observations import OBSERVATIONS


@pytest.fixture(scope="module")
def lab() -> RuleLabeler:
    return get_labeler("rule")  # type: ignore[return-value]


def states(lab: RuleLabeler, text: str) -> dict[str, int]:
    """The labels of ``text`` that are not None."""
    return {k: v for k, v in lab.label(text).items() if v is not None}


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def test_registry_and_protocol(lab):
    assert "rule" in LABELERS
    assert LABELERS.get("rule") is RuleLabeler
    assert isinstance(lab, Labeler)
    assert lab.name == "rule"
    assert get_labeler() is get_labeler("rule")  # the shared default
    with pytest.raises(KeyError, match="valid names are: .*rule"):
        get_labeler("nonexistent")


def test_label_returns_all_14_keys(lab):
    for text in ("", "Cardiomegaly.", "garbage"):
        out = lab.label(text)
        assert list(out) == list(OBSERVATIONS)
        assert set(out.values()) <= {1, 0, -1, None}


@pytest.mark.parametrize("text", ["", " ", "\n\t  \n"])
def test_empty_text_is_all_none(lab, text):
    assert all(v is None for v in lab.label(text).values())
    assert all(v is None for v in label_report(text).values())


def test_label_batch_matches_label(lab):
    texts = ["No pneumothorax.", "", "Small left effusion."]
    assert lab.label_batch(texts) == [lab.label(t) for t in texts]


def test_options_build_a_new_labeler():
    uncached = get_labeler("rule", cache_size=0)
    assert uncached is not get_labeler()
    text = "Mild cardiomegaly. No effusion."
    assert uncached.label(text) == label_report(text)
    with pytest.raises(ValueError, match="cache_size"):
        RuleLabeler(cache_size=-1)


# --------------------------------------------------------------------------------------------
# Stage 1: mentions
# --------------------------------------------------------------------------------------------


def test_normalize_text():
    assert normalize_text("Pleural Effu-\nsion \u2013 XXXX") == "pleural effusion - xxxx"
    once = normalize_text("A\u00a0B\u2019s")
    assert normalize_text(once) == once


def test_mention_spans(lab):
    text = "Small left pleural effusions. No pneumothorax."
    ms = [m for m in lab.extract_mentions(text) if m.observation]
    assert [(m.observation, m.start, m.end, m.text) for m in ms] == [
        ("Pleural Effusion", 11, 28, "pleural effusions"),
        ("Pneumothorax", 33, 45, "pneumothorax"),
    ]
    assert normalize_text(text)[11:28] == "pleural effusions"


def test_unmention_wins_over_the_mention_inside(lab):
    ms = lab.extract_mentions("Small pericardial effusion. Calcified granuloma.")
    assert [(m.observation, m.kind, m.text) for m in ms] == [
        (None, "unmention", "pericardial effusion"),
        (None, "unmention", "calcified granuloma"),
    ]


def test_one_span_can_mean_two_observations(lab):
    ms = lab.extract_mentions("Hydropneumothorax.")
    assert {m.observation for m in ms} == {"Pneumothorax", "Pleural Effusion"}
    assert {(m.start, m.end) for m in ms} == {(0, 17)}


@pytest.mark.parametrize(
    ("text", "observation"),
    [
        ("opacities", "Lung Opacity"),  # y -> ies
        ("atelectases", "Atelectasis"),  # sis -> ses
        ("pneumothoraces", "Pneumothorax"),  # x -> ces
        ("effusions", "Pleural Effusion"),
        ("air-space disease", "Lung Opacity"),  # hyphen
        ("airspace disease", "Lung Opacity"),  # closed up
        ("air  space disease", "Lung Opacity"),
        ("atelectatic", "Atelectasis"),  # wildcard atelecta*
        ("pnuemothorax", "Pneumothorax"),  # misspellings
        ("cardiomegally", "Cardiomegaly"),
        ("CARDIOMEGALY", "Cardiomegaly"),  # case
        ("port-a-cath", "Support Devices"),
        ("right chest XXXX tip", "Support Devices"),  # de-identified device word
    ],
)
def test_surface_variants(lab, text, observation):
    assert observation in {m.observation for m in lab.extract_mentions(text)}


def test_whole_words_only(lab):
    assert not [m for m in lab.extract_mentions("effusionx xeffusion") if m.observation]


# --------------------------------------------------------------------------------------------
# Stage 2: classification
# --------------------------------------------------------------------------------------------


def reasons(lab, text):
    return {(c.mention.observation, c.state, c.reason) for c in lab.classify(text)}


def test_negation_scope_runs_over_a_list(lab):
    out = {
        c.mention.observation: c.state
        for c in lab.classify("No effusion, pneumothorax or consolidation.")
    }
    assert out == {"Pleural Effusion": 0, "Pneumothorax": 0, "Consolidation": 0}


def test_negation_scope_ends_at_sentence_and_but(lab):
    assert states(lab, "No effusion. Pneumothorax.") == {"Pleural Effusion": 0, "Pneumothorax": 1}
    assert states(lab, "No effusion but there is a small pneumothorax.") == {
        "Pleural Effusion": 0,
        "Pneumothorax": 1,
    }
    assert states(lab, "No cardiomegaly with bilateral small pleural effusions.") == {
        "Cardiomegaly": 0,
        "Pleural Effusion": 1,
    }


def test_post_negation_reaches_back_over_a_list(lab):
    out = {
        c.mention.observation: (c.state, c.reason)
        for c in lab.classify("Pleural effusion or pneumothorax is not seen.")
    }
    assert out["Pleural Effusion"] == (0, "negation 'not seen' after; differential 'or'")
    assert out["Pneumothorax"][0] == 0


def test_post_negation_does_not_reach_past_a_clause_comma(lab):
    assert states(lab, "Left basilar opacity, pneumothorax is not seen.") == {
        "Lung Opacity": 1,
        "Pneumothorax": 0,
    }


def test_uncertainty_cues(lab):
    assert states(lab, "Cannot exclude a small effusion.") == {"Pleural Effusion": -1}
    assert states(lab, "A small effusion cannot be excluded.") == {"Pleural Effusion": -1}
    assert states(lab, "Opacity may represent pneumonia.") == {"Lung Opacity": 1, "Pneumonia": -1}


def test_hedge_does_not_reach_across_a_clause_comma(lab):
    out = states(lab, "Densities most suggestive of artifacts, healed right rib fracture noted.")
    assert out["Fracture"] == 1


def test_differential_chexpert_convention():
    chexpert = RuleLabeler(differential="uncertain")
    assert states(chexpert, "Atelectasis versus pneumonia.") == {"Atelectasis": -1, "Pneumonia": -1}
    assert states(chexpert, "Scarring or atelectasis in the left base.") == {"Atelectasis": -1}
    assert states(chexpert, "Right basilar opacity, atelectasis versus pneumonia.") == {
        "Lung Opacity": 1,
        "Atelectasis": -1,
        "Pneumonia": -1,
    }
    assert states(chexpert, "Small bilateral pleural effusions versus pleural thickening.") == {
        "Pleural Effusion": -1,
        "Pleural Other": -1,
    }
    # Negation wins over "or".
    assert states(chexpert, "No effusion or pneumothorax.") == {
        "No Finding": 1,
        "Pleural Effusion": 0,
        "Pneumothorax": 0,
    }


def test_same_observation_on_both_sides_is_no_differential(lab):
    assert states(lab, "Atelectasis or collapse of the left lower lobe.") == {"Atelectasis": 1}
    # a nodular opacity is Lung Lesion and Lung Opacity: only the lesion is in doubt
    chexpert = RuleLabeler(differential="uncertain")
    assert states(chexpert, "Nodular opacity or infiltrate.") == {
        "Lung Opacity": 1,
        "Lung Lesion": -1,
    }
    reasons = [c.reason for c in chexpert.classify("Nodular opacity or infiltrate.")]
    assert "same observation on both sides of 'or'" in reasons
    assert "differential 'or'" in reasons


def test_differential_default_is_positive():
    positive = RuleLabeler()
    assert positive.differential == "positive"
    assert states(positive, "Scarring or atelectasis in the left base.") == {"Atelectasis": 1}
    assert states(positive, "Atelectasis versus pneumonia.") == {
        "Atelectasis": 1,
        "Pneumonia": 1,
    }
    # other hedges and negations still decide
    assert states(positive, "May represent atelectasis or pneumonia.") == {
        "Atelectasis": -1,
        "Pneumonia": -1,
    }
    assert states(positive, "No effusion or pneumothorax.")["Pneumothorax"] == 0
    with pytest.raises(ValueError, match="differential must be one of"):
        RuleLabeler(differential="maybe")


def test_colon_before_a_state_word_is_no_sentence_end(lab):
    assert [s for _, s in sentences("pneumothorax: none. findings: no effusion")] == [
        "pneumothorax: none",
        " findings",
        " no effusion",
    ]
    assert states(lab, "Pneumothorax: none.") == {"No Finding": 1, "Pneumothorax": 0}
    assert states(lab, "Heart size: enlarged.") == {"Cardiomegaly": 1}
    assert states(lab, "Lines/tubes: none.")["Support Devices"] == 0


def test_post_cue_reaches_a_subject_over_its_own_predicate(lab):
    text = (
        "Consolidation, atelectasis, and costophrenic XXXX blunting in the left lower lobe "
        "have cleared in the interval."
    )
    assert states(lab, text) == {
        "No Finding": 1,
        "Consolidation": 0,
        "Atelectasis": 0,
        "Pleural Effusion": 0,
    }
    assert states(lab, "Left costophrenic blunting cannot be excluded.") == {"Pleural Effusion": -1}


def test_subjects_take_their_predicate(lab):
    assert states(lab, "Heart size is normal.")["Cardiomegaly"] == 0
    assert states(lab, "The heart is mildly enlarged.")["Cardiomegaly"] == 1
    assert states(lab, "Borderline heart size.")["Cardiomegaly"] == -1
    assert states(lab, "The heart and mediastinum are normal.") == {
        "No Finding": 1,
        "Cardiomegaly": 0,
        "Enlarged Cardiomediastinum": 0,
    }
    # A subject with nothing said about it labels nothing.
    assert states(lab, "Stable cardiomediastinal silhouette.") == {}


def test_noun_phrase_predicate_is_negated(lab):
    out = states(lab, "There is no costophrenic angle blunting to suggest effusion.")
    assert out["Pleural Effusion"] == 0
    # ... but a predicate clause is a statement of its own.
    assert states(lab, "No effusion, the heart is enlarged.")["Cardiomegaly"] == 1


def test_pseudo_negation(lab):
    assert states(lab, "No change in the small left effusion.") == {"Pleural Effusion": 1}


def test_decide_conflict_rules():
    assert decide("mention", None, None, False, None) == 1
    assert decide("mention", "negation", None, False, None) == 0
    assert decide("mention", "uncertainty", None, False, None) == -1
    assert decide("mention", "negation", "uncertainty", False, None) == -1
    assert decide("mention", "negation", None, True, None) == 0  # negation beats "or"
    assert decide("mention", None, None, True, None) == -1
    assert decide("uncertain", None, None, False, None) == -1
    assert decide("uncertain", "negation", None, False, None) == 0
    assert decide("subject", None, None, False, None) is None
    assert decide("subject", "negation", None, False, 1) == 1  # clause
    assert decide("subject", "negation", None, False, 1, clause=False) == 0
    assert decide("subject", "uncertainty", None, False, 1, clause=False) == -1
    assert decide("subject", None, "negation", False, -1, clause=False) == 0
    assert decide("subject", None, "negation", False, 1) == 1  # clause: a statement of its own


def test_classify_accepts_stage_one_output(lab):
    text = "No effusion. Possible pneumonia."
    mentions = lab.extract_mentions(text)
    assert lab.classify(text, mentions) == lab.classify(text)


def test_find_cues(lab):
    cues = lab.find_cues("No effusion; possible pneumonia.")
    kinds = [(c.text, sorted(c.kinds)) for c in cues]
    assert ("no", ["negation_pre"]) in kinds
    assert ("possible", ["uncertainty_pre"]) in kinds
    assert (";", ["scope_end"]) in kinds


def test_sentences_and_list_end():
    assert [s for _, s in sentences("a. b; c vs. d\n\ne")] == ["a", " b", " c vs. d", "e"]
    assert list_end("possible a, b or c, d") == 16
    assert list_end("no commas here") == 0


# --------------------------------------------------------------------------------------------
# Stage 3: aggregation
# --------------------------------------------------------------------------------------------


def test_aggregation_precedence():
    m = Mention("Edema", "mention", 0, 5, "edema")
    assert aggregate([Classified(m, 0, ""), Classified(m, -1, "")])["Edema"] == -1
    assert (
        aggregate([Classified(m, -1, ""), Classified(m, 1, ""), Classified(m, 0, "")])["Edema"] == 1
    )
    assert combine([("Edema", 0)])["Edema"] == 0


def test_no_finding_rule():
    # Something negative mentioned and nothing positive: No Finding.
    assert combine([("Pneumothorax", 0)])["No Finding"] == 1
    # Uncertain or positive findings clear it; Support Devices do not.
    assert combine([("Pneumothorax", 0), ("Edema", -1)])["No Finding"] is None
    assert combine([("Support Devices", 1)])["No Finding"] == 1
    # A global normal statement proposes it; a finding still wins.
    assert combine([("No Finding", 1)])["No Finding"] == 1
    assert combine([("No Finding", 1), ("Cardiomegaly", 1)])["No Finding"] is None
    # Nothing mentioned at all: not mentioned (orapo's rule).
    assert combine([])["No Finding"] is None
    # No Finding itself is never 0 or -1.
    assert combine([("No Finding", 0)])["No Finding"] is None


def test_no_finding_from_global_statement(lab):
    assert lab.label("IMPRESSION: No acute cardiopulmonary abnormality.")["No Finding"] == 1
    assert lab.label("Normal chest radiograph.")["No Finding"] == 1
    assert lab.label("Mild cardiomegaly. No acute disease.")["No Finding"] is None
    assert lab.label("Lead apron artifact.")["No Finding"] is None


# --------------------------------------------------------------------------------------------
# Tricky sentences
# --------------------------------------------------------------------------------------------

TRICKY: list[tuple[str, dict[str, int]]] = [
    (
        "No pleural effusion, pneumothorax or focal consolidation.",
        {"Pleural Effusion": 0, "Pneumothorax": 0, "Consolidation": 0},
    ),
    ("The lungs are clear without evidence of infiltrate.", {"Lung Opacity": 0}),
    ("Lungs are expanded and clear of airspace disease.", {"Lung Opacity": 0}),
    ("Previously seen left pleural effusion has resolved.", {"Pleural Effusion": 0}),
    ("Interval resolution of the right lower lobe pneumonia.", {"Pneumonia": 0}),
    ("The pneumothorax is no longer seen.", {"Pneumothorax": 0}),
    ("Heart size is upper limits of normal.", {"Cardiomegaly": 0}),
    ("The heart is not enlarged.", {"Cardiomegaly": 0}),
    ("Stable mild cardiomegaly.", {"Cardiomegaly": 1}),
    ("Cannot exclude early pneumonia.", {"Pneumonia": -1}),
    ("Findings may represent atelectasis or infiltrate.", {"Atelectasis": -1, "Lung Opacity": -1}),
    (
        "Right basilar opacity, atelectasis versus pneumonia.",
        {"Lung Opacity": 1, "Atelectasis": 1, "Pneumonia": 1},
    ),
    ("No focal airspace opacity to suggest pneumonia.", {"Lung Opacity": 0, "Pneumonia": 0}),
    ("Blunting of the left costophrenic angle.", {"Pleural Effusion": -1}),
    ("Costophrenic XXXX are sharp.", {"Pleural Effusion": 0}),
    (
        "Small bilateral pleural effusions versus pleural thickening.",
        {"Pleural Effusion": 1, "Pleural Other": 1},
    ),
    ("Calcified granuloma in the right upper lobe.", {}),
    (
        "There is a 6 mm nodular opacity in the right upper lobe.",
        {"Lung Lesion": 1, "Lung Opacity": 1},
    ),
    ("No acute displaced rib fractures.", {"Fracture": 0}),
    ("Healed left rib fractures.", {"Fracture": 1}),
    ("Several age-indeterminate left-sided rib fractures.", {"Fracture": 1}),
    ("Left subclavian PICC line with tip in the SVC.", {"Support Devices": 1}),
    ("Sternotomy wires and mediastinal clips.", {}),
    ("The endotracheal tube has been removed.", {"Support Devices": 0}),
    ("Interstitial pulmonary edema.", {"Edema": 1}),
    ("No pulmonary vascular congestion.", {}),
    ("Mild pulmonary vascular congestion without overt edema.", {"Edema": 0}),
    ("Widened mediastinum.", {"Enlarged Cardiomediastinum": 1}),
    ("There is no mediastinal widening.", {"Enlarged Cardiomediastinum": 0}),
    ("Mild apical pleural thickening.", {"Pleural Other": 1}),
    (
        "Possible small left pleural effusion; no pneumothorax.",
        {"Pleural Effusion": -1, "Pneumothorax": 0},
    ),
    ("Probable right lower lobe pneumonia.", {"Pneumonia": 1}),
    (
        "Differential diagnosis includes edema, infection, inflammation.",
        {"Edema": -1, "Pneumonia": -1},
    ),
    ("Pneumonia is a possibility.", {"Pneumonia": -1}),
    ("Nondisplaced fractures may not be demonstrated.", {"Fracture": -1}),
    ("Low lung volumes with bibasilar atelectasis.", {"Atelectasis": 1}),
    # partial resolution: still there
    ("Nearly resolved right pneumothorax.", {"Pneumothorax": 1}),
    ("The left pneumothorax has almost completely resolved.", {"Pneumothorax": 1}),
    ("Near complete resolution of the right effusion.", {"Pleural Effusion": 1}),
    ("Findings could represent nearly resolved pneumonia.", {"Pneumonia": -1}),
    ("Pneumothorax has resolved.", {"Pneumothorax": 0}),
    # new since the last study, not absent
    ("A 9 mm right lower lobe nodule, not seen on prior exams.", {"Lung Lesion": 1}),
    ("Left midlung opacity, not well seen on the prior study.", {"Lung Opacity": 1}),
    ("The previously seen nodule is not seen on today's exam.", {"Lung Lesion": 0}),
    # likelihood words
    ("Atelectasis, less likely pneumonia.", {"Atelectasis": 1, "Pneumonia": -1}),
    ("Atelectasis is favored over pneumonia.", {"Atelectasis": 1, "Pneumonia": -1}),
    ("A small left effusion is favored.", {"Pleural Effusion": 1}),
    ("Pneumonia is unlikely.", {"Pneumonia": 0}),
    ("Pneumonia would be a consideration.", {"Pneumonia": -1}),
    ("Correlate clinically for pneumonia.", {"Pneumonia": -1}),
    ("Lack of pleural effusion.", {"Pleural Effusion": 0}),
    ("Skin fold mimicking a pneumothorax.", {"Pneumothorax": 0}),
    ("The heart is not significantly enlarged.", {"Cardiomegaly": 0}),
    ("The heart size is near the upper limits of normal.", {"Cardiomegaly": 0}),
    ("The cardiomediastinal silhouette is stable and enlarged.", {"Enlarged Cardiomediastinum": 1}),
    # phrasing families of the rarer observations
    ("The pleura is thickened on the left.", {"Pleural Other": 1}),
    ("Thickening of the right minor fissure.", {"Pleural Other": 1}),
    ("Stable left lateral pleural thickening or scarring.", {"Pleural Other": 1}),
    ("The right paratracheal stripe is widened.", {"Enlarged Cardiomediastinum": 1}),
    ("Mild convexity of the right mediastinal contour.", {"Enlarged Cardiomediastinum": 1}),
    ("Suggestion of a deep sulcus sign on the right.", {"Pneumothorax": -1}),
    ("Right upper lobe fibronodular infiltrate.", {"Lung Lesion": 1, "Lung Opacity": 1}),
    ("Masslike opacity in the right upper lobe.", {"Lung Lesion": 1, "Lung Opacity": 1}),
    ("Infectious infiltrate in the lingula.", {"Pneumonia": 1, "Lung Opacity": 1}),
    ("Findings of congestive failure.", {"Edema": 1}),
    ("Fluid tracking into the right minor fissure.", {"Pleural Effusion": 1}),
    ("Broken left 5th rib.", {"Fracture": 1}),
    ("Broken sternal wires.", {}),
    ("Callus formation along the left 5th rib.", {"Fracture": 1}),
    ("Mild anterior wedging of a midthoracic vertebral body.", {"Fracture": -1}),
    ("Collapsed right lower lobe.", {"Atelectasis": 1}),
    ("Left-sided dual-XXXX cardiac XXXX in stable position.", {"Support Devices": 1}),
]


@pytest.mark.parametrize(("text", "expected"), TRICKY)
def test_tricky_sentences(lab, text, expected):
    got = {k: v for k, v in lab.label(text).items() if v is not None and k != "No Finding"}
    assert got == expected, lab.classify(text)


# --------------------------------------------------------------------------------------------
# Vocabulary syntax
# --------------------------------------------------------------------------------------------


def test_expand_phrase():
    assert expand_phrase("(heart|cardiac) [size] normal") == [
        ("heart", "size", "normal"),
        ("heart", "normal"),
        ("cardiac", "size", "normal"),
        ("cardiac", "normal"),
    ]
    with pytest.raises(VocabError, match="unclosed"):
        expand_phrase("(heart|cardiac", "f.txt:3")
    with pytest.raises(VocabError, match="f.txt:3: phrase can match the empty string"):
        expand_phrase("[a|b]", "f.txt:3")
    with pytest.raises(VocabError, match="bad word"):
        expand_phrase("he@rt", "f.txt:3")


def test_word_atoms():
    assert word_atoms("opacity", True)[-1] == "(?:y|ies)"
    assert word_atoms("atelecta*", True)[-1] == "[a-z]*"
    assert word_atoms("is", True) == ["i", "s"]  # short words: no plural
    assert word_atoms("effusion", False) == list("effusion")


def test_compile_vocab_longest_match_and_payload_union():
    v = compile_vocab(
        [("effusion", "E", "a"), ("pleural effusion", "PE", "b"), ("pleural effusion", "X", "c")],
        plural=True,
    )
    hits = list(v.finditer("small pleural effusions and an effusion"))
    assert [(a, b) for a, b, _ in hits] == [(6, 23), (31, 39)]
    assert hits[0][2] == {"PE", "X"}
    assert hits[1][2] == {"E"}


def test_vocab_file_errors(tmp_path):
    f = tmp_path / "x.txt"
    f.write_text("effusion\n", encoding="utf-8")
    with pytest.raises(VocabError, match=r"x.txt:1: phrase before any section header"):
        read_vocab_file(f, ("mention",))
    f.write_text("[mention]\nok  # comment\n\n(bad\n", encoding="utf-8")
    with pytest.raises(VocabError, match=r"x.txt:4: unclosed"):
        read_vocab_file(f, ("mention",))


def test_unknown_vocabulary_file_is_an_error(tmp_path):
    import shutil

    from orapo.labeler.vocab import VOCAB_DIR

    copy = tmp_path / "vocab"
    shutil.copytree(VOCAB_DIR, copy)
    (copy / "observations" / "pleural_efusion.txt").write_text("[mention]\nx\n", encoding="utf-8")
    with pytest.raises(VocabError, match="pleural_efusion.txt: not an observation vocabulary"):
        RuleLabeler(copy)


def test_every_observation_but_no_finding_has_a_vocabulary():
    from orapo.labeler.rule import observation_slug
    from orapo.labeler.vocab import VOCAB_DIR

    stems = {p.stem for p in (VOCAB_DIR / "observations").glob("*.txt")}
    assert {observation_slug(n) for n in OBSERVATIONS} <= stems
