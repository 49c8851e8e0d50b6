"""Download the paper's real assets (:mod:`training.assets`) for a user with internet.

``fetch(names, directory)`` downloads each named asset into ``directory``:

* a file asset (source models, Mask R-CNN weights) goes to ``directory/<file>``, written to
  ``<file>.part`` first: an interrupted download is resumed with an HTTP ``Range`` request when the
  command is run again (a server that ignores ``Range`` restarts it). The finished file is checked
  (:func:`training.assets.verify`: the SHA-256 prefix of torchvision files; for files without a
  published hash the SHA-256 is recorded in ``<file>.sha256``) and only then renamed;
* a Zenodo record (``c-ccm``, ``authors-models``) goes to ``directory/<name>/``: the record's JSON
  (``GET <api>/records/<id>``) is saved as ``zenodo-record.json``; every file it lists (``key``,
  ``size``, ``checksum`` ``md5:<hex>``, ``links.self``) is downloaded the same way and checked
  against its MD5; zip and tar archives are unpacked into the folder and then deleted (kept with
  ``keep_archives``). ``.fetched.json`` records what is done.

It is idempotent: a file that is present and verified, or a Zenodo file recorded as done, is not
downloaded again (no network access at all when everything is there). Without network one line
names the URL and says so (:class:`FetchError`). Every URL comes from :func:`training.assets.base_url`
and can be pointed elsewhere (``base_urls``, ``$FILLCLS_*_URL``).

CLI: ``python -m training.fetch NAME... --dir DIR`` (:func:`main`; :func:`register` adds the same
command as ``python -m training fetch``).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import tarfile
import urllib.error
import urllib.request
import zipfile
from typing import Any, Callable, Iterable, Mapping

from fillcls.atomic import atomic_write

from training import assets
from training.assets import AssetError
from training.command import subcommand

CHUNK = 1 << 20
USER_AGENT = "fillcls-fetch/1"
#: Default asset directory of the command line.
DEFAULT_DIR = assets.DEFAULT_DIR


class FetchError(RuntimeError):
    """A download failed (no network, HTTP error, interrupted, bad checksum); names the URL or file."""


# --------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------


def _open(url: str, start: int = 0, timeout: float = 60.0):
    headers = {"User-Agent": USER_AGENT}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:
            return None  # nothing left to send: the .part file is already complete
        raise FetchError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise FetchError(f"{url}: cannot connect ({exc.reason}); no network? "
                         "(fetch needs internet; or copy the file in by hand)") from exc
    except (OSError, http.client.HTTPException) as exc:  # timeouts, resets
        raise FetchError(f"{url}: cannot connect ({type(exc).__name__}: {exc}); no network?") from exc


def get_json(url: str, timeout: float = 60.0) -> Any:
    """GET ``url`` and parse it as JSON (FetchError naming the URL otherwise)."""
    resp = _open(url, timeout=timeout)
    with resp:
        try:
            return json.loads(resp.read().decode("utf-8"))
        except (ValueError, OSError, http.client.HTTPException) as exc:
            raise FetchError(f"{url}: not a JSON answer ({exc})") from exc


def download(url: str, dest: str, size: int | None = None, progress: bool = True,
             desc: str | None = None, timeout: float = 60.0) -> str:
    """Download ``url`` to ``dest + '.part'``, resuming it if it exists; return the ``.part`` path.

    The caller checks the finished ``.part`` file and renames it. An interrupted transfer raises
    :class:`FetchError` and keeps the ``.part`` file for the next call.
    """
    from tqdm import tqdm

    part = dest + ".part"
    os.makedirs(os.path.dirname(os.path.abspath(part)), exist_ok=True)
    have = os.path.getsize(part) if os.path.isfile(part) else 0
    if size is not None and have > size:
        os.remove(part)
        have = 0
    if size is not None and have == size:
        return part
    resp = _open(url, have, timeout)
    if resp is None:
        return part
    with resp:
        resumed = bool(have) and resp.status == 206
        if resumed and not str(resp.headers.get("Content-Range", "")).startswith(f"bytes {have}-"):
            raise FetchError(f"{url}: the server resumed at the wrong offset "
                             f"(Content-Range {resp.headers.get('Content-Range')!r}, asked for byte {have}); "
                             f"delete {part} and run the command again")
        if have and not resumed:
            have = 0  # the server sent the whole file
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else size
        with open(part, "ab" if resumed else "wb") as f, tqdm(
                total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                desc=desc or os.path.basename(dest), disable=not progress, leave=False) as bar:
            try:
                while chunk := resp.read(CHUNK):
                    f.write(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as exc:
                f.flush()
                raise FetchError(f"{url}: download interrupted after {f.tell()} bytes "
                                 f"({type(exc).__name__}); run the same command again to resume "
                                 f"({part})") from exc
    got = os.path.getsize(part)
    if total is not None and got != total:
        raise FetchError(f"{url}: got {got} of {total} bytes; run the same command again to resume ({part})")
    return part


# --------------------------------------------------------------------------------------------
# File assets
# --------------------------------------------------------------------------------------------


def fetch_file(name: str, directory: str, base_urls: Mapping[str, str] | None = None,
               progress: bool = True, log: Callable[[str], None] = print) -> str:
    """Download (or find, verified) the file asset ``name`` in ``directory``; return its path."""
    asset = assets.get(name)
    path = assets.asset_path(name, directory)
    if os.path.isfile(path):
        assets.verify(name, path)
        log(f"{name}: {path} present, verified")
        return path
    if not asset.url_key:
        raise assets.MissingAsset(f"{path}: {name} cannot be downloaded (in-house source); make it with "
                                  f"`python -m training pretrain --eps {asset.eps_source:g} --out {directory}`")
    url = asset.url(base_urls)
    part = download(url, path, asset.size, progress, name)
    try:
        digest = assets.verify(name, part, record=False)
    except AssetError as exc:
        os.remove(part)
        raise FetchError(f"{url}: the download is not the expected file ({exc}); removed it") from exc
    os.replace(part, path)
    if not asset.sha256:
        atomic_write(path + assets.HASH_SUFFIX, lambda f: f.write(f"{digest}  {os.path.basename(path)}\n"))
    log(f"{name}: {path} downloaded, sha256 {digest}")
    return path


# --------------------------------------------------------------------------------------------
# Zenodo records
# --------------------------------------------------------------------------------------------


def zenodo_files(record: Mapping[str, Any], api_url: str) -> list[dict[str, Any]]:
    """``[{key, size, md5, url}]`` of a Zenodo record JSON (current and legacy field names)."""
    out = []
    files = record.get("files")
    if isinstance(files, Mapping):  # InvenioRDM's {"entries": {...}} form
        files = list((files.get("entries") or {}).values())
    if not isinstance(files, list) or not files:
        raise FetchError(f"{api_url}: the record lists no files (restricted or not a Zenodo record?)")
    for entry in files:
        key = entry.get("key") or entry.get("filename")
        if not key or "/" in key or key.startswith("."):
            raise FetchError(f"{api_url}: bad file entry {entry!r}")
        checksum = str(entry.get("checksum") or "")
        algo, _, hexdigest = checksum.rpartition(":")
        links = entry.get("links") or {}
        url = links.get("self") or links.get("download") or links.get("content") \
            or f"{api_url.rstrip('/')}/files/{key}/content"
        out.append({"key": key, "size": entry.get("size", entry.get("filesize")),
                    "md5": hexdigest.lower() if (algo or "md5").lower() == "md5" and hexdigest else None,
                    "url": url})
    return out


def _load_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _save_json(path: str, data: Any) -> None:
    atomic_write(path, lambda f: json.dump(data, f, indent=1, sort_keys=True))


def unpack(archive: str, folder: str) -> bool:
    """Unpack a zip or tar archive into ``folder`` (no path leaves it); False if not an archive."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            for member in z.namelist():
                target = os.path.realpath(os.path.join(folder, member))
                if not target.startswith(os.path.realpath(folder) + os.sep):
                    raise FetchError(f"{archive}: member {member!r} would leave {folder}")
            z.extractall(folder)
        return True
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as t:
            try:
                t.extractall(folder, filter="data")
            except tarfile.FilterError as exc:
                raise FetchError(f"{archive}: unsafe member ({exc})") from exc
        return True
    return False


def fetch_zenodo(name: str, directory: str, base_urls: Mapping[str, str] | None = None,
                 progress: bool = True, keep_archives: bool = False,
                 log: Callable[[str], None] = print) -> str:
    """Download, check (MD5) and unpack every file of the Zenodo asset ``name``; return its folder."""
    asset = assets.get(name)
    folder = assets.asset_path(name, directory)
    os.makedirs(folder, exist_ok=True)
    record_path = os.path.join(folder, assets.RECORD_FILE)
    state_path = os.path.join(folder, assets.FETCHED_FILE)
    api_url = asset.url(base_urls)
    if os.path.isfile(record_path):
        record = _load_json(record_path)
    else:
        record = get_json(api_url)
        _save_json(record_path, record)
    state = _load_json(state_path) if os.path.isfile(state_path) else {"record": asset.zenodo_record, "files": {}}
    for entry in zenodo_files(record, api_url):
        key = entry["key"]
        if state["files"].get(key, {}).get("done"):
            log(f"{name}: {key} already fetched")
            continue
        path = os.path.join(folder, key)
        if not os.path.isfile(path):
            part = download(entry["url"], path, entry["size"], progress, f"{name}/{key}")
            if entry["md5"]:
                digest = assets.file_digest(part, "md5")
                if digest != entry["md5"]:
                    os.remove(part)
                    raise FetchError(f"{entry['url']}: MD5 {digest} does not match Zenodo's {entry['md5']}; "
                                     "removed the download, run the command again")
            os.replace(part, path)
        elif entry["md5"]:
            assets.check_digest(path, assets.file_digest(path, "md5"), entry["md5"], "MD5")
        unpacked = unpack(path, folder)
        if unpacked and not keep_archives:
            os.remove(path)
        state["files"][key] = {"done": True, "md5": entry["md5"], "size": entry["size"], "unpacked": unpacked}
        _save_json(state_path, state)
        log(f"{name}: {key} {'downloaded and unpacked' if unpacked else 'downloaded'}, md5 checked")
    return folder


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def fetch(names: Iterable[str], directory: str | os.PathLike, base_urls: Mapping[str, str] | None = None,
          progress: bool = True, keep_archives: bool = False,
          log: Callable[[str], None] = print) -> dict[str, str]:
    """Fetch every asset in ``names`` (groups allowed) into ``directory``; ``{name: path}``.

    Raises :class:`FetchError` (network, checksum), :class:`training.assets.AssetError` (unknown
    name, a present file that fails its check) on the first failure; what finished stays.
    """
    directory = os.fspath(directory)
    out = {}
    for name in assets.expand(list(names)):
        if assets.get(name).fmt == "zenodo":
            out[name] = fetch_zenodo(name, directory, base_urls, progress, keep_archives, log)
        else:
            out[name] = fetch_file(name, directory, base_urls, progress, log)
    return out


def list_assets(directory: str) -> str:
    """A table of the registry: name, kind, state in ``directory``, URL."""
    lines = [f"{'name':<22}{'kind':<11}{'state':<9}url / note"]
    for name, a in assets.REGISTRY.items():
        state = "present" if os.path.exists(assets.asset_path(name, directory)) else "missing"
        lines.append(f"{name:<22}{a.kind:<11}{state:<9}{a.url()}")
    lines.append(f"groups: {', '.join(f'{g} ({len(v)})' for g, v in assets.GROUPS.items())}; "
                 "in-house sources inhouse-eps<E> come from `python -m training pretrain`")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of the fetch command."""
    p.add_argument("names", nargs="*", metavar="NAME", help="asset names or groups (see --list)")
    p.add_argument("--dir", default=DEFAULT_DIR, help="asset directory (default $FILLCLS_ASSETS or %(default)s)")
    p.add_argument("--list", action="store_true", help="list the assets and whether they are in --dir")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--keep-archives", action="store_true", help="keep zip/tar files after unpacking")
    for key in assets.DEFAULT_URLS:
        p.add_argument(f"--{key}-url", default=None, metavar="URL",
                       help=f"base URL for {key} assets (default ${assets.URL_ENV[key]} or "
                            f"{assets.DEFAULT_URLS[key]})")


def run(args: argparse.Namespace) -> int:
    """Run the fetch command; errors become one line on stderr and exit code 1."""
    if args.list or not args.names:
        print(list_assets(args.dir))
        return 0 if args.list else 2
    base_urls = {k: getattr(args, f"{k}_url") for k in assets.DEFAULT_URLS if getattr(args, f"{k}_url")}
    try:
        fetch(args.names, args.dir, base_urls, progress=not args.no_progress, keep_archives=args.keep_archives)
    except (FetchError, AssetError, FileNotFoundError, OSError) as exc:
        print(f"fetch: {exc}", file=sys.stderr)
        return 1
    return 0


register, main = subcommand("fetch", "download the paper's source models, C-CCM, the authors' models", "training.fetch",
                            __doc__, add_arguments, run)


if __name__ == "__main__":
    sys.exit(main())
