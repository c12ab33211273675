"""`orapo llm check`, `orapo llm cache-info` and `orapo llm fake-server`."""

from __future__ import annotations

from pathlib import Path

import typer

from orapo.errors import fail as _fail
from orapo.llm.labeler import default_option

SAMPLE = (
    "Heart size is mildly enlarged. Small left pleural effusion. No pneumothorax. "
    "Possible right lower lobe consolidation. Right IJ catheter tip in the SVC."
)


def register(app: typer.Typer) -> None:
    """Add the `llm` command group to ``app`` (the root `orapo` app)."""
    llm_app = typer.Typer(
        help="The LLM fact extractor: check a server, inspect the answer cache, serve a fake "
        "model.",
        no_args_is_help=True,
    )
    app.add_typer(llm_app, name="llm")

    @llm_app.command("check")
    def check_cmd(
        model: str = typer.Option(..., "--model", help="Model name the server serves."),
        base_url: str = typer.Option(
            default_option("base_url"),
            "--base-url",
            help="API root of the OpenAI-compatible server (ends in /v1).",
        ),
        api_key_env: str = typer.Option(
            default_option("api_key_env"),
            "--api-key-env",
            help="Environment variable holding the API key (unset: no auth header).",
        ),
        auth_header: str = typer.Option(
            default_option("auth_header"),
            "--auth-header",
            help="'authorization' (Bearer; OpenAI, vLLM, Ollama) or 'api-key' (Azure).",
        ),
        response_format: str = typer.Option(
            default_option("response_format"),
            "--response-format",
            help="auto, json_schema, json_object_schema, guided_json, json_object or none "
            "(auto steps down when the server refuses one).",
        ),
        report: str = typer.Option(SAMPLE, "--report", help="Report text to label."),
        timeout: float = typer.Option(
            default_option("timeout"), "--timeout", help="Seconds per request."
        ),
        deadline: float = typer.Option(
            default_option("deadline"), "--deadline", help="Seconds for the report."
        ),
    ) -> None:
        """Label one report with the model (no fallback) and show facts, labels and usage."""
        from rich.console import Console
        from rich.table import Table

        from orapo.llm import LLMError, LLMLabeler
        from orapo.observations import format_labels

        try:
            labeler = LLMLabeler(
                model,
                base_url,
                api_key_env=api_key_env,
                auth_header=auth_header,
                response_format=response_format,
                timeout=timeout,
                deadline=deadline,
                fallback=False,
                concurrency=1,
            )
        except (LLMError, ValueError) as error:
            _fail(str(error))
        with labeler:
            try:
                result = labeler.extract_batch([report])[0]
            except LLMError as error:
                _fail(f"{error} [{error.reason}]")
            stats = labeler.summary()
            console = Console()
            table = Table("fact", "observation", "state", title=f"{model} at {base_url}")
            for fact in result.facts:
                data = fact.to_json()
                table.add_row(data["fact"], data["observation"], data["state"])
            console.print(table)
            console.print(f"labels: {format_labels(result.labels)}", highlight=False)
            console.print(
                f"prompt {labeler.prompt.id}; response_format {labeler.format_in_use}; "
                f"JSON repairs: {', '.join(result.repairs) or 'none'}; requests "
                f"{stats.requests}; tokens {stats.prompt_tokens} in, "
                f"{stats.completion_tokens} out; {stats.request_seconds:.2f} s",
                highlight=False,
            )

    @llm_app.command("cache-info")
    def cache_info_cmd(
        path: Path = typer.Argument(..., help="The SQLite answer cache (cache_path)."),
    ) -> None:
        """Entries of an answer cache, per model and prompt version."""
        from orapo.llm import AnswerCache

        if not path.is_file():
            _fail(f"{path}: no such cache file")
        try:
            cache = AnswerCache(path)
        except ValueError as error:
            _fail(str(error))
        try:
            rows = cache.counts()
        finally:
            cache.close()
        size = path.stat().st_size
        typer.echo(f"{path}: {sum(n for _, _, n in rows)} answers, {size / 1e6:.1f} MB")
        for model, prompt, n in rows:
            typer.echo(f"  {n:>8}  {model}  {prompt}")

    @llm_app.command("fake-server")
    def fake_server_cmd(
        port: int = typer.Option(8000, "--port", help="Port on 127.0.0.1 (0: any free port)."),
        latency: float = typer.Option(0.0, "--latency", help="Seconds each request waits."),
        model: str = typer.Option("fake-facts", "--model", help="Model name it reports."),
        llama_cpp: bool = typer.Option(
            False,
            "--llama-cpp",
            help="Answer as llama-cpp-python's server does: one request at a time, "
            "json_schema refused with a 500, json_object with a schema honoured.",
        ),
    ) -> None:
        """Serve the rule-based fake model on 127.0.0.1 (for demos and CI; not a labeler)."""
        import threading

        from orapo.llm.fake_server import FakeChatServer

        server = FakeChatServer(
            latency=latency, model=model, port=port, llama_cpp=llama_cpp
        ).start()
        typer.echo(f"serving the fake model {model!r} on {server.base_url} (Ctrl-C stops)")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
