"""`image-cicd rollback` and `image-cicd repos`: what PROD runs and moving it back."""

from __future__ import annotations

import json
from typing import Any

import click

from image_cicd.cli.common import Context, console, friendly_errors, pass_context, short_digest
from image_cicd.stages import STAGES


@click.command()
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

    stack = ctx.stack
    prod = [stack.stage_repository(name, "PROD") for name in stack.repositories]
    if repository is None:
        if as_json:
            raise click.UsageError("name the PROD repository (with --json there is no menu)")
        for n, repo in enumerate(prod, 1):
            state = read_stage(stack.registry, repo, stack.scheme)
            click.echo(f"{n}) {repo}  (latest: {state.current or short_digest(state.latest)})")
        choice = click.prompt("Roll back which repository", type=click.IntRange(1, len(prod)))
        repository = prod[choice - 1]
    elif repository not in prod:
        raise click.BadParameter(
            f"{repository} is not a PROD repository of this stack ({', '.join(prod)})",
            param_hint="REPOSITORY",
        )
    # Where latest is now: the rollback moves it only if it is still there.
    state = read_stage(stack.registry, repository, stack.scheme)
    here = state.current or state.latest
    if not yes and not click.confirm(
        f"Move {repository}:latest{f' from {here}' if here else ''} "
        f"to {to or 'the previous version'}?"
    ):
        raise click.Abort()
    desc = wait_finished(stack, start_rollback(stack, repository, to, expected=here))
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


@click.command()
@click.option("--json", "as_json", is_flag=True)
@pass_context
@friendly_errors
def repos(ctx: Context, as_json: bool) -> None:
    """Every repository per stage: its versions and where latest points."""
    from image_cicd.promotion.versions import read_stage

    stack = ctx.stack
    rows: list[dict[str, Any]] = []
    for name in stack.repositories:
        for stage in STAGES:
            repo = stack.stage_repository(name, stage)
            state = read_stage(stack.registry, repo, stack.scheme)
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
        latest = row["latest_version"] or short_digest(row["latest"])
        versions = ", ".join(f"{v} {short_digest(d)}" for v, d in row["versions"].items())
        table.add_row(row["repository"], latest, versions or "[dim]-[/]")
    console().print(table)
