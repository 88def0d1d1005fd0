"""`image-cicd executions`, `show`, `graph` and `approve`: the state machines' executions
and the approvals they wait for."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from image_cicd.cli.common import Context, console, friendly_errors, pass_context, short_digest

if TYPE_CHECKING:
    from image_cicd.aws.stack import DeployedStack


# A whole row when piped: a name of up to 80 characters (Step Functions' limit), the
# other four columns (about 45) and the borders and padding (16).
PIPED_TABLE_WIDTH = 160
# The longest status of a state (`show` pads each to it so that the names line up).
STATUS_WIDTH = len("succeeded")


def _executions(stack: DeployedStack, limit: int = 50) -> list[dict[str, Any]]:
    sfn = stack.client("stepfunctions")
    found = []
    for kind, arn in (("promotion", stack.promotion_arn), ("rollback", stack.rollback_arn)):
        for ex in sfn.list_executions(stateMachineArn=arn, maxResults=limit)["executions"]:
            found.append({**ex, "kind": kind})
    return sorted(found, key=lambda e: e["startDate"], reverse=True)[:limit]


@click.command()
@click.option("--json", "as_json", is_flag=True)
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@pass_context
@friendly_errors
def executions(ctx: Context, as_json: bool, limit: int) -> None:
    """Executions of the promotion and rollback state machines, newest first."""
    rows = _executions(ctx.stack, limit)
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

    out = console()
    table = Table("execution", "kind", "status", "started", "seconds")
    if not out.is_terminal:  # piped: no terminal width to fit, so whole names
        out.width = max(out.width, PIPED_TABLE_WIDTH)
    for r in rows:
        seconds = (r["stopDate"] - r["startDate"]).total_seconds() if r.get("stopDate") else None
        table.add_row(
            Text(r["name"]),
            r["kind"],
            _status_style(r["status"]),
            r["startDate"].strftime("%Y-%m-%d %H:%M:%S"),
            f"{seconds:.1f}" if seconds is not None else "",
        )
    out.print(table)


def _status_style(status: str, width: int = 0) -> str:
    """`status` in its colour as rich markup, padded to `width` visible characters."""
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

    return f"[{colour.get(status, 'dim')}]{escape(status.ljust(width))}[/]"


@click.command()
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

    stack = ctx.stack
    ex = view(stack.client("stepfunctions"), execution_arn(stack, execution))
    approval = pending_approval(stack, ex.name) if ex.waiting else None
    link = (
        approval_link(stack.output("ApprovalBaseUrl"), approval.approval_id) if approval else None
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

    out = console()
    out.print(
        f"[bold]{escape(ex.name)}[/]  {_status_style(ex.status)}"
        + (f"  {escape(ex.error)}: {escape(cause_text(ex.cause))}" if ex.error else "")
    )
    for name in dict.fromkeys(ex.path):
        state = ex.states[name]
        timing = f"{state.seconds:.1f}s" if state.seconds is not None else ""
        note = f"  {escape(state.error)}" if state.error else ""
        out.print(
            f"  {_status_style(state.status, STATUS_WIDTH)} {escape(name)}  [dim]{timing}[/]{note}"
        )
    if link:
        out.print(f"\nwaiting for {approval.stage} approval: {link}", markup=False)  # type: ignore[union-attr]


@click.command()
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

    stack = ctx.stack
    sfn = stack.client("stepfunctions")
    arn = execution_arn(stack, execution)
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


@click.command()
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
    from image_cicd.aws.operations import execution_arn

    name = execution_arn(ctx.stack, execution).rsplit(":", 1)[-1]
    approval, result = decide(
        ctx.stack,
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
        f"{version_label(approval)} ({short_digest(approval.digest)})"
    )


def _page_text(page: str) -> str:
    import re
    from html import unescape

    title = re.search(r"<h1[^>]*>(.*?)</h1>", page, re.S)
    return unescape(re.sub(r"<[^>]+>", "", title.group(1))).strip() if title else page[:200]
