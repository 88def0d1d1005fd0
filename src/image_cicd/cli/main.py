"""The `image-cicd` command. Heavy modules are imported inside commands, so that
the command starts fast."""

from __future__ import annotations

import functools
import json
import math
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from image_cicd.stages import STAGES

if TYPE_CHECKING:
    from image_cicd.aws.stack import DeployedStack

F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(func: F) -> F:
    """Known failures end with one clear line and exit status 1, not a traceback.

    The error classes are imported only when something failed: importing them up
    front would load boto3 into every command.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            if isinstance(exc, click.ClickException) or not _known_error(exc):
                raise
            raise click.ClickException(str(exc) or type(exc).__name__) from exc

    return wrapper  # type: ignore[return-value]


def _known_error(exc: Exception) -> bool:
    # An AWS endpoint or registry that cannot be reached (moto has died, no network),
    # or an AWS error answer: the message says which endpoint and what it answered.
    from botocore.exceptions import BotoCoreError, ClientError
    from requests.exceptions import ConnectionError as HttpConnectionError

    from image_cicd.aws.operations import OperatorError
    from image_cicd.aws.stack import StackError
    from image_cicd.ledger.store import LedgerError
    from image_cicd.local.aws import LocalAwsError
    from image_cicd.local.deployer import DeployError
    from image_cicd.local.registry import RegistryError as RegistryStartError
    from image_cicd.local.stack import StackRunning
    from image_cicd.promotion.errors import USER_ERRORS

    local = (DeployError, LocalAwsError, RegistryStartError, StackRunning)
    unreachable = (BotoCoreError, ClientError, HttpConnectionError)
    known = (*USER_ERRORS, LedgerError, OperatorError, StackError, *local, *unreachable)
    return isinstance(exc, known)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="image-cicd")
@click.option(
    "--stack",
    "stack_name",
    envvar="IMAGE_CICD_STACK",
    metavar="NAME",
    help="A stack deployed on AWS (outputs from CloudFormation). Default: the local stack.",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="IMAGE_CICD_STATE_DIR",
    help="Where the local stack keeps its state (default: .image-cicd in the project).",
)
@click.pass_context
def main(ctx: click.Context, stack_name: str | None, state_dir: Path | None) -> None:
    """Promote container images DEV -> TEST -> PROD by digest, with approvals and rollback.

    Commands work on the local stack (`image-cicd local up`) or, with --stack, on a
    deployment on AWS.
    """
    ctx.obj = Context(stack_name, state_dir)


class Context:
    """Finds the stack the commands work on, once per command."""

    def __init__(self, stack_name: str | None, state_dir: Path | None) -> None:
        self.stack_name = stack_name
        self.state_dir = state_dir
        self._target: DeployedStack | None = None

    @property
    def target(self) -> DeployedStack:
        if self._target is None:
            if self.stack_name:
                from image_cicd.aws.stack import from_cloudformation

                self._target = from_cloudformation(self.stack_name)
            else:
                from image_cicd.aws.stack import StackError
                from image_cicd.local.stack import deployed_stack, running_stack

                info = running_stack(self.state_dir)
                if info is None:
                    raise StackError(
                        "no local stack is running: start one with `image-cicd local up`, "
                        "or name a stack on AWS with --stack NAME"
                    )
                self._target = deployed_stack(info)
        return self._target


pass_context = click.make_pass_decorator(Context)


@main.command()
@click.argument("src")
@click.argument("dst")
@click.option("--insecure", is_flag=True, help="Plain HTTP to both registries (local ones).")
@click.option("--no-mount", is_flag=True, help="Stream every blob; never ask for a mount.")
@click.option("--workers", default=4, show_default=True, type=click.IntRange(1, 64))
@click.option("--src-creds", metavar="USER:PASS", help="Credentials for the source registry.")
@click.option("--dst-creds", metavar="USER:PASS", help="Credentials for the destination.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@friendly_errors
def copy(
    src: str,
    dst: str,
    insecure: bool,
    no_mount: bool,
    workers: int,
    src_creds: str | None,
    dst_creds: str | None,
    as_json: bool,
) -> None:
    """Copy an image byte-exact: SRC and DST are host[:port]/repository[:tag|@digest].

    Without a tag or digest in DST, it gets SRC's tag (none when SRC is a digest).
    """
    from image_cicd.registry.connect import client_for
    from image_cicd.registry.copy import copy_image, read_image
    from image_cicd.registry.reference import parse_reference

    source, target = parse_reference(src), parse_reference(dst)
    if target.digest and source.digest and target.digest != source.digest:
        raise click.BadParameter("DST names another digest than SRC", param_hint="DST")
    src_client = client_for(
        source.host, insecure=insecure, credentials=src_creds, pool_size=workers * 2
    )
    dst_client = (
        src_client
        if target.host == source.host and dst_creds == src_creds
        else client_for(
            target.host, insecure=insecure, credentials=dst_creds, pool_size=workers * 2
        )
    )
    import time

    started = time.perf_counter()
    before = src_client.requests_made + (
        dst_client.requests_made if dst_client is not src_client else 0
    )
    image = read_image(src_client, source.repository, source.reference)
    if target.digest and target.digest != image.root.digest:
        raise click.ClickException(f"{src} is {image.root.digest}, not {target.digest}")
    tag = target.tag or (None if source.digest else source.tag)
    with _progress(image.size, enabled=not as_json) as advance:
        result = copy_image(
            src_client,
            source.repository,
            image.root.digest,
            dst_client,
            target.repository,
            tags=[tag] if tag else [],
            mount=not no_mount,
            workers=workers,
            progress=advance,
            image=image,
        )
    # Count the manifest reads above too: the whole copy, not counting start-up.
    result.seconds = round(time.perf_counter() - started, 4)
    result.requests = (
        src_client.requests_made
        + (dst_client.requests_made if dst_client is not src_client else 0)
        - before
    )
    if as_json:
        click.echo(json.dumps(result.as_dict()))
        return
    click.echo(
        f"{result.destination}  {result.media_type.rsplit('/', 1)[-1]}"
        + (f"  [{', '.join(result.platforms)}]" if result.platforms else "")
    )
    click.echo(
        f"blobs: {result.blobs_mounted} mounted, {result.blobs_copied} copied, "
        f"{result.blobs_present} already there; {_size(result.bytes_moved)} moved of "
        f"{_size(result.image_bytes)}; {result.requests} requests; {result.seconds:.2f} s"
    )
    if result.mounts_refused:  # Amazon ECR without BLOB_MOUNTING: the reason says how
        click.echo(f"{result.mounts_refused} mounts refused: {result.mount_refused_reason}")


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


class _progress:
    """A rich progress bar over bytes, fed by the copy engine's progress callback."""

    def __init__(self, total: int, *, enabled: bool) -> None:
        self.total, self.enabled = total, enabled and sys.stderr.isatty()
        self.bar: Any = None

    def __enter__(self) -> Callable[[str, int], None]:
        if not self.enabled:
            return lambda _kind, _n: None
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TransferSpeedColumn,
        )

        self.bar = Progress(
            TextColumn("copying"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            transient=True,
        )
        self.bar.start()
        task = self.bar.add_task("copy", total=self.total)

        def advance(kind: str, n: int) -> None:
            # Streamed bytes advance as they move; mounted/present blobs at once.
            if kind in ("bytes", "present", "mounted"):
                self.bar.advance(task, n)

        return advance

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False)


def _short(digest: str | None) -> str:
    return digest[7:19] if digest else "-"


# -- local stack -----------------------------------------------------------------------


@main.group()
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
    out = _console()
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
    out = _console()
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


# -- images ---------------------------------------------------------------------------


# Amazon ECR's quota for one layer (52,000 MiB); other registries take less, none more.
MAX_LAYER_BYTES = 52_000 * 2**20


def _parse_size(text: str) -> int:
    units = {
        "": 1,
        "B": 1,
        "KB": 10**3,
        "MB": 10**6,
        "GB": 10**9,
        "KIB": 2**10,
        "MIB": 2**20,
        "GIB": 2**30,
    }
    number = text.strip().upper().rstrip()
    digits = number.rstrip("KMGIB")
    unit = number[len(digits) :]
    try:
        value = float(digits) * units[unit]
    except (ValueError, KeyError):
        value = math.nan
    if not math.isfinite(value):
        raise click.BadParameter(f"{text!r}: use a size like 200MB, 64KiB or 1000")
    if value < 1:
        raise click.BadParameter(f"{text!r}: a layer needs at least one byte")
    return int(value)


@main.command()
@click.argument("repository")
@click.option("--layers", default=3, show_default=True, type=click.IntRange(1, 100))
@click.option(
    "--size",
    default="30MB",
    show_default=True,
    help="Total size of the layers (per platform), e.g. 200MB.",
)
@click.option(
    "--platforms",
    default="linux/amd64",
    show_default=True,
    help="Comma list; more than one makes a multi-platform index.",
)
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="Image label.")
@click.option("--user", default="1000:1000", show_default=True, help="The image's user.")
@click.option(
    "--oci-layout",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Push this OCI image layout directory instead of a synthetic image.",
)
@click.option(
    "--registry",
    "registry_host",
    metavar="HOST[:PORT]",
    help="Another registry than the stack's (then REPOSITORY is pushed there).",
)
@click.option("--insecure", is_flag=True, help="Plain HTTP to --registry.")
@click.option("--json", "as_json", is_flag=True)
@pass_context
@friendly_errors
def push(
    ctx: Context,
    repository: str,
    layers: int,
    size: str,
    platforms: str,
    labels: tuple[str, ...],
    user: str,
    oci_layout: Path | None,
    registry_host: str | None,
    insecure: bool,
    as_json: bool,
) -> None:
    """Push an image to REPOSITORY[:TAG] (default tag: latest).

    A push of the trigger tag to a DEV repository starts its pipeline.
    """
    from image_cicd.registry.reference import check_repository, check_tag
    from image_cicd.registry.synthetic import build_image, oci_layout_image, push_image

    name, _, tag = repository.partition(":")
    check_repository(name)
    tag = check_tag(tag or "latest")
    if registry_host:
        from image_cicd.registry.connect import client_for

        client = client_for(registry_host, insecure=insecure)
    else:
        client = ctx.target.registry
    if oci_layout:
        image = oci_layout_image(oci_layout)
    else:
        total = _parse_size(size)
        if total // layers > MAX_LAYER_BYTES:
            raise click.BadParameter(
                f"{size!r} in {layers} layer(s) makes layers of {_size(total // layers)}; "
                f"no registry takes a layer over {_size(MAX_LAYER_BYTES)} (Amazon ECR's limit)",
                param_hint="--size",
            )
        wanted = [p.strip() for p in platforms.split(",") if p.strip()]
        if not wanted:
            raise click.BadParameter("name at least one platform", param_hint="--platforms")
        label_map = dict(item.partition("=")[::2] for item in labels)
        image = build_image(
            layer_sizes=[total // layers] * layers,
            platforms=wanted,
            labels=label_map,
            user=user,
        )
    with _progress(image.size, enabled=not as_json) as advance:
        digest = push_image(client, name, image, tags=[tag], progress=lambda n: advance("bytes", n))
    if as_json:
        click.echo(
            json.dumps(
                {
                    "repository": name,
                    "tag": tag,
                    "digest": digest,
                    "size": image.size,
                    "registry": client.host,
                }
            )
        )
    else:
        click.echo(f"pushed {client.host}/{name}:{tag}  {digest}  ({_size(image.size)})")


# -- executions -----------------------------------------------------------------------


def _executions(target: DeployedStack, limit: int = 50) -> list[dict[str, Any]]:
    sfn = target.client("stepfunctions")
    found = []
    for kind, arn in (("promotion", target.promotion_arn), ("rollback", target.rollback_arn)):
        for ex in sfn.list_executions(stateMachineArn=arn, maxResults=limit)["executions"]:
            found.append({**ex, "kind": kind})
    return sorted(found, key=lambda e: e["startDate"], reverse=True)[:limit]


@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@pass_context
@friendly_errors
def executions(ctx: Context, as_json: bool, limit: int) -> None:
    """Executions of the promotion and rollback state machines, newest first."""
    rows = _executions(ctx.target, limit)
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "name": r["name"],
                        "kind": r["kind"],
                        "status": r["status"],
                        "started": r["startDate"].isoformat(),
                        "stopped": r["stopDate"].isoformat() if r.get("stopDate") else None,
                    }
                    for r in rows
                ]
            )
        )
        return
    from rich.table import Table
    from rich.text import Text

    table = Table("execution", "kind", "status", "started", "seconds")
    for r in rows:
        seconds = (r["stopDate"] - r["startDate"]).total_seconds() if r.get("stopDate") else None
        table.add_row(
            Text(r["name"]),
            r["kind"],
            _status_style(r["status"]),
            r["startDate"].strftime("%Y-%m-%d %H:%M:%S"),
            f"{seconds:.1f}" if seconds is not None else "",
        )
    _console().print(table)


def _status_style(status: str) -> str:
    colour = {
        "SUCCEEDED": "green",
        "FAILED": "red",
        "RUNNING": "yellow",
        "succeeded": "green",
        "failed": "red",
        "caught": "magenta",
        "running": "yellow",
        "waiting": "cyan",
    }
    from rich.markup import escape

    return f"[{colour.get(status, 'dim')}]{escape(status)}[/]"


@main.command()
@click.argument("execution")
@click.option("--json", "as_json", is_flag=True)
@pass_context
@friendly_errors
def show(ctx: Context, execution: str, as_json: bool) -> None:
    """The states of EXECUTION in order, with status, and approval links while waiting."""
    from image_cicd.approvals.decisions import approval_link
    from image_cicd.aws.operations import execution_arn, pending_approval
    from image_cicd.console.history import view
    from image_cicd.promotion.errors import cause_text

    target = ctx.target
    ex = view(target.client("stepfunctions"), execution_arn(target, execution))
    approval = pending_approval(target, ex.name) if ex.waiting else None
    link = (
        approval_link(target.output("ApprovalBaseUrl"), approval.approval_id) if approval else None
    )
    if as_json:
        click.echo(
            json.dumps(
                {
                    "name": ex.name,
                    "status": ex.status,
                    "error": ex.error,
                    "cause": ex.cause,
                    "path": ex.path,
                    "approval_link": link,
                    "states": [
                        {"name": s.name, "status": s.status, "error": s.error, "seconds": s.seconds}
                        for s in ex.states.values()
                    ],
                }
            )
        )
        return
    from rich.markup import escape  # names, errors and causes come from outside: plain text

    out = _console()
    out.print(
        f"[bold]{escape(ex.name)}[/]  {_status_style(ex.status)}"
        + (f"  {escape(ex.error)}: {escape(cause_text(ex.cause))}" if ex.error else "")
    )
    for name in dict.fromkeys(ex.path):
        state = ex.states[name]
        timing = f"{state.seconds:.1f}s" if state.seconds is not None else ""
        note = f"  {escape(state.error)}" if state.error else ""
        out.print(f"  {_status_style(state.status):<28} {escape(name)}  [dim]{timing}[/]{note}")
    if link:
        out.print(f"\nwaiting for {approval.stage} approval: {link}", markup=False)  # type: ignore[union-attr]


@main.command()
@click.argument("execution")
@click.option(
    "--svg",
    "svg_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the graph as an SVG file instead of printing it.",
)
@pass_context
@friendly_errors
def graph(ctx: Context, execution: str, svg_file: Path | None) -> None:
    """The state machine graph of EXECUTION with each state's status: the main path
    down the left, each branch indented under the state it leaves, the loop marked."""
    import json as _json

    from image_cicd.aws.operations import execution_arn
    from image_cicd.console.graph import GraphvizMissing, render_svg, render_text
    from image_cicd.console.history import view

    target = ctx.target
    sfn = target.client("stepfunctions")
    arn = execution_arn(target, execution)
    machine = sfn.describe_execution(executionArn=arn)["stateMachineArn"]
    definition = _json.loads(sfn.describe_state_machine(stateMachineArn=machine)["definition"])
    ex = view(sfn, arn, definition)
    if svg_file:
        try:
            svg = render_svg(definition, ex.states, ex.path, title=ex.name)
        except GraphvizMissing as exc:
            raise click.ClickException(str(exc)) from exc
        svg_file.write_text(svg)
        click.echo(f"wrote {svg_file}")
    else:
        click.echo(f"{ex.name}  {ex.status}")
        click.echo(render_text(definition, ex.states, ex.path))


@main.command()
@click.argument("execution")
@click.option("--reject", is_flag=True, help="Reject instead of approve.")
@click.option("--comment", default="", help="Why (kept in the ledger).")
@click.option("--as", "approver", required=True, help="Your name or e-mail.")
@click.option("--wait", default=30.0, show_default=True, help="Seconds to wait for a request.")
@pass_context
@friendly_errors
def approve(
    ctx: Context, execution: str, reject: bool, comment: str, approver: str, wait: float
) -> None:
    """Approve (or --reject) what EXECUTION waits for, through the approval endpoint."""
    from image_cicd.approvals.decisions import version_label
    from image_cicd.aws.operations import approve as decide

    name = execution.rsplit(":", 1)[-1]
    approval, result = decide(
        ctx.target,
        name,
        "REJECTED" if reject else "APPROVED",
        approver,
        comment or None,
        wait_seconds=wait,
    )
    if result.status != 200:
        raise click.ClickException(
            f"the approval endpoint answered {result.status}: {_page_text(result.page)}"
        )
    verb = "rejected" if reject else "approved"
    click.echo(
        f"{approval.stage} {verb} by {approver}: {approval.target_repository} "
        f"{version_label(approval)} ({_short(approval.digest)})"
    )


def _page_text(page: str) -> str:
    import re
    from html import unescape

    title = re.search(r"<h1[^>]*>(.*?)</h1>", page, re.S)
    return unescape(re.sub(r"<[^>]+>", "", title.group(1))).strip() if title else page[:200]


@main.command()
@click.argument("repository", required=False)
@click.option("--to", "to", metavar="VERSION", help="Roll back to this version (e.g. v0.14).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True)
@pass_context
@friendly_errors
def rollback(
    ctx: Context, repository: str | None, to: str | None, yes: bool, as_json: bool
) -> None:
    """Roll a PROD repository back to its previous version (or --to a named one).

    Without REPOSITORY, choose from the PROD repositories of the stack.
    """
    from image_cicd.aws.operations import start_rollback, wait_finished
    from image_cicd.promotion.versions import read_stage

    target = ctx.target
    prod = [target.stage_repository(name, "PROD") for name in target.repositories]
    if repository is None:
        if as_json:
            raise click.UsageError("name the PROD repository (with --json there is no menu)")
        for n, repo in enumerate(prod, 1):
            state = read_stage(target.registry, repo, target.scheme)
            click.echo(f"{n}) {repo}  (latest: {state.current or _short(state.latest)})")
        choice = click.prompt("Roll back which repository", type=click.IntRange(1, len(prod)))
        repository = prod[choice - 1]
    elif repository not in prod:
        raise click.BadParameter(
            f"{repository} is not a PROD repository of this stack ({', '.join(prod)})",
            param_hint="REPOSITORY",
        )
    # Where latest is now: the rollback moves it only if it is still there.
    state = read_stage(target.registry, repository, target.scheme)
    here = state.current or state.latest
    if not yes and not click.confirm(
        f"Move {repository}:latest{f' from {here}' if here else ''} "
        f"to {to or 'the previous version'}?"
    ):
        raise click.Abort()
    desc = wait_finished(target, start_rollback(target, repository, to, expected=here))
    output = json.loads(desc.get("output") or "{}").get("rollback") or {}
    if as_json:
        click.echo(json.dumps({"status": desc["status"], "error": desc.get("error"), **output}))
    if desc["status"] != "SUCCEEDED":
        from image_cicd.promotion.errors import cause_text

        raise click.ClickException(
            f"rollback failed: {desc.get('error')}: {cause_text(desc.get('cause'))}"
        )
    if not as_json:
        click.echo(output.get("message", "rolled back"))


@main.command()
@click.option("--json", "as_json", is_flag=True)
@pass_context
@friendly_errors
def repos(ctx: Context, as_json: bool) -> None:
    """Every repository per stage: its versions and where latest points."""
    from image_cicd.promotion.versions import read_stage

    target = ctx.target
    rows: list[dict[str, Any]] = []
    for name in target.repositories:
        for stage in STAGES:
            repo = target.stage_repository(name, stage)
            state = read_stage(target.registry, repo, target.scheme)
            rows.append(
                {
                    "repository": repo,
                    "stage": stage,
                    "latest": state.latest,
                    "latest_version": state.current,
                    "versions": {v: state.versions[v] for v in state.ordered()},
                }
            )
    if as_json:
        click.echo(json.dumps(rows))
        return
    from rich.table import Table

    table = Table("repository", "latest", "versions")
    for row in rows:
        latest = row["latest_version"] or _short(row["latest"])
        versions = ", ".join(f"{v} {_short(d)}" for v, d in row["versions"].items())
        table.add_row(row["repository"], latest, versions or "[dim]-[/]")
    _console().print(table)


if __name__ == "__main__":
    main()
