"""training.fetch against a local HTTP server on 127.0.0.1 (Range support) with stand-in files.

No test contacts any other address: every base URL points at the local server, and the
environment's defaults are pointed at a closed local port in case one is forgotten.
"""

import dataclasses
import hashlib
import io
import json
import os
import socket
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from training import assets, fetch
from training.fetch import FetchError


class _Handler(BaseHTTPRequestHandler):
    files: dict = {}
    cut: dict = {}        # path -> bytes sent before the connection drops (once)
    ignore_range = False
    log: list = []

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        rng = self.headers.get("Range")
        type(self).log.append((self.path, rng))
        data = self.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        if rng and not self.ignore_range:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
        body = data[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        n = self.cut.pop(self.path, None)
        self.wfile.write(body if n is None else body[:n])
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture(autouse=True)
def _no_internet(monkeypatch):
    for env in assets.URL_ENV.values():
        monkeypatch.setenv(env, "http://127.0.0.1:9/unused")


@pytest.fixture
def server():
    handler = type("H", (_Handler,), {"files": {}, "cut": {}, "log": [], "ignore_range": False})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    handler.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield handler
    httpd.shutdown()
    httpd.server_close()


def _blob(n, seed=0):
    return bytes((i * 131 + seed * 7 + (i >> 8)) % 251 for i in range(n))


def _quiet(_msg):
    pass


def test_resume_after_interrupted_download(server, tmp_path):
    data = _blob(300_000)
    server.files["/robust/resnet18_l2_eps3.ckpt"] = data
    server.cut["/robust/resnet18_l2_eps3.ckpt"] = 120_000
    urls = {"robust": server.url + "/robust/{file}"}
    with pytest.raises(FetchError, match="run the same command again to resume"):
        fetch.fetch(["robust-l2-eps3"], tmp_path, urls, progress=False, log=_quiet)
    part = tmp_path / "resnet18_l2_eps3.ckpt.part"
    assert part.stat().st_size == 120_000
    assert not (tmp_path / "resnet18_l2_eps3.ckpt").exists()

    out = fetch.fetch(["robust-l2-eps3"], tmp_path, urls, progress=False, log=_quiet)
    path = out["robust-l2-eps3"]
    assert open(path, "rb").read() == data
    assert server.log[-1] == ("/robust/resnet18_l2_eps3.ckpt", "bytes=120000-")
    assert not part.exists()
    # no published hash: the first download's SHA-256 is recorded and checked from then on
    digest = hashlib.sha256(data).hexdigest()
    assert open(path + ".sha256").read().split()[0] == digest
    assert assets.verify("robust-l2-eps3", path) == digest

    n = len(server.log)
    fetch.fetch(["robust-l2-eps3"], tmp_path, urls, progress=False, log=_quiet)  # idempotent
    assert len(server.log) == n

    with open(path, "r+b") as f:  # a later change of the file is caught
        f.write(b"X")
    with pytest.raises(assets.AssetError, match="does not match"):
        fetch.fetch(["robust-l2-eps3"], tmp_path, urls, progress=False, log=_quiet)


def test_server_without_range_restarts(server, tmp_path):
    data = _blob(50_000, seed=1)
    server.files["/m/resnet18_l2_eps0.5.ckpt"] = data
    server.ignore_range = True
    (tmp_path / "resnet18_l2_eps0.5.ckpt.part").write_bytes(b"garbage that is not the start")
    fetch.fetch(["robust-l2-eps0.5"], tmp_path, {"robust": server.url + "/m/{file}"}, progress=False, log=_quiet)
    assert (tmp_path / "resnet18_l2_eps0.5.ckpt").read_bytes() == data


def test_torchvision_hash_prefix(server, tmp_path, monkeypatch):
    data = _blob(40_000, seed=2)
    server.files["/models/resnet18-f37072fd.pth"] = data
    urls = {"torchvision": server.url + "/models"}
    # a stand-in file cannot have the real prefix f37072fd: refused and removed
    with pytest.raises(FetchError, match="not the expected file"):
        fetch.fetch(["imagenet"], tmp_path, urls, progress=False, log=_quiet)
    assert not any(tmp_path.iterdir())
    # the same code with the registry expecting the stand-in's prefix
    prefix = hashlib.sha256(data).hexdigest()[:8]
    monkeypatch.setitem(assets.REGISTRY, "imagenet", dataclasses.replace(assets.REGISTRY["imagenet"], sha256=prefix))
    path = fetch.fetch(["imagenet"], tmp_path, urls, progress=False, log=_quiet)["imagenet"]
    assert path == str(tmp_path / "resnet18-f37072fd.pth")
    assert not os.path.exists(path + ".sha256")  # published hash: nothing recorded


def test_offline_gives_one_clear_line(tmp_path, capsys):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(FetchError, match="no network") as err:
        fetch.fetch(["imagenet"], tmp_path, {"torchvision": url}, progress=False, log=_quiet)
    assert f"{url}/resnet18-f37072fd.pth" in str(err.value)
    rc = fetch.main(["maskrcnn-coco", "--dir", str(tmp_path), "--torchvision-url", url, "--no-progress"])
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err_lines) == 1
    assert "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth" in err_lines[0] and "no network" in err_lines[0]


def test_http_error_names_url(server, tmp_path):
    with pytest.raises(FetchError, match="HTTP 404") as err:
        fetch.fetch(["robust-l2-eps1"], tmp_path, {"robust": server.url + "/{file}"}, progress=False, log=_quiet)
    assert "/resnet18_l2_eps1.ckpt" in str(err.value)


def _zip_bytes(members):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _tar_bytes(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _record(server, rid, files, bad_md5=()):
    entries = []
    for key, data in files.items():
        path = f"/api/records/{rid}/files/{key}/content"
        server.files[path] = data
        md5 = "0" * 32 if key in bad_md5 else hashlib.md5(data).hexdigest()
        entries.append({"key": key, "size": len(data), "checksum": f"md5:{md5}",
                        "links": {"self": server.url + path}})
    server.files[f"/api/records/{rid}"] = json.dumps({"id": rid, "files": entries}).encode()


def test_zenodo_record_download_check_unpack(server, tmp_path):
    archive = _zip_bytes({"C-CCM/C1/a.png": b"png1", "C-CCM/C3/b.png": b"png2"})
    _record(server, 4642577, {"C-CCM.zip": archive, "README.txt": b"read me"})
    urls = {"zenodo": server.url + "/api"}
    folder = fetch.fetch(["c-ccm"], tmp_path, urls, progress=False, log=_quiet)["c-ccm"]
    assert folder == str(tmp_path / "c-ccm")
    assert (tmp_path / "c-ccm/C-CCM/C1/a.png").read_bytes() == b"png1"
    assert (tmp_path / "c-ccm/README.txt").read_bytes() == b"read me"
    assert not (tmp_path / "c-ccm/C-CCM.zip").exists()  # unpacked, then removed
    state = json.load(open(tmp_path / "c-ccm" / assets.FETCHED_FILE))
    assert state["files"]["C-CCM.zip"]["unpacked"] and not state["files"]["README.txt"]["unpacked"]
    assert assets.resolve("c-ccm", tmp_path) == folder
    assets.verify("c-ccm", folder)
    n = len(server.log)
    fetch.fetch(["c-ccm"], tmp_path, urls, progress=False, log=_quiet)  # idempotent, offline-safe
    assert len(server.log) == n

    (tmp_path / "c-ccm/README.txt").write_bytes(b"changed")
    with pytest.raises(assets.AssetError, match="MD5"):
        assets.verify("c-ccm", folder)


def test_zenodo_tar_and_bad_md5(server, tmp_path):
    models = _tar_bytes({"models/S1_AT-FT.pth": b"weights"})
    _record(server, 4518951, {"models.tar.gz": models, "extra.bin": b"x" * 10}, bad_md5={"extra.bin"})
    urls = {"zenodo": server.url + "/api"}
    with pytest.raises(FetchError, match="MD5"):
        fetch.fetch(["authors-models"], tmp_path, urls, progress=False, log=_quiet, keep_archives=True)
    # what finished before the failure stays done
    assert (tmp_path / "authors-models/models/S1_AT-FT.pth").read_bytes() == b"weights"
    assert (tmp_path / "authors-models/models.tar.gz").exists()  # keep_archives
    assert not (tmp_path / "authors-models/extra.bin").exists()


def test_unpack_refuses_paths_outside(tmp_path):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(_zip_bytes({"../evil.txt": b"x"}))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(FetchError, match="would leave"):
        fetch.unpack(str(bad), str(out))
    assert not (tmp_path / "evil.txt").exists()


def test_list_and_unknown_name(tmp_path, capsys):
    assert fetch.main(["--list", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in ("imagenet", "robust-l2-eps0.05", "maskrcnn-coco", "c-ccm", "authors-models"):
        assert name in out
    assert fetch.main(["nonsense", "--dir", str(tmp_path)]) == 1
    assert "unknown asset 'nonsense'" in capsys.readouterr().err
