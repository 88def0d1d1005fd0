"""`image-cicd copy` and `image-cicd push`: images into and between registries."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from image_cicd.cli.common import Context, friendly_errors, pass_context


@click.command()
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

    source, destination = parse_reference(src), parse_reference(dst)
    if destination.digest and source.digest and destination.digest != source.digest:
        raise click.BadParameter("DST names another digest than SRC", param_hint="DST")
    src_client = client_for(
        source.host, insecure=insecure, credentials=src_creds, pool_size=workers * 2
    )
    dst_client = (
        src_client
        if destination.host == source.host and dst_creds == src_creds
        else client_for(
            destination.host, insecure=insecure, credentials=dst_creds, pool_size=workers * 2
        )
    )
    import time

    started = time.perf_counter()
    before = src_client.requests_made + (
        dst_client.requests_made if dst_client is not src_client else 0
    )
    image = read_image(src_client, source.repository, source.reference)
    if destination.digest and destination.digest != image.root.digest:
        raise click.ClickException(f"{src} is {image.root.digest}, not {destination.digest}")
    tag = destination.tag or (None if source.digest else source.tag)
    with _progress(image.size, enabled=not as_json) as advance:
        result = copy_image(
            src_client,
            source.repository,
            image.root.digest,
            dst_client,
            destination.repository,
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


@click.command()
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
        client = ctx.stack.registry
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
