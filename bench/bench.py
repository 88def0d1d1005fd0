"""Benchmark: image-cicd's copy engine against skopeo, on local registries.

Run by ``make bench`` as ``.venv/bin/python bench/bench.py``. Everything runs here, on
loopback: two ``docker-registry`` processes (A and B), synthetic images of seeded
random content pushed to A, and every copy is a child process whose wall time and peak
RSS (``os.wait4`` ``ru_maxrss`` of that child only) are measured. Requests and bytes
over the wire come from one extra, untimed run of each tool through a counting
pass-through proxy; timed runs go straight to the registry.

skopeo's blob-info cache (BoltDB; as root ``/var/lib/containers/cache``) decides
whether it mounts. skopeo 1.9 has no option to move it, but for a non-root user it
lives in ``$XDG_DATA_HOME/containers/cache``: when run as root, this script runs
skopeo as ``nobody`` (``setpriv``) with ``XDG_DATA_HOME`` pointing at a temporary
directory, so the real cache is never read or written.

The table goes to stdout; the last line of output is one JSON object with every
figure, also written to ``bench/results/latest.json``. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from image_cicd.local.fault_proxy import FaultProxy, WireCounts
from image_cicd.local.registry import RegistryServer
from image_cicd.registry.client import RegistryClient
from image_cicd.registry.copy import read_image
from image_cicd.registry.synthetic import SyntheticImage, build_image, push_image

ROOT = Path(__file__).resolve().parent.parent

RESULTS = ROOT / "bench" / "results" / "latest.json"
MB = 1_000_000
MIB = 1 << 20
SKOPEO_USER = 65534  # nobody: a non-root skopeo honours XDG_DATA_HOME for its cache
REAL_ROOT_CACHE = Path("/var/lib/containers/cache/blob-info-cache-v1.boltdb")


def log(message: str) -> None:
    """Progress goes to stderr, so stdout holds only the table and the JSON."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- child processes ------------------------------------------------------------------


@dataclass(frozen=True)
class ChildRun:
    returncode: int
    wall: float
    maxrss_kib: int
    stdout: str
    stderr: str


# Linux quirk: a child's ru_maxrss starts at the RSS of the process it was forked (or
# vforked) from, because exec() folds the old address space's high-water mark into it.
# Spawned straight from this process (~60 MB of Python), every child would report at
# least that. So each child is spawned by this tiny launcher (python -S, ~8 MB), which
# times it and reads ru_maxrss of that child alone from os.wait4. The launcher's own
# RSS is a floor, measured and reported (`rss_floor_mib`); every figure is far above it.
LAUNCHER = """
import os, sys, time
out, cmd = sys.argv[1], sys.argv[2:]
started = time.perf_counter()
pid = os.posix_spawnp(cmd[0], cmd, os.environ)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - started
with open(out, "w") as f:
    f.write("%d %r %d" % (os.waitstatus_to_exitcode(status), wall, usage.ru_maxrss))
"""


# The content check as Run tests runs it (builtin_checks, no other check configured),
# in a child process of its own: its in-process seconds, its result, its peak RSS.
CONTENT_CHECK = """
import json, sys, time
from image_cicd.promotion.checks import builtin_checks
from image_cicd.promotion.settings import RepositoryTests
from image_cicd.registry.client import RegistryClient
class NoScans:
    def severity_counts(self, repository, digest):
        return None
url, repository, digest = sys.argv[1:4]
client = RegistryClient(url)
started = time.perf_counter()
[content] = builtin_checks(client, repository, digest, RepositoryTests(), NoScans())
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "passed": content.passed, "detail": content.detail}))
"""


def run_child(
    cmd: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 900.0
) -> ChildRun:
    """Run `cmd` via the launcher: its wall time and the peak RSS of that child alone."""
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile(mode="r") as result,
    ):
        proc = subprocess.Popen(
            [sys.executable, "-S", "-c", LAUNCHER, result.name, *cmd],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=dict(env or os.environ),
            start_new_session=True,  # one process group: killed together on Ctrl-C
        )
        try:
            proc.wait(timeout)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
        fields = result.read().split()
        if proc.returncode != 0 or len(fields) != 3:
            raise CopyFailed(f"launcher failed ({proc.returncode}) for {cmd}: {stderr[-2000:]}")
        return ChildRun(
            returncode=int(fields[0]),
            wall=float(fields[1]),
            maxrss_kib=int(fields[2]),  # KiB on Linux
            stdout=stdout,
            stderr=stderr,
        )


def rss_floor_mib() -> float:
    """What the launcher itself contributes to a child's ru_maxrss (see LAUNCHER)."""
    return statistics.median(run_child(["/bin/true"]).maxrss_kib for _ in range(3)) / 1024


@dataclass(frozen=True)
class Sample:
    """One copy: wall seconds, in-process copy seconds (image-cicd only), peak RSS."""

    wall: float
    copy: float | None
    rss_mib: float
    result: dict[str, Any] | None = None


class CopyFailed(RuntimeError):
    pass


class Tools:
    """The two copiers, each run as a child process."""

    def __init__(self, workdir: Path) -> None:
        venv_bin = Path(sys.executable).parent
        found = venv_bin / "image-cicd"
        self.image_cicd = str(found) if found.exists() else shutil.which("image-cicd") or ""
        self.skopeo = shutil.which("skopeo") or ""
        if not self.image_cicd:
            raise SystemExit("image-cicd is not installed (run `make deps`)")
        if not self.skopeo:
            raise SystemExit("skopeo is not installed (run `make system-deps`)")
        self.as_root = os.geteuid() == 0
        if self.as_root and not shutil.which("setpriv"):
            raise SystemExit("setpriv (util-linux) is needed to run skopeo as nobody")
        self.cache_root = workdir / "skopeo-caches"
        self.cache_root.mkdir()
        self.cache_root.chmod(0o777)
        self._caches = 0

    # image-cicd -------------------------------------------------------------------

    def image_cicd_copy(
        self, src: str, dst: str, *, mount: bool = True, workers: int = 4
    ) -> Sample:
        cmd = [self.image_cicd, "copy", src, dst, "--insecure", "--json", "--workers", str(workers)]
        if not mount:
            cmd.append("--no-mount")
        run = run_child(cmd)
        if run.returncode != 0:
            raise CopyFailed(f"{' '.join(cmd)} -> {run.returncode}\n{run.stderr[-2000:]}")
        result = json.loads(run.stdout.strip().splitlines()[-1])
        return Sample(run.wall, float(result["seconds"]), run.maxrss_kib / 1024, result)

    def image_cicd_help(self) -> ChildRun:
        run = run_child([self.image_cicd, "--help"])
        if run.returncode != 0:
            raise CopyFailed(f"image-cicd --help -> {run.returncode}\n{run.stderr}")
        return run

    # skopeo -----------------------------------------------------------------------

    def fresh_cache(self) -> Path:
        """An empty, private home for skopeo's blob-info cache."""
        self._caches += 1
        path = self.cache_root / f"cache-{self._caches}"
        path.mkdir()
        path.chmod(0o777)
        return path

    def _skopeo_cmd(self, args: Sequence[str], cache: Path) -> tuple[list[str], dict[str, str]]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "REGISTRY_AUTH"))}
        env |= {
            "XDG_DATA_HOME": str(cache),  # -> <cache>/containers/cache/blob-info-cache-v1
            "XDG_RUNTIME_DIR": str(cache),  # auth.json lookups stay in here too
            "XDG_CONFIG_HOME": str(cache),
            "HOME": str(cache),
        }
        cmd = [self.skopeo, *args]
        if self.as_root:  # as root, skopeo ignores XDG_DATA_HOME: run it as nobody
            cmd = [
                "setpriv",
                f"--reuid={SKOPEO_USER}",
                f"--regid={SKOPEO_USER}",
                "--clear-groups",
                *cmd,
            ]
        return cmd, env

    def skopeo_copy(self, src: str, dst: str, cache: Path) -> Sample:
        args = [
            "copy",
            "--all",
            "--preserve-digests",
            "--quiet",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            f"docker://{src}",
            f"docker://{dst}",
        ]
        cmd, env = self._skopeo_cmd(args, cache)
        run = run_child(cmd, env=env)
        if run.returncode != 0:
            raise CopyFailed(f"{' '.join(cmd)} -> {run.returncode}\n{run.stderr[-2000:]}")
        return Sample(run.wall, None, run.maxrss_kib / 1024)

    def skopeo_to_dir(self, src: str, cache: Path) -> Sample:
        """`skopeo copy` to a `dir:` (reads every blob and checks its digest, writes it)."""
        self._caches += 1
        target = self.cache_root / f"dir-{self._caches}"  # writable by skopeo's user
        args = ["copy", "--quiet", "--src-tls-verify=false", f"docker://{src}", f"dir:{target}"]
        cmd, env = self._skopeo_cmd(args, cache)
        run = run_child(cmd, env=env)
        if run.returncode != 0:
            raise CopyFailed(f"{' '.join(cmd)} -> {run.returncode}\n{run.stderr[-2000:]}")
        shutil.rmtree(target, ignore_errors=True)
        return Sample(run.wall, None, run.maxrss_kib / 1024)

    # content check and its peers ----------------------------------------------------

    def content_check(self, url: str, repository: str, digest: str) -> Sample:
        run = run_child([sys.executable, "-c", CONTENT_CHECK, url, repository, digest])
        if run.returncode != 0:
            raise CopyFailed(f"content check -> {run.returncode}\n{run.stderr[-2000:]}")
        result = json.loads(run.stdout.strip().splitlines()[-1])
        if not result["passed"]:
            raise CopyFailed(f"the content check failed on an intact image: {result['detail']}")
        return Sample(run.wall, float(result["seconds"]), run.maxrss_kib / 1024, result)

    @staticmethod
    def sha256sum(files: Mapping[str, Path]) -> Sample:
        """`sha256sum` of the blob files in the registry's storage; each must match."""
        run = run_child(["sha256sum", *(str(f) for f in files.values())])
        sums = dict(line.split(maxsplit=1)[::-1] for line in run.stdout.splitlines())
        wrong = [d for d, f in files.items() if "sha256:" + sums.get(str(f), "") != d]
        if run.returncode != 0 or wrong:
            raise CopyFailed(f"sha256sum -> {run.returncode}, mismatched {wrong}: {run.stderr}")
        return Sample(run.wall, None, run.maxrss_kib / 1024)

    def skopeo_startup(self) -> ChildRun:
        cmd, env = self._skopeo_cmd(["--version"], self.fresh_cache())
        return run_child(cmd, env=env)

    def skopeo_version(self) -> str:
        return subprocess.run(
            [self.skopeo, "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()

    @staticmethod
    def cache_file(cache: Path) -> Path:
        return cache / "containers" / "cache" / "blob-info-cache-v1.boltdb"


# -- measurements ---------------------------------------------------------------------


@dataclass
class Measurement:
    """The timed samples of one tool in one scenario, plus its counted (proxied) run."""

    label: str
    tool: str  # "image-cicd" or "skopeo"
    samples: list[Sample] = field(default_factory=list)
    counts: WireCounts | None = None
    counted_result: dict[str, Any] | None = None  # image-cicd's own JSON of that run
    note: str = ""

    @property
    def wall(self) -> float:
        return statistics.median(s.wall for s in self.samples)

    @property
    def copy(self) -> float | None:
        values = [s.copy for s in self.samples if s.copy is not None]
        return statistics.median(values) if values else None

    @property
    def rss_mib(self) -> float:
        return statistics.median(s.rss_mib for s in self.samples)

    def copy_time(self, skopeo_startup: float) -> float:
        """Copy time: in-process for image-cicd; for skopeo, wall minus its start-up."""
        if self.copy is not None:
            return self.copy
        return max(self.wall - skopeo_startup, 1e-6)

    def as_dict(self, skopeo_startup: float) -> dict[str, Any]:
        results = [s.result for s in self.samples if s.result]
        return {
            "label": self.label,
            "tool": self.tool,
            "wall_s": round(self.wall, 4),
            "copy_s": round(self.copy_time(skopeo_startup), 4),
            "copy_s_source": "in-process (--json seconds)"
            if self.copy is not None
            else "wall minus skopeo start-up",
            "peak_rss_mib": round(self.rss_mib, 1),
            "wall_samples": [round(s.wall, 4) for s in self.samples],
            "copy_samples": [round(s.copy, 4) for s in self.samples if s.copy is not None],
            "rss_samples_mib": [round(s.rss_mib, 1) for s in self.samples],
            "wire": self.counts.as_dict() if self.counts else None,
            "self_reported": {
                k: results[0][k]
                for k in (
                    "blobs_mounted",
                    "blobs_copied",
                    "blobs_present",
                    "bytes_moved",
                    "requests",
                )
            }
            if results
            else None,
            "counted_run_self_reported_requests": (self.counted_result or {}).get("requests"),
            "note": self.note,
        }


@dataclass(frozen=True)
class Setup:
    a: RegistryServer
    b: RegistryServer
    proxy_a: FaultProxy
    proxy_b: FaultProxy
    tools: Tools
    runs: int
    digests: dict[str, str]  # source tag -> digest


def verify(registry: RegistryServer, destination: str, digest: str) -> None:
    """The destination tag must resolve to the source digest (no bogus timings)."""
    repository, _, tag = destination.partition("/")[2].rpartition(":")
    client = RegistryClient(registry.url)
    try:
        found = client.head_manifest(repository, tag)
    finally:
        client.close()
    if found is None or found.digest != digest:
        raise CopyFailed(f"{destination}: expected {digest}, found {found}")


def settle() -> None:
    """Before each timed copy: flush dirty pages the previous copy left (the registries
    write every uploaded byte to disk), so its write-back does not land in this one."""
    os.sync()


Runner = Callable[[str, str, Path | None], Sample]


def _runner(tools: Tools, method: str) -> Runner:
    def run(src: str, dst: str, cache: Path | None) -> Sample:
        if method == "image-cicd":
            return tools.image_cicd_copy(src, dst)
        if method == "image-cicd --no-mount":
            return tools.image_cicd_copy(src, dst, mount=False)
        if method == "image-cicd --workers 1":
            return tools.image_cicd_copy(src, dst, workers=1)
        if method == "image-cicd --workers 4":
            return tools.image_cicd_copy(src, dst, workers=4)
        assert cache is not None
        return tools.skopeo_copy(src, dst, cache)

    return run


def same_registry(setup: Setup, case: str, tag: str) -> dict[str, Measurement]:
    """Promotion inside registry A: ecr-dev/repo-1 -> a fresh ecr-test repository."""
    tools, a, proxy = setup.tools, setup.a, setup.proxy_a
    digest = setup.digests[tag]
    methods = {
        "image-cicd": "mounts (default)",
        "skopeo empty cache": "fresh blob-info cache every run",
        "skopeo warm cache": "cache primed by one untimed copy",
        "image-cicd --no-mount": "streams every blob",
    }
    out = {m: Measurement(m, "skopeo" if "skopeo" in m else "image-cicd") for m in methods}
    for m, note in methods.items():
        out[m].note = note

    def slug(method: str) -> str:
        return method.replace(" ", "-").replace("--", "").replace("image-cicd", "icicd")

    # Untimed counted runs, through the proxy (its own host, so its own cache scope).
    warm_counted = tools.fresh_cache()
    for method in methods:
        src = f"{proxy.host}/ecr-dev/repo-1:{tag}"
        cache: Path | None = None
        if method == "skopeo empty cache":
            cache = tools.fresh_cache()
        elif method == "skopeo warm cache":
            cache = warm_counted
            tools.skopeo_copy(src, f"{proxy.host}/ecr-test/{case}-prime-counted:{tag}", cache)
        proxy.reset_counts()
        dst = f"{proxy.host}/ecr-test/repo-1-{case}-{slug(method)}-counted:{tag}"
        sample = _runner(tools, method)(src, dst, cache)
        counts = out[method].counts = proxy.take_counts()
        out[method].counted_result = sample.result
        verify(a, f"{a.host}/ecr-test/repo-1-{case}-{slug(method)}-counted:{tag}", digest)
        log(f"  counted {case:6} {method:24} {counts.requests:4} requests")

    # Timed runs, direct; the tools take turns within each round.
    warm = tools.fresh_cache()
    src = f"{a.host}/ecr-dev/repo-1:{tag}"
    tools.skopeo_copy(src, f"{a.host}/ecr-test/{case}-prime:{tag}", warm)
    if not Tools.cache_file(warm).exists():
        raise CopyFailed(f"skopeo did not write its cache where expected: {warm}")
    for k in range(1, setup.runs + 1):
        for method in methods:
            cache = None
            if method == "skopeo empty cache":
                cache = tools.fresh_cache()
            elif method == "skopeo warm cache":
                cache = warm
            dst = f"{a.host}/ecr-test/repo-1-{case}-{slug(method)}-run{k}:{tag}"
            settle()
            sample = _runner(tools, method)(src, dst, cache)
            verify(a, dst, digest)
            out[method].samples.append(sample)
            log(f"  run {k} {case:6} {method:24} wall {sample.wall:7.3f} s")
    return out


def cross_registry(setup: Setup, tag: str, small_tag: str) -> dict[str, Measurement]:
    """Registry A -> registry B: every blob is streamed."""
    tools, a, b = setup.tools, setup.a, setup.b
    methods = {
        "image-cicd --workers 1": "",
        "image-cicd --workers 4": "default workers",
        "skopeo": "skopeo 1.9 has no concurrency flag: default, up to 6 blobs at once",
    }
    out = {
        m: Measurement(m, "skopeo" if "skopeo" in m else "image-cicd", note=n)
        for m, n in methods.items()
    }
    small = Measurement("image-cicd --workers 4 (small image)", "image-cicd")
    slug = {m: m.replace(" ", "").replace("--workers", "-w") for m in methods}

    for method in methods:
        setup.proxy_a.reset_counts()
        setup.proxy_b.reset_counts()
        cache = tools.fresh_cache() if method == "skopeo" else None
        src = f"{setup.proxy_a.host}/ecr-dev/repo-1:{tag}"
        dst = f"{setup.proxy_b.host}/ecr-test/repo-1-x-{slug[method]}-counted:{tag}"
        sample = _runner(tools, method)(src, dst, cache)
        counts = out[method].counts = setup.proxy_a.take_counts() + setup.proxy_b.take_counts()
        out[method].counted_result = sample.result
        verify(b, f"{b.host}/ecr-test/repo-1-x-{slug[method]}-counted:{tag}", setup.digests[tag])
        log(f"  counted cross  {method:24} {counts.requests:4} requests")

    src = f"{a.host}/ecr-dev/repo-1:{tag}"
    for k in range(1, setup.runs + 1):
        for method in methods:
            # An empty cache every run: a warm one would know the blobs are already in
            # B (from the previous run) and mount them there, which is not this case.
            cache = tools.fresh_cache() if method == "skopeo" else None
            dst = f"{b.host}/ecr-test/repo-1-x-{slug[method]}-run{k}:{tag}"
            settle()
            sample = _runner(tools, method)(src, dst, cache)
            verify(b, dst, setup.digests[tag])
            out[method].samples.append(sample)
            log(f"  run {k} cross  {method:24} wall {sample.wall:7.3f} s")
        dst = f"{b.host}/ecr-test/repo-2-x-run{k}:{small_tag}"
        settle()
        sample = tools.image_cicd_copy(f"{a.host}/ecr-dev/repo-2:{small_tag}", dst, workers=4)
        verify(b, dst, setup.digests[small_tag])
        small.samples.append(sample)
        log(f"  run {k} cross  {'small image, workers 4':24} rss {sample.rss_mib:6.1f} MiB")
    out["small"] = small
    return out


def content_check(setup: Setup, tag: str) -> dict[str, Measurement]:
    """Run tests' content check of the single image in registry A, against peers that
    read the same bytes: sha256sum of the blob files, skopeo copy to a dir:."""
    tools, a = setup.tools, setup.a
    client = RegistryClient(a.url)
    try:
        image = read_image(client, "ecr-dev/repo-1", setup.digests[tag])
    finally:
        client.close()
    root = a.storage_dir / "data/docker/registry/v2/blobs/sha256"
    files = {b.digest: root / b.digest[7:9] / b.digest[7:] / "data" for b in image.blobs}
    methods = {
        "image-cicd content check": "builtin_checks: every blob over HTTP, 4 at a time, hashed",
        "sha256sum blob files": "the same bytes from the registry's storage, one process",
        "skopeo copy to dir:": "skopeo reads and verifies every blob, and writes it to disk",
    }
    out = {
        m: Measurement(m, "skopeo" if "skopeo" in m else m.split()[0], note=n)
        for m, n in methods.items()
    }
    src = f"{a.host}/ecr-dev/repo-1:{tag}"
    for k in range(1, setup.runs + 1):
        for method in methods:
            settle()
            if method == "image-cicd content check":
                sample = tools.content_check(a.url, "ecr-dev/repo-1", setup.digests[tag])
            elif method == "sha256sum blob files":
                sample = tools.sha256sum(files)
            else:
                sample = tools.skopeo_to_dir(src, tools.fresh_cache())
            out[method].samples.append(sample)
            log(f"  run {k} check  {method:24} wall {sample.wall:7.3f} s")
    return out


def content_table(
    title: str, rows: Mapping[str, Measurement], image_bytes: int, skopeo_startup: float
) -> list[str]:
    check = rows["image-cicd content check"]
    check_s = check.copy_time(skopeo_startup)
    header = (
        f"{'tool':<26} {'wall s':>8} {'work s':>8} {'MB/s':>7} {'peak RSS':>9} {'check/this':>11}"
    )
    lines = [title, header, "-" * len(header)]
    for m in rows.values():
        work = m.wall if m.tool == "sha256sum" else m.copy_time(skopeo_startup)
        lines.append(
            f"{m.label:<26} {m.wall:8.3f} {work:8.3f} {image_bytes / MB / work:7.0f} "
            f"{m.rss_mib:6.1f} MiB {_ratio(check_s / work):>11}"
        )
    lines.append(
        "work s: the content check's own seconds (no start-up); sha256sum: wall; "
        "skopeo: wall minus its start-up. check/this: how many times longer the check takes."
    )
    return [*lines, ""]


# -- report ---------------------------------------------------------------------------


def _fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / MB:,.1f} MB" if n >= MB else f"{n / 1000:,.1f} kB"


def _ratio(value: float) -> str:
    return f"{value:,.1f}x" if value < 100 else f"{value:,.0f}x"


def table(
    title: str, rows: Sequence[Measurement], reference: Measurement, skopeo_startup: float
) -> list[str]:
    ref_copy = reference.copy_time(skopeo_startup)
    header = (
        f"{'tool':<24} {'wall s':>8} {'copy s':>8} {'wire bytes':>11} {'requests':>8} "
        f"{'peak RSS':>9} {'speed-up copy':>13} {'speed-up wall':>13}"
    )
    lines = [title, header, "-" * len(header)]
    for m in rows:
        copy = m.copy_time(skopeo_startup)
        lines.append(
            f"{m.label:<24} {m.wall:8.3f} {copy:8.3f} "
            f"{_fmt_bytes(m.counts.wire_bytes if m.counts else None):>11} "
            f"{(m.counts.requests if m.counts else 0):8d} {m.rss_mib:6.1f} MiB "
            f"{_ratio(ref_copy / copy):>13} {_ratio(reference.wall / m.wall):>13}"
        )
    lines.append(
        f"speed-up = {reference.label} time / this tool's time (>1: faster than it). "
        "copy s: image-cicd's own --json seconds; skopeo: wall minus its start-up."
    )
    return [*lines, ""]


def loadavg() -> list[float]:
    """1, 5 and 15 minute load averages: other work on the machine skews timings."""
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    registry = subprocess.run(
        ["/usr/bin/docker-registry", "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "docker_registry": registry,
        "memory_mib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // MIB,
    }


# -- main -----------------------------------------------------------------------------


def _content_report(
    rows: Mapping[str, Measurement], image_bytes: int, skopeo_startup: float
) -> dict[str, Any]:
    check = rows["image-cicd content check"]
    check_s = check.copy_time(skopeo_startup)
    report: dict[str, Any] = {"image_bytes": image_bytes}
    for label, m in rows.items():
        work = m.wall if m.tool == "sha256sum" else m.copy_time(skopeo_startup)
        report[label] = {
            "wall_s": round(m.wall, 4),
            "work_s": round(work, 4),
            "mb_per_s": round(image_bytes / MB / work, 1),
            "peak_rss_mib": round(m.rss_mib, 1),
            "check_time_ratio": round(check_s / work, 2),
            "wall_samples": [round(s.wall, 4) for s in m.samples],
            "rss_samples_mib": [round(s.rss_mib, 1) for s in m.samples],
            "note": m.note,
        }
    report["image-cicd content check"]["detail"] = (check.samples[0].result or {}).get("detail")
    return report


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def push(client: RegistryClient, repository: str, image: SyntheticImage, tag: str) -> str:
    started = time.perf_counter()
    digest = push_image(client, repository, image, tags=[tag])
    took = time.perf_counter() - started
    log(f"pushed {repository}:{tag} ({image.size / MB:,.0f} MB) in {took:.1f} s")
    return digest


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=500, help="image size (MB, 10^6 bytes)")
    parser.add_argument("--small-mb", type=int, default=100, help="small image, memory check")
    parser.add_argument("--layers", type=int, default=10, help="layers per platform")
    parser.add_argument("--runs", type=int, default=3, help="timed runs (median reported)")
    parser.add_argument("--startup-runs", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="smoke run: 50 MB, 1 run")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.size_mb, args.small_mb, args.runs, args.startup_runs = 50, 10, 1, 3
    if min(args.size_mb, args.small_mb, args.layers, args.runs, args.startup_runs) < 1:
        parser.error("sizes, layers and runs must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it
    bench_started = time.perf_counter()
    load_start = loadavg()
    if load_start[0] > 0.5 * (os.cpu_count() or 1):
        log(f"warning: the machine is busy (load {load_start}); timings will be noisy")
    real_cache_before = REAL_ROOT_CACHE.stat().st_mtime if REAL_ROOT_CACHE.exists() else None
    size, small_size = args.size_mb * MB, args.small_mb * MB

    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="image-cicd-bench-")))
        workdir.chmod(0o711)  # skopeo runs as nobody and needs to reach its cache dirs
        tools = Tools(workdir)
        a = stack.enter_context(RegistryServer(workdir / "registry-a"))
        b = stack.enter_context(RegistryServer(workdir / "registry-b"))
        proxy_a = stack.enter_context(FaultProxy(a.url, fault_rate=0, timeout=300))
        proxy_b = stack.enter_context(FaultProxy(b.url, fault_rate=0, timeout=300))
        log(f"registries: A {a.url}, B {b.url}; proxies {proxy_a.host}, {proxy_b.host}")

        layer = size // args.layers
        single = build_image(layers=args.layers, layer_size=layer, seed=1)
        index = build_image(
            layers=args.layers,
            layer_size=size // (2 * args.layers),
            platforms=("linux/amd64", "linux/arm64"),
            seed=2,
        )
        small = build_image(layers=args.layers, layer_size=small_size // args.layers, seed=3)
        client = RegistryClient(a.url)
        stack.callback(client.close)
        digests = {
            "single": push(client, "ecr-dev/repo-1", single, "single"),
            "multi": push(client, "ecr-dev/repo-1", index, "multi"),
            "small": push(client, "ecr-dev/repo-2", small, "small"),
        }
        setup = Setup(a, b, proxy_a, proxy_b, tools, args.runs, digests)

        floor = rss_floor_mib()
        log("start-up")
        tools.image_cicd_help()  # warm the file cache and the .pyc files first
        startup = [tools.image_cicd_help().wall for _ in range(args.startup_runs)]
        skopeo_start = [tools.skopeo_startup().wall for _ in range(args.startup_runs)]
        skopeo_startup = statistics.median(skopeo_start)

        log("same registry, single-platform image")
        promo_single = same_registry(setup, "single", "single")
        log("same registry, two-platform index")
        promo_index = same_registry(setup, "index", "multi")
        log("cross registry")
        cross = cross_registry(setup, "single", "small")
        log("content check")
        checked = content_check(setup, "single")
        skopeo_version = tools.skopeo_version()

    runtime = time.perf_counter() - bench_started
    real_cache_after = REAL_ROOT_CACHE.stat().st_mtime if REAL_ROOT_CACHE.exists() else None

    # -- targets --------------------------------------------------------------------
    cold = promo_single["skopeo empty cache"]
    ours = promo_single["image-cicd"]
    promo_speedup = cold.copy_time(skopeo_startup) / ours.copy_time(skopeo_startup)
    x_ours, x_skopeo = cross["image-cicd --workers 4"], cross["skopeo"]
    cross_ratio = x_skopeo.copy_time(skopeo_startup) / x_ours.copy_time(skopeo_startup)
    rss_small, rss_large = cross["small"].rss_mib, x_ours.rss_mib
    rss_growth = rss_large / rss_small - 1
    startup_median = statistics.median(startup)
    targets = {
        "promotion_50x_vs_skopeo_empty_cache": {
            "pass": promo_speedup >= 50,
            "speedup_copy": round(promo_speedup, 1),
            "speedup_wall": round(cold.wall / ours.wall, 1),
            "rule": "single-platform image, copy time: skopeo (empty cache) / image-cicd >= 50",
        },
        "cross_registry_no_slower_than_skopeo": {
            "pass": cross_ratio >= 1.0,
            "speedup_copy": round(cross_ratio, 2),
            "speedup_wall": round(x_skopeo.wall / x_ours.wall, 2),
            "rule": "copy time: skopeo / image-cicd (default 4 workers) >= 1",
        },
        "memory_independent_of_size": {
            "pass": rss_growth <= 0.20,
            "rss_small_mib": round(rss_small, 1),
            "rss_large_mib": round(rss_large, 1),
            "growth": round(rss_growth, 3),
            "rule": f"peak RSS copying {args.size_mb} MB grows <= 20 % over {args.small_mb} MB",
        },
        "cli_startup_under_0.3s": {
            "pass": startup_median < 0.3,
            "seconds": round(startup_median, 4),
            "rule": "median wall time of `image-cicd --help` < 0.3 s",
        },
    }

    # -- table ----------------------------------------------------------------------
    lines = [
        f"image-cicd benchmark  {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}  "
        f"{os.cpu_count()} cores  image {args.size_mb} MB x {args.layers} layers  "
        f"median of {args.runs} run(s)  ({skopeo_version})",
        "",
    ]
    order = ["image-cicd", "skopeo empty cache", "skopeo warm cache", "image-cicd --no-mount"]
    lines += table(
        f"1a. same-registry promotion, single-platform {args.size_mb} MB",
        [promo_single[m] for m in order],
        promo_single["skopeo empty cache"],
        skopeo_startup,
    )
    lines += table(
        f"1b. same-registry promotion, two-platform OCI index, {args.size_mb} MB in all",
        [promo_index[m] for m in order],
        promo_index["skopeo empty cache"],
        skopeo_startup,
    )
    lines += table(
        f"2. cross-registry copy A -> B, {args.size_mb} MB "
        "(skopeo: its default concurrency, no flag in 1.9)",
        [cross[m] for m in ("image-cicd --workers 1", "image-cicd --workers 4", "skopeo")],
        cross["skopeo"],
        skopeo_startup,
    )
    lines += content_table(
        f"3. content check of the {args.size_mb} MB single-platform image in registry A "
        "(every blob read and hashed)",
        checked,
        single.size,
        skopeo_startup,
    )
    lines += [
        f"start-up: image-cicd --help {startup_median:.3f} s (median of {len(startup)}); "
        f"skopeo --version {skopeo_startup:.3f} s",
        f"memory: image-cicd cross-registry peak RSS {rss_small:.1f} MiB for {args.small_mb} MB "
        f"vs {rss_large:.1f} MiB for {args.size_mb} MB ({rss_growth:+.1%}); "
        f"peak RSS = ru_maxrss of the copying process (launcher floor {floor:.1f} MiB)",
        "",
        "targets:",
    ]
    for name, target in targets.items():
        figures = ", ".join(f"{k}={v}" for k, v in target.items() if k not in ("pass", "rule"))
        lines.append(f"  [{'PASS' if target['pass'] else 'FAIL'}] {name}: {figures}")
    lines.append(
        f"\nbench runtime {runtime:.0f} s; load average at start {load_start[0]:.2f}, "
        f"at end {loadavg()[0]:.2f} ({os.cpu_count()} cores)"
    )

    report: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "skopeo": skopeo_version,
        "params": {
            "size_mb": args.size_mb,
            "small_mb": args.small_mb,
            "layers": args.layers,
            "runs": args.runs,
            "quick": args.quick,
        },
        "runtime_s": round(runtime, 1),
        "loadavg_start": load_start,
        "loadavg_end": loadavg(),
        "rss_floor_mib": round(floor, 1),
        "startup": {
            "image_cicd_help_s": round(startup_median, 4),
            "image_cicd_help_samples": [round(s, 4) for s in startup],
            "skopeo_version_s": round(skopeo_startup, 4),
        },
        "same_registry": {
            case: {m: r.as_dict(skopeo_startup) for m, r in results.items()}
            for case, results in (("single", promo_single), ("index", promo_index))
        },
        "cross_registry": {m: r.as_dict(skopeo_startup) for m, r in cross.items()},
        "content_check": _content_report(checked, single.size, skopeo_startup),
        "targets": targets,
        "skopeo_cache": {
            "how": "skopeo run as uid 65534 with XDG_DATA_HOME=<temp dir>"
            if os.geteuid() == 0
            else "XDG_DATA_HOME=<temp dir>",
            "real_root_cache_untouched": real_cache_before == real_cache_after,
        },
    }
    for results in report["same_registry"].values():
        reference = results["skopeo empty cache"]
        for row in results.values():
            row["speedup_copy_vs_skopeo_empty"] = round(reference["copy_s"] / row["copy_s"], 2)
            row["speedup_wall_vs_skopeo_empty"] = round(reference["wall_s"] / row["wall_s"], 2)
            row["rss_ratio_vs_skopeo_empty"] = round(
                row["peak_rss_mib"] / reference["peak_rss_mib"], 2
            )
    reference = report["cross_registry"]["skopeo"]
    for row in report["cross_registry"].values():
        row["speedup_copy_vs_skopeo"] = round(reference["copy_s"] / row["copy_s"], 2)
        row["speedup_wall_vs_skopeo"] = round(reference["wall_s"] / row["wall_s"], 2)
        row["rss_ratio_vs_skopeo"] = round(row["peak_rss_mib"] / reference["peak_rss_mib"], 2)

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print("\n".join(lines))
    print(f"results: {args.output}")
    print(json.dumps(report, separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; registries and proxies stopped", file=sys.stderr)
        sys.exit(130)
