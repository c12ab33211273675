"""`orapo llm ...` commands through typer's CliRunner (and one real process for the server)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from typer.testing import CliRunner

from helpers import cli_app
from orapo.llm import LLMLabeler
from orapo.llm.cli import register
from orapo.llm.fake_server import FakeChatServer

runner = CliRunner()


def app():
    return cli_app(register)


def test_check_shows_facts_labels_and_usage(tmp_path):
    with FakeChatServer() as server:
        result = runner.invoke(
            app(),
            [
                "llm",
                "check",
                "--model",
                "fake-facts",
                "--base-url",
                server.base_url,
                "--report",
                "Mild edema. No effusion.",
            ],
        )
        assert result.exit_code == 0, result.output
        assert "Edema+, Pleural Effusion-" in result.output
        assert "response_format json_schema" in result.output and "requests 1" in result.output
        server.push_faults("404")
        failed = runner.invoke(
            app(), ["llm", "check", "--model", "fake-facts", "--base-url", server.base_url]
        )
        assert failed.exit_code == 1 and "HTTP 404" in failed.output
        unknown = runner.invoke(
            app(), ["llm", "check", "--model", "nope", "--base-url", server.base_url]
        )
        assert unknown.exit_code == 1 and "'nope' is not served" in unknown.output


def test_cache_info(tmp_path):
    cache = tmp_path / "c.sqlite"
    with (
        FakeChatServer() as server,
        LLMLabeler("fake-facts", server.base_url, cache_path=cache, trust_env=False) as labeler,
    ):
        labeler.label_batch(["No effusion.", "Mild edema."])
        prompt_id = labeler.prompt.id
    result = runner.invoke(app(), ["llm", "cache-info", str(cache)])
    assert result.exit_code == 0, result.output
    assert "2 answers" in result.output and f"fake-facts  {prompt_id}" in result.output
    missing = runner.invoke(app(), ["llm", "cache-info", str(tmp_path / "none.sqlite")])
    assert missing.exit_code == 1 and "no such cache file" in missing.output


SERVE = """
import typer
from orapo.llm.cli import register
root = typer.Typer()
@root.callback()
def _root():
    pass
register(root)
root(["llm", "fake-server", "--port", "0", "--latency", "0.01"])
"""


def test_fake_server_command_serves_until_interrupted():
    proc = subprocess.Popen(
        [sys.executable, "-u", "-c", SERVE],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        line = proc.stdout.readline()
        assert "serving the fake model 'fake-facts' on http://127.0.0.1:" in line, (
            line + proc.stderr.read() if proc.poll() is not None else line
        )
        base_url = line.split(" on ")[1].split()[0]
        with LLMLabeler("fake-facts", base_url, trust_env=False) as labeler:
            assert labeler.label("Small pneumothorax.")["Pneumothorax"] == 1
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    assert proc.returncode in (0, 1, -signal.SIGINT)
