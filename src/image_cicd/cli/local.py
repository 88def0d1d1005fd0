"""`image-cicd local ...`: start, stop and check the embedded stack."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import click

from image_cicd.cli.common import Context, console, friendly_errors, pass_context


@click.group()
def local() -> None:
    """The embedded stack: the whole workflow on this machine (no AWS, no Docker)."""


@local.command("up")
@click.option(
    "--repositories",
    default="repo-1,repo-2",
    show_default=True,
    help="The Repositories parameter of the template.",
)
@click.option(
    "--parameter",
    "-p",
    "parameters",
    multiple=True,
    metavar="KEY=VALUE",
    help="Another template parameter (repeatable), e.g. -p ApprovalTimeoutSeconds=600.",
)
@click.option("--port", default=0, type=int, help="Port of the console and approval pages.")
@click.option("--registry-port", default=0, type=int, help="Port of the registry.")
@click.option("--aws-port", default=0, type=int, help="Port of the AWS endpoint (moto).")
@click.option("--detach", is_flag=True, help="Start in the background and return.")
@pass_context
@friendly_errors
def local_up(
    ctx: Context,
    repositories: str,
    parameters: tuple[str, ...],
    port: int,
    registry_port: int,
    aws_port: int,
    detach: bool,
) -> None:
    """Start the stack: registry, Step Functions, Lambda, DynamoDB, SNS, pipelines.

    Runs until Ctrl-C (or `image-cicd local down`); prints every pipeline run and
    approval request as it happens.
    """
    from image_cicd.local.stack import LocalStack, default_state_dir, running_stack

    params = {"Repositories": repositories}
    for item in parameters:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--parameter")
        params[key] = value
    state_dir = ctx.state_dir or default_state_dir()
    running = running_stack(state_dir)
    if running is not None:
        raise click.ClickException(
            f"a local stack is already running (pid {running.pid}); console {running.console_url}"
        )
    if detach:
        _detach(state_dir, repositories, parameters, port, registry_port, aws_port)
        return
    out = console()
    stack = LocalStack(
        state_dir,
        parameters=params,
        http_port=port,
        registry_port=registry_port,
        aws_port=aws_port,
        on_run=lambda run: out.print(
            f"[dim]pipeline[/] {run.pipeline}: {run.status} [dim]{run.execution_name}[/]"
        ),
        on_message=lambda m: out.print(f"{m['subject']}\n{m['message']}", markup=False),
    )
    with _signals_stop():
        try:
            stack.start()
            _print_endpoints(stack.info)
            out.print("[dim]Ctrl-C stops the stack.[/]")
            while True:
                signal_pause()
        except KeyboardInterrupt:
            out.print("stopping...")
        finally:
            stack.stop()


def signal_pause() -> None:
    import signal

    signal.pause()


class _signals_stop:
    """SIGTERM (from `local down`) stops the stack like Ctrl-C does."""

    def __enter__(self) -> None:
        import signal

        def stop(_signum: int, _frame: Any) -> None:
            raise KeyboardInterrupt

        self._old = signal.signal(signal.SIGTERM, stop)

    def __exit__(self, *exc: object) -> None:
        import signal

        signal.signal(signal.SIGTERM, self._old)


def _detach(
    state_dir: Path,
    repositories: str,
    parameters: tuple[str, ...],
    port: int,
    registry_port: int,
    aws_port: int,
) -> None:
    import subprocess
    import time

    from image_cicd.local.stack import running_stack

    state_dir.mkdir(parents=True, exist_ok=True)
    args = [
        sys.executable,
        "-m",
        "image_cicd.cli.main",
        "--state-dir",
        str(state_dir),
        "local",
        "up",
        "--repositories",
        repositories,
        "--port",
        str(port),
        "--registry-port",
        str(registry_port),
        "--aws-port",
        str(aws_port),
    ]
    for item in parameters:
        args += ["--parameter", item]
    log = (state_dir / "stack.log").open("ab")
    proc = subprocess.Popen(
        args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        info = running_stack(state_dir)
        if info is not None and info.pid == proc.pid:
            _print_endpoints(info)
            return
        if proc.poll() is not None:
            tail = (state_dir / "stack.log").read_text(errors="replace")[-2000:]
            raise click.ClickException(f"the stack did not start:\n{tail}")
        time.sleep(0.2)
    proc.terminate()
    raise click.ClickException("the stack did not start within 120 s")


def _print_endpoints(info: Any) -> None:
    out = console()
    out.print(f"[bold green]image-cicd local stack is up[/] (pid {info.pid})")
    out.print(f"  console      {info.console_url}")
    out.print(f"  approvals    {info.outputs.get('ApprovalBaseUrl', '')}approvals/<id>")
    out.print(f"  registry     {info.registry_url}   (push to {info.registry_host}/ecr-dev/<repo>)")
    out.print(f"  AWS endpoint {info.aws_endpoint}")
    out.print(f"  state        {info.state_dir}")
    out.print("For the aws CLI and boto3 in a shell:")
    for name, value in info.environment.items():
        click.echo(f"export {name}={shlex.quote(value)}")


@local.command("down")
@pass_context
def local_down(ctx: Context) -> None:
    """Stop the running local stack and everything it started."""
    from image_cicd.local.stack import stop_running

    info = stop_running(ctx.state_dir)
    click.echo("stopped" if info else "no local stack is running")


@local.command("status")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def local_status(ctx: Context, as_json: bool) -> None:
    """Exit 0 and show the endpoints while every part of the local stack answers (its
    registry, the AWS endpoint, its server); exit 1 and say which is down otherwise."""
    from image_cicd.local.stack import down_parts, running_stack

    info = running_stack(ctx.state_dir)
    down = down_parts(info) if info else {}
    if as_json:
        fields = {**info.__dict__, "environment": info.environment} if info else {}
        click.echo(json.dumps({"running": info is not None, "down": down, **fields}))
    elif info is None:
        click.echo("no local stack is running")
    elif down:
        click.echo(f"the local stack (pid {info.pid}) is not working:", err=True)
        for part, why in down.items():
            click.echo(f"  {part} is down: {why}", err=True)
        click.echo("stop it with `image-cicd local down` and start it again", err=True)
    else:
        _print_endpoints(info)
    sys.exit(0 if info and not down else 1)
