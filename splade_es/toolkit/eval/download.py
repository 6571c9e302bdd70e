"""``beir:NAME``: a BEIR dataset fetched from its public archive, checked against the MD5
the BEIR authors publish, unpacked safely and cached (a second run reads the cache).

``SPLADE_ES_BEIR_URL`` replaces the archive's base URL (a mirror, or a test server).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from tqdm.auto import tqdm

from splade_es.errors import ConfigError, InputError

BASE_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets"
# The MD5 of each archive, as the BEIR README lists them.
ARCHIVE_MD5 = {
    "msmarco": "444067daf65d982533ea17ebd59501e4",
    "trec-covid": "ce62140cb23feb9becf6270d0d1fe6d1",
    "nfcorpus": "a89dba18a62ef92f7d323ec890a0d38d",
    "nq": "d4d3d2e48787a744b6f6e691ff534307",
    "hotpotqa": "f412724f78b0d91183a0e86805e16114",
    "fiqa": "17918ed23cd04fb15047f73e6c3bd9d9",
    "arguana": "8ad3e3c2a5867cdced806d6503f29b99",
    "webis-touche2020": "6e29ac6c57e2d227fb57501872cac45f",
    "cqadupstack": "4e41456d7df8ee7760a7f866133bda78",
    "quora": "18fb154900ba42a600f84b839c173167",
    "dbpedia-entity": "c2a39eb420a3164af735795df012ac2c",
    "scidocs": "38121350fc3a4d2f48850f6aff52e4a9",
    "fever": "88591ef8eb2913126d0c93ecbde6285f",
    "climate-fever": "8b66f0a9126c521bae2bde127b4dc99d",
    "scifact": "5f7d1de60b170fc8027bb7898e2efca1",
}
PREFIX = "beir:"
_COMPLETE = ".splade-es-complete"


def dataset_dir(spec: str, cache_dir: str | Path | None = None, show_progress: bool = True) -> Path:
    """A dataset directory for ``spec``: a path as given, or ``beir:NAME[/SUBSET]`` downloaded."""
    if not spec.startswith(PREFIX):
        return Path(spec).expanduser()
    name, _, subset = spec[len(PREFIX):].partition("/")
    if name not in ARCHIVE_MD5:
        raise InputError(f"unknown BEIR dataset {name!r}: choose one of {', '.join(sorted(ARCHIVE_MD5))}")
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    target = root / name
    if not (target / _COMPLETE).is_file():
        fetch(name, root, show_progress)
    return target / subset if subset else target


def default_cache_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(os.environ.get("SPLADE_ES_CACHE_DIR") or user_cache_dir("splade-es")) / "beir"


def fetch(name: str, root: Path, show_progress: bool = True) -> Path:
    """Download, verify and unpack ``name`` into ``root/name``; nothing is left behind on failure."""
    url = f"{os.environ.get('SPLADE_ES_BEIR_URL', BASE_URL).rstrip('/')}/{name}.zip"
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=f".{name}-") as work:
        archive = Path(work) / f"{name}.zip"
        digest = _download(url, archive, show_progress)
        if digest != ARCHIVE_MD5[name]:
            raise ConfigError(f"{url}: MD5 {digest} does not match the published {ARCHIVE_MD5[name]}; "
                              "the download is corrupt or the archive changed, nothing was kept")
        unpacked = Path(work) / "unpacked"
        _extract(archive, unpacked, url)
        source = unpacked / name if (unpacked / name).is_dir() else unpacked
        (source / _COMPLETE).write_text(ARCHIVE_MD5[name])
        target = root / name
        if target.exists():
            shutil.rmtree(target)
        source.rename(target)
    return target


def _download(url: str, path: Path, show_progress: bool) -> str:
    md5 = hashlib.md5()  # noqa: S324 - the checksum BEIR publishes, not a security measure
    try:
        with urllib.request.urlopen(url, timeout=60) as reply, path.open("wb") as out:
            total = int(reply.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {path.name}",
                      disable=not show_progress) as bar:
                while chunk := reply.read(1 << 20):
                    out.write(chunk)
                    md5.update(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as exc:
        raise ConfigError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ConfigError(f"cannot download {url}: {getattr(exc, 'reason', exc)}") from None
    return md5.hexdigest()


def _extract(archive: Path, target: Path, url: str) -> None:
    """Unzip, refusing any member that would land outside ``target``."""
    try:
        with zipfile.ZipFile(archive) as bundle:
            root = target.resolve()
            for member in bundle.infolist():
                destination = (target / member.filename).resolve()
                if destination != root and root not in destination.parents:
                    raise ConfigError(f"{url}: archive member {member.filename!r} points outside the dataset")
            bundle.extractall(target)
    except zipfile.BadZipFile as exc:
        raise ConfigError(f"{url}: not a zip archive ({exc})") from None
