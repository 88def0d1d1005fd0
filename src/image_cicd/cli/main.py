"""The `image-cicd` command. Heavy modules are imported inside commands, so that
the command starts fast."""

from __future__ import annotations

from pathlib import Path

import click

from image_cicd.cli.common import Context
from image_cicd.cli.executions import approve, executions, graph, show
from image_cicd.cli.images import copy, push
from image_cicd.cli.local import local
from image_cicd.cli.releases import repos, rollback


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


for _command in (copy, push, local, executions, show, graph, approve, rollback, repos):
    main.add_command(_command)


if __name__ == "__main__":
    main()
