"""The downloader against an HTTP server on 127.0.0.1: a good transfer, a truncated one that
resumes, a wrong checksum, a server that is gone; a good file is never overwritten."""

import hashlib
import http.server
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from atom_tf.data import download as dl
from atom_tf.data.download import DownloadError, download

PAYLOAD = np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD at any path with Range support; `server.cut` stops a body early;
    `server.range_shift` moves the Content-Range it announces (None: leaves it out)."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        start = 0
        if rng := self.headers.get("Range"):
            start = int(rng.removeprefix("bytes=").split("-")[0])
        # Recorded before any byte of the answer leaves: a client that rejects the headers
        # may send its next request before this thread would get past end_headers().
        self.server.requests.append(start)
        if rng:
            if start >= len(PAYLOAD):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            if self.server.range_shift is not None:
                first = start + self.server.range_shift
                self.send_header(
                    "Content-Range", f"bytes {first}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}"
                )
        else:
            self.send_response(200)
        body = PAYLOAD[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = self.server.cut
        self.wfile.write(body[:cut] if cut is not None else body)
        if cut is not None:
            self.server.cut = None  # only the first transfer breaks
            self.close_connection = True


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.cut, httpd.requests, httpd.range_shift = None, [], 0
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def url(server):
    return f"http://127.0.0.1:{server.server_address[1]}/300K_random_images.npy"


def test_good_download_is_checked_and_not_repeated(server, tmp_path):
    dest = tmp_path / "f.npy"
    assert download(url(server), str(dest), SHA, progress=False) == str(dest)
    assert dest.read_bytes() == PAYLOAD and not (tmp_path / "f.npy.part").exists()
    download(url(server), str(dest), SHA, progress=False)
    assert server.requests == [0]  # the good file was not fetched again


def test_truncated_transfer_keeps_the_part_and_resumes(server, tmp_path, capsys):
    dest = tmp_path / "f.npy"
    server.cut = 100_000
    with pytest.raises(DownloadError, match="run the same command again to resume"):
        download(url(server), str(dest), SHA, progress=True)
    assert not dest.exists() and (tmp_path / "f.npy.part").stat().st_size == 100_000
    download(url(server), str(dest), SHA, progress=True)
    assert server.requests == [0, 100_000]  # the second request asked for the rest only
    assert dest.read_bytes() == PAYLOAD
    assert "downloading f.npy: 0.3 / 0.3 MB (100%)" in capsys.readouterr().err


def test_wrong_checksum_writes_nothing_where_a_good_file_was(server, tmp_path):
    dest = tmp_path / "f.npy"
    with pytest.raises(DownloadError, match="expected 0000000000000000"):
        download(url(server), str(dest), "0" * 64, progress=False)
    assert not dest.exists() and not (tmp_path / "f.npy.part").exists()
    good = b"the good file"
    dest.write_bytes(good)
    with pytest.raises(DownloadError, match="SHA-256"):
        download(url(server), str(dest), "0" * 64, progress=False)  # it does not match either
    assert dest.read_bytes() == good


def test_a_server_that_is_gone_fails_in_one_line(server, tmp_path):
    address = url(server)
    server.shutdown()
    server.server_close()
    with pytest.raises(
        DownloadError, match=r"cannot reach 127\.0\.0\.1:\d+ .*download .* yourself"
    ) as err:
        download(address, str(tmp_path / "f.npy"), SHA, progress=False, timeout=5)
    assert "\n" not in str(err.value) and not (tmp_path / "f.npy").exists()


def test_pool_download_goes_to_the_cache_and_loads(server, tmp_path, monkeypatch):
    images = np.random.default_rng(1).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    np.save(tmp_path / "pool.npy", images)
    monkeypatch.setattr(f"{__name__}.PAYLOAD", (tmp_path / "pool.npy").read_bytes())
    monkeypatch.setenv("ATOM_TF_DOWNLOADS", str(tmp_path / "cache"))
    remote = dl.REMOTE_FILES.get("tiny_images_300k")
    monkeypatch.setitem(dl.REMOTE_FILES._items, "tiny_images_300k",
                        dl.RemoteFile("tiny_images_300k", url(server), remote.filename))  # fmt: skip
    from atom_tf.data import load_pool

    with pytest.raises(Exception, match="--download"):
        load_pool("tiny_images_300k", download=False)
    pool = load_pool("tiny_images_300k", download=True)
    assert np.array_equal(pool.read(0, 20), images)
    assert os.path.exists(tmp_path / "cache" / remote.filename)


@pytest.mark.parametrize("shift", [None, 1000])
def test_a_resumed_answer_must_continue_the_partial_file(server, tmp_path, shift):
    dest = tmp_path / "f.npy"
    server.cut = 100_000
    with pytest.raises(DownloadError):
        download(url(server), str(dest), SHA, progress=False)
    server.range_shift = shift  # no Content-Range, or one that starts elsewhere
    with pytest.raises(DownloadError, match="does not continue the 100,000 bytes"):
        download(url(server), str(dest), SHA, progress=False)
    assert not (tmp_path / "f.npy.part").exists()
    server.range_shift = 0
    assert download(url(server), str(dest), SHA, progress=False) == str(dest)
    assert dest.read_bytes() == PAYLOAD and server.requests[-1] == 0  # from the start


def serve_pool(server, monkeypatch, tmp_path, images, check=True):
    """The registered 300K file served by the test server (its content check kept)."""
    from atom_tf.data import outlier_pools

    np.save(tmp_path / "served.npy", images)
    data = (tmp_path / "served.npy").read_bytes()
    monkeypatch.setattr(f"{__name__}.PAYLOAD", data)
    monkeypatch.setattr(outlier_pools, "TINY_300K_IMAGES", 400)
    monkeypatch.setenv("ATOM_TF_DOWNLOADS", str(tmp_path / "cache"))
    remote = dl.REMOTE_FILES.get("tiny_images_300k")
    monkeypatch.setitem(dl.REMOTE_FILES._items, "tiny_images_300k",
                        dl.RemoteFile("tiny_images_300k", url(server), remote.filename,
                                      check=remote.check if check else None))  # fmt: skip
    return tmp_path / "cache" / remote.filename


@pytest.mark.parametrize("bad", ["blank", "repeated", "other_count"])
def test_the_300k_download_is_checked_beyond_its_header(server, tmp_path, monkeypatch, bad):
    """No SHA-256 is published for it: shape, exact size and 1,000 sampled images decide."""
    from atom_tf.data import load_pool

    images = np.random.default_rng(1).integers(0, 256, (400, 32, 32, 3), dtype=np.uint8)
    images = {"blank": np.zeros_like(images), "repeated": np.repeat(images[:1], 400, 0),
              "other_count": images[:399]}[bad]  # fmt: skip
    dest = serve_pool(server, monkeypatch, tmp_path, images)
    with pytest.raises(DownloadError, match="is not the expected file"):
        load_pool("tiny_images_300k", download=True)
    assert not dest.exists() and not os.path.exists(f"{dest}.part")


def test_the_first_good_300k_download_is_recorded_and_enforced(server, tmp_path, monkeypatch):
    from atom_tf.data import load_pool

    images = np.random.default_rng(1).integers(0, 256, (400, 32, 32, 3), dtype=np.uint8)
    dest = serve_pool(server, monkeypatch, tmp_path, images)
    assert np.array_equal(load_pool("tiny_images_300k", download=True).read(0, 400), images)
    record = json.loads(Path(f"{dest}.sha256.json").read_text())
    assert record["sha256"] == hashlib.sha256(dest.read_bytes()).hexdigest()
    assert len(load_pool("tiny_images_300k", download=False)) == 400  # unchanged: accepted
    data = bytearray(dest.read_bytes())
    data[-5] ^= 0xFF  # one pixel changed on disk
    dest.write_bytes(bytes(data))
    for download_flag in (True, False):
        with pytest.raises(DownloadError, match="changed since its first good download"):
            load_pool("tiny_images_300k", download=download_flag)
    assert server.requests == [0]
