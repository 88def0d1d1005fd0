"""The `image-cicd` command. Heavy modules are imported inside commands, so that
the command starts fast."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(func: F) -> F:
    """Known failures end with one clear line and exit status 1, not a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from image_cicd.errors import USER_ERRORS

        try:
            return func(*args, **kwargs)
        except USER_ERRORS as exc:
            raise click.ClickException(str(exc) or type(exc).__name__) from exc

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="image-cicd")
def main() -> None:
    """Promote container images DEV -> TEST -> PROD by digest."""


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
