"""Model downloads on top of pooch, adding what pooch lacks.

pooch.retrieve() drives each attempt: it hands our downloader a temporary
file beside the destination, checks the SHA-256 and moves the file to a
staging name (`<file>.download`) only when it matches; we then rename it over
the final name (atomic), so a reader never sees a partial or unverified file
under the model's name. Our downloader adds:

* resumable transfers: bytes go to `<dest>.part`, which survives errors and
  Ctrl-C and is continued with an HTTP Range request next time (restarted
  when the server ignores Range or the file changed upstream);
* mirror fallback: $SWAPCLI_MIRROR first (base URLs, the file name appended),
  then the registry's URLs in order; a network error, an HTTP error or a
  file that fails verification moves on to the next one;
* size and SHA-256 (and, for facefusion assets, the CRC32 in the published
  `<name>.hash` sidecar) checked before the file gets its final name; a
  mismatch deletes the .part;
* a rich progress bar on stderr;
* trust on first use for models without a published hash (`trust_unpinned`):
  the downloaded file's SHA-256 and size are pinned in <user cache>/pins.json;
* unreachable(): a headers-only probe, so that `swapcli models download`
  reports an offline machine as a failed download (exit 4) before it asks
  for consent it would not need.

Everything the user sees as a failure is one ModelError line (exit code 4).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from swapcli.core.errors import ModelError, UsageError
from swapcli.models import locate as _locate
from swapcli.models.locate import Expected, expected_for, user_cache_dir
from swapcli.models.registry import MODELS, ModelSpec

log = logging.getLogger("swapcli")

CHUNK = 1 << 20  # hashing
NET_CHUNK = 1 << 18  # network reads: a dropped connection loses at most this much
CONNECT_TIMEOUT = 15.0
READ_TIMEOUT = 60.0
ATTEMPTS_PER_URL = 3  # resumes of one URL after a dropped connection


@dataclass(frozen=True)
class DownloadResult:
    spec: ModelSpec
    path: Path
    sha256: str
    size: int
    trust: str  # 'registry' | 'pin' (matched an earlier pin) | 'pinned-now' (trust on first use)
    already: bool  # it was installed and verified; nothing was downloaded
    url: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.spec.name, "path": str(self.path), "sha256": self.sha256, "size": self.size,
                "trust": self.trust, "already_installed": self.already, "url": self.url}


class _Failed(Exception):
    """This URL cannot deliver the file (network or HTTP error); try the next one."""


class _Incomplete(Exception):
    """The transfer stopped early; the .part is kept and can be resumed."""


class _Mismatch(ValueError):
    """The downloaded file is not the expected one; its .part was deleted."""


# --- URLs -------------------------------------------------------------------------

def mirror_urls(spec: ModelSpec) -> list[str]:
    """$SWAPCLI_MIRROR: base URLs (comma or space separated), each + '/' + file name."""
    bases = [b for b in re.split(r"[,\s]+", os.environ.get("SWAPCLI_MIRROR", "")) if b]
    return [f"{b.rstrip('/')}/{spec.filename}" for b in bases]


def download_urls(spec: ModelSpec) -> list[str]:
    urls: list[str] = []
    for url in (*mirror_urls(spec), *spec.urls):
        if url not in urls:
            urls.append(url)
    return urls


_FACEFUSION = re.compile(r"^https://(github\.com/facefusion/facefusion-assets/|huggingface\.co/facefusion/|hf-mirror\.com/facefusion/)")


def sidecar_url(url: str) -> str | None:
    """facefusion publishes `<name>.hash` (CRC32, 8 hex digits) beside each asset."""
    if _FACEFUSION.match(url) and url.endswith(".onnx"):
        return url[: -len(".onnx")] + ".hash"
    return None


def _host(url: str) -> str:
    """Host and first path segment (huggingface.co/facefusion vs huggingface.co/hacksider)."""
    parsed = urlparse(url)
    first = parsed.path.strip("/").split("/")[0]
    return f"{parsed.netloc}/{first}" if parsed.netloc and first else (parsed.netloc or url)


def _summary(name: str, failures: list[tuple[str, str]]) -> str:
    reasons = {reason for _, reason in failures}
    if len(reasons) == 1:
        reason = reasons.pop()
        hint = "; check the connection, or set SWAPCLI_MIRROR to a mirror you can reach" if any(
            w in reason for w in ("DNS", "refused", "timed out", "unreachable", "connection")) else ""
        wheres = ", ".join(where for where, _ in failures)
        origin = wheres if len(failures) == 1 else f"all {len(failures)} URLs ({wheres})"
        return f"could not download '{name}': {reason} from {origin}{hint}"
    return f"could not download '{name}' ({len(failures)} URL(s) tried): " + "; ".join(f"{w}: {r}" for w, r in failures)


def _reason(exc: BaseException) -> str:
    text = str(exc)
    lowered = text.lower()
    if any(s in lowered for s in ("name or service not known", "nameresolution", "temporary failure in name resolution",
                                  "nodename nor servname", "getaddrinfo failed", "no address associated")):
        return "DNS lookup failed (offline?)"
    if "connection refused" in lowered or "errno 111" in lowered:
        return "connection refused"
    if "timed out" in lowered or "timeout" in type(exc).__name__.lower():
        return "timed out"
    if "ssl" in lowered or "certificate" in lowered:
        return "TLS error"
    if "network is unreachable" in lowered:
        return "network unreachable (offline?)"
    return f"connection failed ({type(exc).__name__})"


def _timeouts() -> tuple[float, float]:
    try:
        read = float(os.environ.get("SWAPCLI_DOWNLOAD_TIMEOUT", READ_TIMEOUT))
    except ValueError:
        read = READ_TIMEOUT
    return (min(CONNECT_TIMEOUT, read), read)


def unreachable(specs: Iterable[ModelSpec]) -> str | None:
    """Why the first model that cannot be fetched cannot be (offline, DNS, refused, HTTP 404),
    or None when each has a URL that answers.

    Headers only (HEAD), so it is cheap: a question about consent (licence,
    trust on first use) is pointless when nothing could be downloaded anyway,
    and exit 4 (download failed) is then the true answer. A host that failed
    to connect once is not asked again.
    """
    import requests

    dead: dict[str, str] = {}
    with requests.Session() as session:
        session.headers["User-Agent"] = f"swapcli/{_version()} (model download)"
        for spec in specs:
            failures: list[tuple[str, str]] = []
            for url in download_urls(spec):
                netloc = urlparse(url).netloc
                if netloc in dead:
                    failures.append((_host(url), dead[netloc]))
                    continue
                try:
                    response = session.head(url, timeout=_timeouts(), allow_redirects=True)
                except requests.RequestException as exc:
                    dead[netloc] = _reason(exc)
                    failures.append((_host(url), dead[netloc]))
                    continue
                if response.status_code in (404, 410):
                    failures.append((_host(url), f"HTTP {response.status_code} {response.reason or ''}".strip()))
                    continue
                break  # it answers (a server without HEAD says 405/501: it is there all the same)
            else:
                if not failures:
                    return f"no download URL is known for '{spec.name}'"
                return _summary(spec.name, failures)
    return None


# --- resume state (kept in the user cache so the destination holds only <file>.part) ---

def _partial_store() -> Path:
    return user_cache_dir() / "partial.json"


def _partial_get(part: Path) -> dict[str, Any]:
    entry = _locate._read_json(_partial_store()).get(str(part.resolve()))
    return entry if isinstance(entry, dict) else {}


def _partial_set(part: Path, entry: dict[str, Any] | None) -> None:
    try:
        data = _locate._read_json(_partial_store())
        key = str(part.resolve())
        if entry is None:
            if data.pop(key, None) is None:
                return
        else:
            data[key] = entry
        _locate._write_json(_partial_store(), data)
    except OSError:
        pass


# --- progress ---------------------------------------------------------------------

@contextlib.contextmanager
def _progress(enabled: bool, label: str) -> Iterator[Callable[[int, int | None], None]]:
    """yields update(done_bytes, total_bytes) drawing a rich bar on stderr."""
    if not enabled:
        yield lambda done, total: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task(label, total=None)
        yield lambda done, total: progress.update(task, completed=done, total=total)


# --- the downloader pooch calls ------------------------------------------------------

def _lock(handle) -> None:
    try:
        import fcntl
    except ImportError:  # Windows: no advisory lock
        return
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        raise ModelError(f"{handle.name} is being written by another swapcli process; wait for it to finish") from exc


def _parse_content_range(value: str | None) -> tuple[int, int | None] | None:
    match = re.match(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", value or "")
    if not match:
        return None
    return int(match.group(1)), (None if match.group(3) == "*" else int(match.group(3)))


def _hash_file(path: Path) -> tuple[str, str]:
    import hashlib

    sha, crc = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            sha.update(block)
            crc = zlib.crc32(block, crc)
    return sha.hexdigest(), format(crc & 0xFFFFFFFF, "08x")


class _ResumableDownloader:
    """pooch downloader: fill `<dest>.part` (resuming), verify, hand it to pooch."""

    def __init__(self, spec: ModelSpec, part: Path, expected: Expected | None, progress: bool) -> None:
        import requests

        self.spec, self.part, self.expected, self.progress = spec, part, expected, progress
        self.session = requests.Session()
        self.session.headers["User-Agent"] = f"swapcli/{_version()} (model download)"
        self.session.headers["Accept-Encoding"] = "identity"  # byte ranges of the file itself
        self.sha256: str | None = None
        self.size = 0

    def __call__(self, url: str, output_file: str, pooch: Any) -> None:
        fd = os.open(self.part, os.O_RDWR | os.O_CREAT, 0o666)
        locked = False
        try:
            with os.fdopen(fd, "r+b") as handle:
                _lock(handle)
                locked = True
                for attempt in range(ATTEMPTS_PER_URL):
                    try:
                        self._fetch(url, handle)
                        break
                    except _Incomplete as exc:
                        if attempt == ATTEMPTS_PER_URL - 1:
                            raise _Failed(f"{exc} (kept {self.part.name} to resume)") from exc
                        log.info("%s: %s; resuming", _host(url), exc)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            # An empty .part (nothing received) is no resume point: leave no litter.
            with contextlib.suppress(OSError):
                if locked and self.part.stat().st_size == 0:
                    self.part.unlink()
                    _partial_set(self.part, None)
            raise
        self._check(url)
        os.replace(self.part, output_file)  # pooch checks the hash again, then renames it into place
        _partial_set(self.part, None)

    def _restart(self, handle) -> None:
        handle.seek(0)
        handle.truncate(0)
        _partial_set(self.part, None)

    def _fetch(self, url: str, handle) -> None:
        import requests

        have = os.fstat(handle.fileno()).st_size
        meta = _partial_get(self.part)
        same_origin = meta.get("url") == url
        want = self.expected.size if self.expected else None
        # Bytes of unknown origin may only be continued when a known hash checks the result.
        if have and not (same_origin or self.expected):
            self._restart(handle)
            have = 0
        if want is not None and have > want:
            self._restart(handle)
            have = 0
        total_known = want or (meta.get("total") if same_origin else None)
        if have and total_known and have == total_known:
            return  # complete already: verify it
        headers = {}
        if have:
            headers["Range"] = f"bytes={have}-"
            validator = (meta.get("etag") or meta.get("last_modified")) if same_origin else None
            if validator:
                headers["If-Range"] = validator
        try:
            response = self.session.get(url, headers=headers, stream=True, timeout=_timeouts(), allow_redirects=True)
        except requests.RequestException as exc:
            raise _Failed(_reason(exc)) from exc
        with response:
            if response.status_code == 416 and have:
                # Range not satisfiable: what we hold is no prefix of this file.
                self._restart(handle)
                raise _Incomplete("the server refused to resume; restarting")
            if response.status_code == 206 and have:
                span = _parse_content_range(response.headers.get("Content-Range"))
                if span is None or span[0] != have:
                    self._restart(handle)
                    raise _Incomplete("the server answered another byte range; restarting")
                total = span[1]
                handle.seek(0, os.SEEK_END)
                log.info("resuming %s at %.1f MB", self.spec.filename, have / 1e6)
            elif response.status_code == 200:
                if have:
                    log.info("%s ignored the resume request; downloading %s from the start", _host(url), self.spec.filename)
                self._restart(handle)
                have = 0
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
            else:
                raise _Failed(f"HTTP {response.status_code} {response.reason or ''}".strip())
            if want is not None and total is not None and total != want:
                self._restart(handle)
                raise _Mismatch(f"{_host(url)} serves {total} bytes, expected {want}")
            _partial_set(self.part, {"url": url, "total": total, "etag": response.headers.get("ETag"),
                                     "last_modified": response.headers.get("Last-Modified")})
            done = have
            with _progress(self.progress, self.spec.filename) as update:
                update(done, total)
                try:
                    for block in response.iter_content(NET_CHUNK):
                        handle.write(block)
                        done += len(block)
                        update(done, total)
                except requests.RequestException as exc:  # (an OSError subclass: test it first)
                    handle.flush()
                    raise _Incomplete(f"connection dropped at {done} of {total or '?'} bytes") from exc
                except (ConnectionError, TimeoutError) as exc:
                    handle.flush()
                    raise _Incomplete(f"connection dropped at {done} of {total or '?'} bytes") from exc
            handle.flush()
            if total is not None and done < total:
                raise _Incomplete(f"connection closed at {done} of {total} bytes")

    def _check(self, url: str) -> None:
        size = self.part.stat().st_size
        problem = None
        if self.expected and self.expected.size is not None and size != self.expected.size:
            problem = f"{size} bytes, expected {self.expected.size}"
        else:
            sha, crc = _hash_file(self.part)
            if self.expected and sha != self.expected.sha256:
                problem = f"SHA-256 {sha[:16]}... does not match {self.expected.where}"
            else:
                published = self._sidecar_crc32(url)
                if published and published != crc:
                    problem = f"CRC32 {crc} differs from the published {published}"
            self.sha256, self.size = sha, size
        if problem:
            with contextlib.suppress(OSError):
                self.part.unlink()
            _partial_set(self.part, None)
            raise _Mismatch(f"{self.spec.filename} from {_host(url)}: {problem}; deleted it")

    def _sidecar_crc32(self, url: str) -> str | None:
        side = sidecar_url(url)
        if not side:
            return None
        import requests

        try:
            response = self.session.get(side, timeout=(CONNECT_TIMEOUT, 20), allow_redirects=True)
        except requests.RequestException as exc:
            log.debug("no CRC32 sidecar from %s: %s", side, exc)
            return None
        text = response.text.strip().lower() if response.status_code == 200 else ""
        return text if re.fullmatch(r"[0-9a-f]{8}", text) else None


def _version() -> str:
    from swapcli import __version__

    return __version__


def _apply_umask(path: Path) -> None:
    mask = os.umask(0)
    os.umask(mask)
    with contextlib.suppress(OSError):
        os.chmod(path, 0o666 & ~mask)


# --- the public entry point -------------------------------------------------------------

def download(name: str, weights_dir: str | os.PathLike[str] | None = None, *, trust_unpinned: bool = False,
             progress: bool = True, force: bool = False) -> DownloadResult:
    """Download one registry model into `weights_dir` (default: the user cache), verified.

    Raises UsageError for an unknown name or an unpinned model without
    `trust_unpinned`, ModelError when no URL delivers a verified file.
    KeyboardInterrupt leaves only `<file>.part`, resumed by the next call.
    """
    spec = MODELS.get(name)
    if spec is None:
        raise UsageError(f"unknown model '{name}' (see `swapcli models list`)")
    expected = expected_for(spec)
    if expected is None and not trust_unpinned:
        raise UsageError(f"model '{name}' has no published SHA-256; pass --trust-unpinned to download it "
                         f"and pin the hash of what you get (trust on first use)")
    if not force:
        found = _locate.is_installed(name, weights_dir)
        if found is not None:
            return DownloadResult(spec, found.path, _locate.cached_sha256(found.path) or "", found.path.stat().st_size,
                                  found.trust, True)
    dest_dir = Path(weights_dir) if weights_dir else user_cache_dir()
    final = dest_dir / spec.filename
    if final.exists() and expected is None:
        raise ModelError(f"{final} exists but is not pinned; `swapcli models pin {name}` to trust it, "
                         f"or delete it to download a fresh copy")
    urls = download_urls(spec)
    if not urls:
        raise ModelError(f"no download URL is known for '{name}'; put {spec.filename} in {dest_dir} "
                         f"(or set SWAPCLI_MIRROR to a folder URL that has it)")
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(f"cannot create {dest_dir}: {exc.strerror or exc}") from exc

    import pooch

    pooch.get_logger().setLevel(logging.WARNING)
    part = final.with_name(final.name + ".part")
    staging = final.with_name(final.name + ".download")  # pooch's target; never a stale one
    with contextlib.suppress(FileNotFoundError):
        staging.unlink()
    downloader = _ResumableDownloader(spec, part, expected, progress)
    known = f"sha256:{expected.sha256}" if expected else None
    failures: list[tuple[str, str]] = []
    used = None
    try:
        for index, url in enumerate(urls):
            log.info("downloading %s from %s", spec.filename, _host(url))
            try:
                pooch.retrieve(url, known_hash=known, fname=staging.name, path=dest_dir,
                               downloader=downloader, progressbar=False)
            except (_Failed, _Mismatch, ValueError) as exc:
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                failures.append((_host(url), reason))
                if index + 1 < len(urls):
                    log.warning("%s: %s; trying the next mirror", _host(url), reason)
                continue
            used = url
            break
    except KeyboardInterrupt:
        if part.exists() and part.stat().st_size:
            log.warning("interrupted; kept %s (%.1f MB), run the same command again to resume", part, part.stat().st_size / 1e6)
        raise
    except OSError as exc:  # local: unwritable destination, disk full (the .part is kept)
        raise ModelError(f"cannot write {part}: {exc.strerror or exc}") from exc
    finally:
        downloader.session.close()
    if used is None:
        raise ModelError(_summary(name, failures))

    _apply_umask(staging)
    os.replace(staging, final)
    st = final.stat()
    sha = downloader.sha256 or _locate.sha256_file(final)
    if expected is None:
        pin_file = _locate.save_pin(spec, sha, st.st_size, url=used, path=final)
        log.warning("PINNED '%s' on first use: sha256 %s, %d bytes, from %s (recorded in %s). No published hash "
                    "exists for it: compare this hash with a source you trust.", name, sha, st.st_size, used, pin_file)
        trust = "pinned-now"
    else:
        trust = expected.trust
    _locate.record_verified(final, sha, st)
    shadow = _locate.find_file(name, weights_dir)
    if shadow is not None and shadow[1].resolve() != final.resolve():
        log.warning("%s (from %s) is found before the downloaded copy; delete it if it is not the file you want",
                    shadow[1], shadow[0])
    return DownloadResult(spec, final, sha, st.st_size, trust, False, used)


def describe_licence(spec: ModelSpec) -> str:
    from swapcli.models.registry import commercial_use_ok

    tag = "" if commercial_use_ok(spec) else " [not cleared for commercial use]"
    return f"{spec.name}: licence: {spec.licence}{tag}"


__all__ = ["DownloadResult", "describe_licence", "download", "download_urls", "mirror_urls", "sidecar_url", "unreachable"]

