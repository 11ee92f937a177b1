"""Downloads of the data files that have a public URL: resumable, checked, never half-written.

`fetch(name)` puts a registered file into the download cache (`$ATOM_TF_DOWNLOADS`, default
`~/.cache/atom_tf/downloads`) and returns its path. A transfer goes to `<file>.part`, resumes
from there with an HTTP Range request, is checked against the expected size and SHA-256, and
only then replaces the final name: a file that was there and good is never touched, and an
interrupted or corrupt transfer never takes its place.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from atom_tf.errors import UserError
from atom_tf.registry import Registry


class DownloadError(UserError):
    """A download that could not complete; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class RemoteFile:
    name: str
    url: str
    filename: str
    sha256: str | None = None  # None: not pinned (the loader checks the content instead)


REMOTE_FILES: Registry[RemoteFile] = Registry("downloadable file")


def register_remote_file(remote: RemoteFile) -> RemoteFile:
    return REMOTE_FILES.register(remote.name)(remote)


# Outlier Exposure's 300K random images (Hendrycks et al., 2019): 300,000 × 32 × 32 × 3 uint8.
register_remote_file(
    RemoteFile(
        "tiny_images_300k",
        "https://people.eecs.berkeley.edu/~hendrycks/300K_random_images.npy",
        "300K_random_images.npy",
    )
)


def download_dir() -> str:
    return os.environ.get("ATOM_TF_DOWNLOADS") or os.path.join(
        os.path.expanduser("~"), ".cache", "atom_tf", "downloads"
    )


def fetch(name: str, progress: bool = True) -> str:
    """The local path of registered file `name`, downloaded first if it is not there."""
    remote = REMOTE_FILES.get(name)
    dest = os.path.join(download_dir(), remote.filename)
    return download(remote.url, dest, remote.sha256, progress=progress, label=name)


def sha256_of(path: str, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


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
) -> str:
    """Downloads `url` to `dest` (resuming `dest.part`), checks it, and returns `dest`."""
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
            return _finish(part, dest, sha256, url, have)
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
    return _finish(part, dest, sha256, url, done)


def _finish(part: str, dest: str, sha256: str | None, url: str, size: int) -> str:
    if sha256 is not None:
        got = sha256_of(part)
        if got != sha256:
            os.remove(part)
            raise DownloadError(
                f"{url} arrived with SHA-256 {got[:16]}…, expected {sha256[:16]}… ({size:,} "
                "bytes); the partial file was removed: run again, or get the file another way"
            )
    os.replace(part, dest)
    return dest
