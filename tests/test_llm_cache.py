"""The SQLite answer cache: persistence across processes, concurrent writer processes, damaged
entries and files. The model is the loopback fake server (orapo.llm.fake_server)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import pytest

from orapo.llm import AnswerCache, LLMLabeler
from orapo.llm.fake_server import FakeChatServer

FAST = dict(backoff=0.01, backoff_max=0.05, timeout=5.0, deadline=20.0, trust_env=False)

# Label texts in a separate process and print what happened as JSON.
CHILD = """
import json, sys
from orapo.llm import LLMLabeler
base_url, cache, texts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
with LLMLabeler("fake-facts", base_url, cache_path=cache, concurrency=4, trust_env=False,
                backoff=0.01, deadline=20.0) as labeler:
    labels = labeler.label_batch(texts)
    s = labeler.summary()
print(json.dumps({"labels": labels, "hits": s.cache_hits, "misses": s.cache_misses,
                  "errors": s.cache_errors, "fallbacks": sum(s.fallbacks.values()),
                  "tokens": s.prompt_tokens + s.completion_tokens}))
"""


def child(base_url: str, cache, texts: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, base_url, str(cache), json.dumps(texts)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def result(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return json.loads(out)


def texts(start: int, stop: int) -> list[str]:
    return [f"Study {i}: small left pleural effusion. No pneumothorax." for i in range(start, stop)]


def test_answers_persist_across_processes(tmp_path):
    cache = tmp_path / "runs" / "llm-cache.sqlite"
    with FakeChatServer() as server:
        first = result(child(server.base_url, cache, texts(0, 5)))
        assert (first["hits"], first["misses"], first["fallbacks"]) == (0, 5, 0)
        assert len(server.chat_requests()) == 5
        with LLMLabeler("fake-facts", server.base_url, cache_path=cache, **FAST) as labeler:
            again = labeler.extract_batch(texts(0, 5))
            s = labeler.summary()
        assert len(server.chat_requests()) == 5  # nothing asked twice
        assert [e.source for e in again] == ["cache"] * 5
        assert [e.labels for e in again] == first["labels"]
        assert s.cache_hits == 5 and s.saved_tokens == first["tokens"]
    with sqlite3.connect(cache) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_concurrent_writer_processes(tmp_path):
    cache = tmp_path / "shared.sqlite"
    with FakeChatServer(latency=0.02) as server:
        procs = [
            child(server.base_url, cache, texts(0, 20)),
            child(server.base_url, cache, texts(10, 30)),
        ]
        outs = [result(p) for p in procs]
        assert all(o["errors"] == 0 and o["fallbacks"] == 0 for o in outs)
        assert sum(o["hits"] + o["misses"] for o in outs) == 40
        with LLMLabeler("fake-facts", server.base_url, cache_path=cache, **FAST) as labeler:
            assert len(labeler.cache) == 30
            n = len(server.chat_requests())
            labeler.label_batch(texts(0, 30))
            assert len(server.chat_requests()) == n and labeler.summary().cache_hits == 30
            assert labeler.cache.counts() == [("fake-facts", labeler.prompt.id, 30)]


def test_key_separates_models_and_prompts(tmp_path):
    cache = tmp_path / "c.sqlite"
    with FakeChatServer() as server:
        for model in ("model-a", "model-b", "model-a"):
            with LLMLabeler(
                model, server.base_url, cache_path=cache, check_model=False, **FAST
            ) as labeler:
                labeler.label("No effusion.")
        assert [r.body["model"] for r in server.chat_requests()] == ["model-a", "model-b"]


def test_damaged_entry_is_asked_again_and_counted(tmp_path):
    cache = tmp_path / "c.sqlite"
    with FakeChatServer() as server:
        with LLMLabeler("fake-facts", server.base_url, cache_path=cache, **FAST) as labeler:
            good = labeler.label("No effusion.")
        with sqlite3.connect(cache) as conn:
            conn.execute("UPDATE answers SET answer = '{\"findings\": 1}'")
        with LLMLabeler("fake-facts", server.base_url, cache_path=cache, **FAST) as labeler:
            assert labeler.label("No effusion.") == good
            s = labeler.summary()
            assert (s.cache_hits, s.cache_misses, s.cache_errors) == (0, 1, 1)
        assert len(server.chat_requests()) == 2
        with LLMLabeler("fake-facts", server.base_url, cache_path=cache, **FAST) as labeler:
            labeler.label("No effusion.")  # the entry was rewritten
            assert labeler.summary().cache_hits == 1


def test_not_a_cache_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "notes.sqlite"
    bad.write_text("these are my notes, not a database\n" * 100)
    with pytest.raises(ValueError, match="notes.sqlite: not an orapo LLM answer cache"):
        AnswerCache(bad)
    other = tmp_path / "v9.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("PRAGMA user_version = 9")
    with pytest.raises(ValueError, match="cache schema version 9"):
        AnswerCache(other)


def test_cache_round_trip_and_chunked_lookup(tmp_path):
    cache = AnswerCache(tmp_path / "c.sqlite")
    try:
        for i in range(1200):  # more keys than one SELECT takes
            cache.put(f"k{i}", "m", "p", {"facts": [i]}, 3, 4)
        found, bad = cache.get_many([f"k{i}" for i in range(1300)])
        assert len(found) == 1200 and bad == []
        assert found["k7"].answer == {"facts": [7]} and found["k7"].prompt_tokens == 3
        assert len(cache) == 1200
    finally:
        cache.close()


WRITER = """
import sys, threading
from orapo.llm import AnswerCache
cache = AnswerCache(sys.argv[1], busy_timeout=30.0)
tag = sys.argv[2]
def write(t):
    for i in range(150):
        cache.put(f"{tag}-{t}-{i}", "m", "p", {"facts": [], "i": i}, 1, 1)
threads = [threading.Thread(target=write, args=(t,)) for t in range(4)]
for th in threads: th.start()
for th in threads: th.join()
cache.close()
"""


def test_many_writers_in_threads_and_processes(tmp_path):
    path = tmp_path / "stress.sqlite"
    AnswerCache(path).close()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), tag], stderr=subprocess.PIPE, text=True
        )
        for tag in ("a", "b", "c")
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    cache = AnswerCache(path)
    try:
        assert len(cache) == 3 * 4 * 150
    finally:
        cache.close()


def test_cache_failures_are_counted_and_labelling_goes_on(tmp_path, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise sqlite3.OperationalError("disk I/O error")

    with (
        FakeChatServer() as server,
        LLMLabeler(
            "fake-facts", server.base_url, cache_path=tmp_path / "c.sqlite", **FAST
        ) as labeler,
    ):
        monkeypatch.setattr(labeler.cache, "put", broken)
        monkeypatch.setattr(labeler.cache, "get_many", broken)
        labels = labeler.label("Small pneumothorax.")
        s = labeler.summary()
    assert labels["Pneumothorax"] == 1 and s.llm_ok == 1
    assert s.cache_errors == 2  # one failed read, one failed write
    assert "read failed" in caplog.text and "write failed" in caplog.text
