"""`make demo`: the promotion engine on a real local registry.

Pushes a synthetic image to ecr-dev/repo-1, promotes it to TEST and PROD with
version tags, pushes and promotes a second image, rolls PROD back, and prints what
each repository holds.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from image_cicd.images import build_image, push_image
from image_cicd.local.registry import RegistryServer
from image_cicd.locks import ThreadLocker
from image_cicd.registry.client import RegistryClient
from image_cicd.versions import VersionScheme, promote, read_stage, rollback

DEV, TEST, PROD = "ecr-dev/repo-1", "ecr-test/repo-1", "ecr-prod/repo-1"


def main() -> None:
    with (
        tempfile.TemporaryDirectory(prefix="image-cicd-demo-") as tmp,
        RegistryServer(Path(tmp) / "registry") as registry,
    ):
        print(f"registry: {registry.url} (docker-registry, pid {registry.pid})")
        started = time.perf_counter()
        client = RegistryClient(registry.url)
        locker = ThreadLocker()
        first = build_image(layers=3, layer_size=2_000_000, platforms=["linux/amd64"])
        second = build_image(layers=3, layer_size=2_000_000, platforms=["linux/amd64"])
        promotions = []
        for n, image in enumerate((first, second), 1):
            push_image(client, DEV, image, tags=["latest"])
            print(f"pushed image {n} to {DEV}:latest  {image.digest}")
            for src, dst in ((DEV, TEST), (TEST, PROD)):
                p = promote(client, src, image.digest, client, dst, locker=locker)
                promotions.append(p)
                print(
                    f"  {src} -> {dst}: {p.version}  ({p.copy.blobs_mounted} blobs mounted, "
                    f"{p.copy.bytes_moved} bytes moved, {p.copy.seconds:.3f} s)"
                )
        back = rollback(client, PROD, locker=locker)
        print(back.message)
        for repository in (DEV, TEST, PROD):
            state = read_stage(client, repository, VersionScheme())
            versions = ", ".join(f"{v}={state.versions[v][:19]}" for v in state.ordered())
            print(f"{repository:18} latest={(state.latest or '-')[:19]}  {versions or '-'}")
        print(
            json.dumps(
                {
                    "source": {"repository": DEV, "digest": first.digest},
                    "test": {
                        "repository": TEST,
                        "version": promotions[0].version,
                        "digest": promotions[0].digest,
                    },
                    "prod": {
                        "repository": PROD,
                        "version": promotions[1].version,
                        "digest": promotions[1].digest,
                    },
                    "rollback": {"from": back.from_version, "to": back.to_version},
                    "seconds": round(time.perf_counter() - started, 2),
                }
            )
        )


if __name__ == "__main__":
    main()
