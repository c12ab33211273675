"""Evaluating a policy on manifest studies: generate (greedy), label, score, write.

:func:`evaluate_policy` is the reusable part (the trainer calls it for periodic validation);
:func:`write_evaluation` writes ``metrics.json``, ``report.md``, ``predictions.jsonl`` and
``examples.html`` for the ``orapo evaluate`` command.

Reference labels are the manifest's gold labels where a study has them, else the labeler's
labels of the reference report; generated reports are always labeled by the labeler. Each
study contributes its first image (the policy sees one image per report).
"""

from __future__ import annotations

import base64
import html
import io
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orapo.atomic import atomic_write_text
from orapo.images import NoImagesError, load_images
from orapo.manifest import Study
from orapo.observations import OBSERVATIONS, Label, LabelDict

if TYPE_CHECKING:
    from orapo.model.policy import Policy


def full_labels(labels: dict[str, Label]) -> LabelDict:
    """A label dict with all 14 observation names (missing names: None = not mentioned)."""
    return {name: labels.get(name) for name in OBSERVATIONS}


def evaluate_policy(
    policy: Policy,
    studies: Sequence[Study],
    root: str | Path,
    *,
    batch_size: int = 8,
    max_new_tokens: int = 256,
    labeler: str = "rule",
    skip_bad_images: bool = False,
    progress: Callable[[int], None] | None = None,
    split: str | None = None,
) -> dict[str, Any]:
    """Generate greedy reports for ``studies`` (images relative to ``root``) and score them.

    Returns a dict with:

    * ``metrics``: JSON-ready (what ``metrics.json`` holds): model, prompt version, split, n,
      skipped images, label sources, timing, ``clinical`` (every protocol's
      ``ClinicalResult.to_dict()``, keyed ``positive/all14`` ...), ``text`` (BLEU, ROUGE-L, CIDEr).
    * ``summary``: flat namespaced floats for loggers (``clinical/positive/all14/micro_f1``,
      ``text/bleu_4``, ``eval/seconds_per_report`` ...).
    * ``clinical``: the :class:`~orapo.metrics.ClinicalResult` objects.
    * ``predictions``: one record per scored study (id, image, reference, generated, labels).

    A missing or unreadable image raises :class:`~orapo.model.ImageLoadError` naming the file;
    with ``skip_bad_images`` the study is skipped and counted in ``metrics.skipped_images``.
    ``progress(n)`` is called after each batch with the number of studies it covered.
    """
    from orapo.labeler import get_labeler
    from orapo.metrics import clinical_report, text_metrics

    if not studies:
        raise ValueError("evaluate_policy needs at least one study")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    root = Path(root)
    kept: list[Study] = []
    generated: list[str] = []
    skipped: Counter = Counter()
    skipped_paths: list[str] = []
    started = time.perf_counter()
    for start in range(0, len(studies), batch_size):
        chunk = studies[start : start + batch_size]
        paths = [s.image_paths(root)[0] for s in chunk]
        loaded = load_images(paths, skip_bad=skip_bad_images)
        skipped.update(loaded.skipped)
        skipped_paths.extend(loaded.skipped_paths)
        if loaded.images:
            generated.extend(
                policy.generate_reports(
                    loaded.images, max_new_tokens=max_new_tokens, batch_size=batch_size
                )
            )
            kept.extend(chunk[i] for i in loaded.kept)
        if progress is not None:
            progress(len(chunk))
    seconds = time.perf_counter() - started
    if not kept:
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items()))
        raise NoImagesError(
            f"no study could be evaluated: all {len(studies)} images were skipped ({reasons}; "
            f"e.g. {skipped_paths[0]})"
        )

    lab = get_labeler(labeler)
    references = [s.report for s in kept]
    gen_labels = [full_labels(d) for d in lab.label_batch(generated)]
    need = [i for i, s in enumerate(kept) if s.labels is None]
    labeled = dict(zip(need, lab.label_batch([references[i] for i in need]), strict=True))
    ref_labels = [
        full_labels(s.labels if s.labels is not None else labeled[i]) for i, s in enumerate(kept)
    ]
    clinical = clinical_report(gen_labels, ref_labels)
    text = text_metrics(generated, references)

    metrics: dict[str, Any] = {
        "model": policy.source,
        "prompt_version": policy.prompt.version,
        "split": split,
        "n": len(kept),
        "skipped_images": {"total": sum(skipped.values()), **dict(skipped)},
        "skipped_image_paths": skipped_paths,
        "reference_labels": {"manifest": len(kept) - len(need), "labeler": len(need)},
        "labeler": labeler,
        "decoding": {"greedy": True, "max_new_tokens": max_new_tokens},
        "protocols": list(clinical),
        "clinical": {name: result.to_dict() for name, result in clinical.items()},
        "text": text,
        "timing": {"seconds": seconds, "seconds_per_report": seconds / len(kept)},
    }
    summary: dict[str, float] = {}
    for result in clinical.values():
        summary.update(result.flat("clinical"))
    summary.update({f"text/{k}": v for k, v in text.items()})
    summary["eval/n"] = float(len(kept))
    summary["eval/seconds_per_report"] = seconds / len(kept)
    predictions = [
        {
            "id": s.id,
            "image": s.images[0],
            "reference": ref,
            "generated": gen,
            "reference_labels": rl,
            "generated_labels": gl,
            "reference_labels_from": "manifest" if s.labels is not None else "labeler",
        }
        for s, ref, gen, rl, gl in zip(
            kept, references, generated, ref_labels, gen_labels, strict=True
        )
    ]
    return {
        "metrics": metrics,
        "summary": summary,
        "clinical": clinical,
        "predictions": predictions,
    }


# ----------------------------------------------------------------------------- writing
def _thumbnail_data_uri(path: Path, size: int = 256) -> str | None:
    from PIL import Image

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            img.thumbnail((size, size))
            buf = io.BytesIO()
            img.save(buf, format="PNG")
    except OSError:
        return None
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _labels_html(labels: LabelDict) -> str:
    names = {1: "positive", 0: "negative", -1: "uncertain"}
    items = [
        f'<span class="l{names[v]}">{html.escape(k)}: {names[v]}</span>'
        for k, v in labels.items()
        if v is not None
    ]
    return " ".join(items) or "<em>nothing mentioned</em>"


def examples_html(result: dict[str, Any], root: Path, n_examples: int = 12) -> str:
    """A self-contained page: for a few studies, the image, reference, generated, labels."""
    metrics = result["metrics"]
    rows = []
    for rec in result["predictions"][:n_examples]:
        image = Path(rec["image"])
        uri = _thumbnail_data_uri(image if image.is_absolute() else root / image)
        img = f'<img src="{uri}" alt="{html.escape(rec["id"])}">' if uri else "(image unreadable)"
        rows.append(
            "<tr>"
            f'<td>{img}<div class="id">{html.escape(rec["id"])}</div></td>'
            f"<td><pre>{html.escape(rec['reference'])}</pre>"
            f'<div class="labels">{_labels_html(rec["reference_labels"])}</div>'
            f'<div class="src">labels from {rec["reference_labels_from"]}</div></td>'
            f"<td><pre>{html.escape(rec['generated'])}</pre>"
            f'<div class="labels">{_labels_html(rec["generated_labels"])}</div></td>'
            "</tr>"
        )
    main = metrics["clinical"].get("positive/all14", {}).get("micro", {})
    headline = (
        f"positive/all14 micro P/R/F1 = {main.get('precision', float('nan')):.3f} / "
        f"{main.get('recall', float('nan')):.3f} / {main.get('f1', float('nan')):.3f}"
        if main
        else ""
    )
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td{border:1px solid #ccc;padding:.5em;vertical-align:top;max-width:40em}"
        "pre{white-space:pre-wrap;margin:0}.labels{margin-top:.5em;font-size:.85em}"
        ".labels span{display:inline-block;margin:.1em;padding:0 .3em;border-radius:3px}"
        ".lpositive{background:#fdd}.lnegative{background:#dfd}.luncertain{background:#ffd}"
        ".id,.src{font-size:.8em;color:#666}img{max-width:256px}"
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>orapo evaluation examples</title><style>{style}</style></head><body>"
        "<h1>Example studies</h1>"
        f"<p>Model <code>{html.escape(str(metrics['model']))}</code>, prompt "
        f"<code>{html.escape(metrics['prompt_version'])}</code>, split "
        f"<code>{html.escape(str(metrics['split']))}</code>, n = {metrics['n']}. {headline}</p>"
        "<table><tr><th>image</th><th>reference (labels)</th><th>generated (labels)</th></tr>"
        + "".join(rows)
        + "</table></body></html>\n"
    )


def report_markdown(result: dict[str, Any]) -> str:
    """The evaluation as markdown: setup, averages per protocol, per-observation tables, text."""
    from orapo.metrics import per_observation_markdown

    m = result["metrics"]
    lines = [
        "# Evaluation",
        "",
        f"- model: `{m['model']}`",
        f"- prompt: `{m['prompt_version']}`",
        f"- split: `{m['split']}`, reports scored: {m['n']}, "
        f"images skipped: {m['skipped_images']['total']}",
        f"- reference labels: {m['reference_labels']['manifest']} from the manifest, "
        f"{m['reference_labels']['labeler']} from the `{m['labeler']}` labeler; generated "
        f"reports labeled by the `{m['labeler']}` labeler",
        f"- decoding: greedy, at most {m['decoding']['max_new_tokens']} new tokens; "
        f"{m['timing']['seconds_per_report']:.3f} s/report",
        "",
        "## Clinical efficacy",
        "",
        "| protocol / observations | micro P / R / F1 | macro P / R / F1 | example P / R / F1 |",
        "|---|---|---|---|",
    ]
    for name, res in m["clinical"].items():
        cells = [
            " / ".join(f"{res[avg][k]:.3f}" for k in ("precision", "recall", "f1"))
            for avg in ("micro", "macro", "example")
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for name, res in result["clinical"].items():
        lines += ["", f"### {name}", "", per_observation_markdown(res).rstrip()]
    lines += ["", "## Text metrics", "", "| metric | value |", "|---|---:|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in m["text"].items()]
    return "\n".join(lines) + "\n"


def write_evaluation(
    result: dict[str, Any], out_dir: str | Path, root: str | Path, n_examples: int = 12
) -> dict[str, Path]:
    """Write metrics.json, report.md, predictions.jsonl, examples.html (each atomically)."""
    out_dir = Path(out_dir)
    paths = {
        "metrics": out_dir / "metrics.json",
        "report": out_dir / "report.md",
        "predictions": out_dir / "predictions.jsonl",
        "examples": out_dir / "examples.html",
    }
    atomic_write_text(paths["metrics"], json.dumps(result["metrics"], indent=2) + "\n")
    atomic_write_text(paths["report"], report_markdown(result))
    atomic_write_text(
        paths["predictions"],
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in result["predictions"]),
    )
    atomic_write_text(paths["examples"], examples_html(result, Path(root), n_examples))
    return paths
