"""Downloads of the data files that have a public URL: resumable, checked, never half-written.

`fetch(name)` puts a registered file into the download cache (`$ATOM_TF_DOWNLOADS`, default
`~/.cache/atom_tf/downloads`) and returns its path. A transfer goes to `<file>.part`, resumes
from there with an HTTP Range request, is checked against the expected size and SHA-256, and
only then replaces the final name: a file that was there and good is never touched, and an
interrupted or corrupt transfer never takes its place.
"""

from __future__ import annotations

import dataclasses
import http.client
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable

from atom_tf.errors import UserError
from atom_tf.files import atomic_write_json, check_record, read_json
from atom_tf.files import sha256_of_file as sha256_of
from atom_tf.registry import Registry


class DownloadError(UserError):
    """A download that could not complete; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class RemoteFile:
    """A public file. Without a published `sha256`, `check` (path -> None, raising
    DownloadError) vets a transfer's content before it takes the final name, and the SHA-256
    of the first good copy is recorded beside it (`<file>.sha256.json`) and enforced after."""

    name: str
    url: str
    filename: str
    sha256: str | None = None
    check: Callable[[str], None] | None = None


REMOTE_FILES: Registry[RemoteFile] = Registry(
    "downloadable file", builtins=("atom_tf.data.outlier_pools",)
)


def register_remote_file(remote: RemoteFile) -> RemoteFile:
    return REMOTE_FILES.register(remote.name)(remote)


def download_dir() -> str:
    return os.environ.get("ATOM_TF_DOWNLOADS") or os.path.join(
        os.path.expanduser("~"), ".cache", "atom_tf", "downloads"
    )


def fetch(name: str, progress: bool = True) -> str:
    """The local path of registered file `name`, downloaded first if it is not there."""
    remote = REMOTE_FILES.get(name)
    dest = os.path.join(download_dir(), remote.filename)
    if remote.sha256 is None and os.path.exists(dest):
        return check_recorded_digest(dest)
    path = download(remote.url, dest, remote.sha256, progress=progress, label=name,
                    check=remote.check)  # fmt: skip
    if remote.sha256 is None:
        record_digest(path)
    return path


def _digest_record_path(path: str) -> str:
    return f"{path}.sha256.json"


def record_digest(path: str, digest: str | None = None) -> str:
    """Records the SHA-256, size and modification time of a good copy beside it."""
    st = os.stat(path)
    record = {"sha256": digest or sha256_of(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    atomic_write_json(_digest_record_path(path), record)
    return record["sha256"]


def check_recorded_digest(path: str) -> str:
    """A downloaded file must still be the copy whose SHA-256 was recorded when it first
    arrived (hashed again only when its size or modification time moved); a file found
    without a record is recorded as it is."""
    record_path = _digest_record_path(path)
    if not os.path.exists(record_path):
        record_digest(path)
        return path
    hint = f"delete {path} and {record_path} to download it again"
    record = check_record(record_path, read_json(record_path, hint=hint),
                          {"sha256": str, "size": int, "mtime_ns": int}, hint)  # fmt: skip
    st = os.stat(path)
    if (st.st_size, st.st_mtime_ns) == (record["size"], record["mtime_ns"]):
        return path
    digest = sha256_of(path)
    if digest != record["sha256"]:
        raise DownloadError(
            f"{path} changed since its first good download (SHA-256 {digest[:16]}…, recorded "
            f"{record['sha256'][:16]}… in {record_path}); {hint}"
        )
    record_digest(path, digest)  # touched, not changed
    return path


def check_content_range(header: str | None, have: int, url: str, part: str) -> int | None:
    """The total size a 206 answer announces, after checking that it continues the partial
    file at byte `have` (`Content-Range: bytes have-END/TOTAL`); a range that does not fit
    removes the part file, so the next run starts from zero."""
    match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", (header or "").strip())
    if match is None or int(match[1]) != have or int(match[2]) < have:
        os.remove(part)
        raise DownloadError(
            f"{url} answered a resumed request with Content-Range {header!r}, which does not "
            f"continue the {have:,} bytes already here; the partial file was removed: run the "
            "same command again to download from the start"
        )
    return None if match[3] == "*" else int(match[3])


class _Progress:
    """One self-overwriting line on stderr, at most ten updates a second."""

    def __init__(self, label: str, total: int | None, done: int, enabled: bool) -> None:
        self.label, self.total, self.enabled = label, total, enabled
        self.start_done, self.start, self.last = done, time.perf_counter(), 0.0

    def update(self, done: int, final: bool = False) -> None:
        now = time.perf_counter()
        if not self.enabled or (not final and now - self.last < 0.1):
            return
        self.last = now
        rate = (done - self.start_done) / max(now - self.start, 1e-9) / 1e6
        size = f" / {self.total / 1e6:.1f} MB ({done / self.total:.0%})" if self.total else " MB"
        end = "\n" if final else ""
        sys.stderr.write(
            f"\rdownloading {self.label}: {done / 1e6:.1f}{size}, {rate:.1f} MB/s{end}"
        )
        sys.stderr.flush()


def download(
    url: str,
    dest: str,
    sha256: str | None = None,
    progress: bool = True,
    label: str | None = None,
    timeout: float = 60.0,
    chunk: int = 1 << 20,
    check: Callable[[str], None] | None = None,
) -> str:
    """Downloads `url` to `dest` (resuming `dest.part`), checks it (`sha256`, then `check` on
    the finished transfer), and returns `dest`."""
    label = label or os.path.basename(dest)
    if os.path.exists(dest) and (sha256 is None or sha256_of(dest) == sha256):
        return dest
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    part = f"{dest}.part"
    have = os.path.getsize(part) if os.path.exists(part) else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    host = urllib.parse.urlsplit(url).netloc
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # the part file is already complete
            return _finish(part, dest, sha256, url, have, check)
        raise DownloadError(
            f"{url} answered HTTP {err.code} ({err.reason}); check the address"
        ) from err
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(
            f"cannot reach {host} ({reason}); check the network, or download {url} yourself "
            f"to {dest}"
        ) from err
    with response:
        resumed = response.status == 206
        length = response.headers.get("Content-Length")
        expected = (have if resumed else 0) + int(length) if length is not None else None
        if resumed:
            total = check_content_range(response.headers.get("Content-Range"), have, url, part)
            expected = total if total is not None else expected
        done = have if resumed else 0
        bar = _Progress(label, expected, done, progress)
        try:
            with open(part, "ab" if resumed else "wb") as f:
                while block := response.read(chunk):
                    f.write(block)
                    done += len(block)
                    bar.update(done)
        except (
            OSError,
            ValueError,
            http.client.HTTPException,
        ) as err:  # reset, short read, timeout
            raise DownloadError(
                f"the transfer of {url} broke off at {done:,} bytes ({type(err).__name__}); run "
                "the same command again to resume"
            ) from err
        bar.update(done, final=True)
    if expected is not None and done < expected:
        raise DownloadError(
            f"the transfer of {url} stopped at {done:,} of {expected:,} bytes; run the same "
            "command again to resume"
        )
    return _finish(part, dest, sha256, url, done, check)


def _finish(
    part: str, dest: str, sha256: str | None, url: str, size: int,
    check: Callable[[str], None] | None = None,
) -> str:  # fmt: skip
    if sha256 is not None:
        got = sha256_of(part)
        if got != sha256:
            os.remove(part)
            raise DownloadError(
                f"{url} arrived with SHA-256 {got[:16]}…, expected {sha256[:16]}… ({size:,} "
                "bytes); the partial file was removed: run again, or get the file another way"
            )
    if check is not None:
        try:
            check(part)
        except UserError as err:
            os.remove(part)
            raise DownloadError(
                f"{url} arrived but is not the expected file ({err}); the partial file was "
                "removed: run again, or get the file another way"
            ) from err
    os.replace(part, dest)
    return dest
