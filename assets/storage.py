"""One storage layer for every data asset: a root is a local path or a URL (s3://bucket/prefix),
resolved through fsspec, so asset code never branches on where the data lives.

Domain code never reads the environment: the S3 endpoint and keys come in as `options`
(assets/params.py `storage_for` builds them from env vars). Writes are atomic: the bytes go to a temp
name in the destination folder, then one rename, so a reader (or a crashed run) never sees half
a file. On S3 a rename is a copy + delete, still all-or-nothing for the reader of the final key."""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import stat
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Any

import fsspec
import polars as pl
from fsspec.implementations.local import LocalFileSystem


def lock_within(f, timeout_s: float) -> bool:
    """An exclusive `flock` on the open local file `f` within `timeout_s` (0: one try); False if
    another holder kept it. Advisory, and dropped by the kernel when its holder exits, killed
    or not, so a crashed run leaves no stale lock; the caller says what a refusal means."""
    import fcntl
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)


# a set of files being renamed into place (Storage.write_set); present only while that runs
SET_JOURNAL = ".write-set.json"


@dataclass(frozen=True)
class Storage:
    """A root (path or URL) and the fsspec options to reach it."""

    root: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        return fsspec.core.url_to_fs(self.root, **self.options)[0]

    @property
    def is_local(self) -> bool:
        return "://" not in self.root or self.root.startswith("file://")

    def url(self, *parts: str) -> str:
        """The root joined with relative parts, keeping the root's form (relative paths stay
        relative, so outputs written from the repo root are the same on every clone)."""
        return posixpath.join(self.root.rstrip("/"), *parts) if parts else self.root

    def sub(self, *parts: str) -> "Storage":
        return Storage(self.url(*parts), self.options)

    def exists(self, *parts: str) -> bool:
        return self.fs.exists(self.url(*parts))

    def read_bytes(self, *parts: str) -> bytes:
        """The whole file, after the kind check of open_regular (a FIFO or a device put where a
        table should be is refused, not read forever)."""
        with self.open(*parts) as f:
            return f.read()

    def open(self, *parts: str, max_bytes: int | None = None):
        """Open for reading a regular file of at most max_bytes (else FileRefused): see open_regular."""
        return open_regular(self.url(*parts), self.options, max_bytes)

    def list_files(self, *parts: str) -> set[str]:
        """Every file below a folder, as paths relative to this root. One recursive listing
        instead of one stat per file: 377k `exists` calls would take minutes on S3."""
        base = self.url(*parts)
        if not self.fs.exists(base):
            return set()
        root = self.fs._strip_protocol(self.root).rstrip("/")
        return {p[len(root) + 1:] for p in self.fs.find(base)}

    def scan_csv(self, *parts: str, **kwargs: Any) -> pl.LazyFrame:
        """A lazy scan of a CSV, gzip or not. polars scans local gzip files itself; a remote
        file is fetched once (the MIMIC CSVs are tens of MB) and scanned from memory."""
        if self.is_local:
            return pl.scan_csv(self.url(*parts), **kwargs)
        return pl.read_csv(io.BytesIO(self.read_bytes(*parts)), **kwargs).lazy()

    def _stage(self, data: bytes, target: str) -> str:
        """Write `data` to a temp name next to `target` (a URL); returns the temp name."""
        parent = posixpath.dirname(target)
        if parent:
            self.fs.makedirs(parent, exist_ok=True)
        tmp = posixpath.join(parent, f".tmp-{uuid.uuid4().hex}-{posixpath.basename(target)}")
        with self.fs.open(tmp, "wb") as f:
            f.write(data)
        return tmp

    def write_bytes(self, data: bytes, *parts: str) -> str:
        """Atomic write: temp file next to the target, then rename."""
        target = self.url(*parts)
        self.fs.mv(self._stage(data, target), target)
        return target

    def write_set(self, files: dict[str, bytes | pl.DataFrame | dict]) -> list[str]:
        """A step's outputs as one set: every file is written to a temp name first (the slow,
        failure-prone part); then a journal naming every (temp, final) pair is written, the
        renames run, and the journal goes. A run that fails while writing leaves the previous
        set whole; one killed between two renames leaves the journal, and the next read or write
        of this root finishes the renames (`finish_interrupted_set`): never new images.parquet
        beside old questions. Values: bytes, a DataFrame (parquet) or a dict (JSON)."""
        self.finish_interrupted_set()
        staged: list[tuple[str, str]] = []
        try:
            for rel, value in files.items():
                if isinstance(value, pl.DataFrame):
                    value = parquet_bytes(value)
                elif isinstance(value, dict):
                    value = json_bytes(value)
                tmp = self._stage(value, self.url(rel))
                staged.append((posixpath.join(posixpath.dirname(rel), posixpath.basename(tmp)), rel))
        except BaseException:
            for tmp, _ in staged:
                self.fs.rm(self.url(tmp))
            raise
        # paths relative to the root: the journal is finished from wherever the next step runs
        self.write_bytes(json_bytes({"renames": staged}), SET_JOURNAL)
        self._rename_set(staged)
        return [self.url(rel) for _, rel in staged]

    def finish_interrupted_set(self) -> None:
        """Complete the renames of a set whose journal is still there. Every temp file the
        journal names was whole before the journal was written, so finishing is always right."""
        if self.fs.exists(self.url(SET_JOURNAL)):
            self._rename_set(json.loads(self.read_bytes(SET_JOURNAL))["renames"])

    def _rename_set(self, renames) -> None:
        """The journal's (temp, final) renames, then the journal goes; a rename already done (its
        temp gone) is skipped."""
        for tmp, rel in renames:
            try:
                self.fs.mv(self.url(tmp), self.url(rel))
            except FileNotFoundError:  # renamed before the interruption, or by a concurrent finisher
                pass
        try:
            self.fs.rm(self.url(SET_JOURNAL))
        except FileNotFoundError:
            pass

    def write_parquet(self, df: pl.DataFrame, *parts: str) -> str:
        return self.write_bytes(parquet_bytes(df), *parts)

    def read_parquet(self, *parts: str) -> pl.DataFrame:
        self.finish_interrupted_set()
        return pl.read_parquet(io.BytesIO(self.read_bytes(*parts)))

    def scan_parquet(self, *parts: str) -> pl.LazyFrame:
        self.finish_interrupted_set()
        if self.is_local:
            with self.open(*parts):  # the kind check only: polars would block on a FIFO
                pass
            return pl.scan_parquet(self.url(*parts))
        # polars' object_store takes its own str options, not fsspec's client_kwargs: fetch via
        # fsspec once (prepared tables are tens of MB) and scan from memory, as scan_csv does.
        return pl.read_parquet(io.BytesIO(self.read_bytes(*parts))).lazy()

    def write_json(self, obj: Any, *parts: str) -> str:
        return self.write_bytes(json_bytes(obj), *parts)

    def read_json(self, *parts: str) -> Any:
        return json.loads(self.read_bytes(*parts))

    def remove(self, *parts: str) -> None:
        if self.exists(*parts):
            self.fs.rm(self.url(*parts), recursive=True)


def json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def parquet_bytes(df: pl.DataFrame) -> bytes:
    """Deterministic parquet bytes (no timestamps in the file), so equal tables hash equal and
    DVC sees an unchanged output as unchanged."""
    buf = io.BytesIO()
    df.write_parquet(buf, compression="zstd", compression_level=1, statistics=False)
    return buf.getvalue()


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def frame_hash(df: pl.DataFrame) -> str:
    """Content hash of a table: the Dagster data version of a table asset."""
    return content_hash(parquet_bytes(df))


class FileRefused(ValueError):
    """A path that is not a regular file (FIFO, device, socket, folder) or is over a size bound,
    refused before a byte is read: a FIFO blocks its reader forever, /dev/zero never ends."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def open_regular(url: str, options: dict[str, Any] | None = None, max_bytes: int | None = None,
                 within: str | None = None):
    """Open one file for reading only if it is a regular file (a symlink counts as what it points
    to) of at most `max_bytes` and, when `within` names a local folder, only if the file it
    resolves to lies inside that folder (a link out of a data root is refused: `outside_root`).
    Locally the checks are made on the opened descriptor, so the file checked is the file read;
    O_NONBLOCK lets a FIFO be opened without waiting for a writer."""
    fs, path = fsspec.core.url_to_fs(url, **(options or {}))
    if isinstance(fs, LocalFileSystem):
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            if within is not None:
                _check_inside(url, _opened_path(fd, path), within)
            st = os.fstat(fd)
            _check(url, st.st_mode, st.st_size, max_bytes)
        except BaseException:
            os.close(fd)
            raise
        return os.fdopen(fd, "rb")
    info = fs.info(path)  # object stores have no links: `within` has nothing to check there
    if info.get("type") != "file":
        raise FileRefused("not_regular_file", f"{url} is not a regular file ({info.get('type')})")
    _check(url, stat.S_IFREG, int(info.get("size") or 0), max_bytes)
    return fs.open(path, "rb")


def _opened_path(fd: int, path: str) -> str:
    """The real path of an open descriptor: Linux names it in /proc, so a link swapped after the
    open cannot pass; elsewhere the path resolved just after opening."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return os.path.realpath(path)


def _check_inside(url: str, real: str, within: str) -> None:
    root = os.path.realpath(within)
    if os.path.commonpath([real, root]) != root:
        raise FileRefused("outside_root", f"{url} resolves to {real}, outside the data root {root}")


def _check(url: str, mode: int, size: int, max_bytes: int | None) -> None:
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
        raise FileRefused("not_regular_file", f"{url} is {kind}, not a regular file")
    if max_bytes is not None and size > max_bytes:
        raise FileRefused("file_too_large", f"{url} is {size} bytes, over the bound of {max_bytes}")


def read_url(url: str, options: dict[str, Any] | None = None, max_bytes: int | None = None,
             within: str | None = None) -> bytes:
    """Bytes of one file given its full path or URL (image paths in pairs.parquet are full);
    refused (FileRefused) when it is not a regular file, is over `max_bytes` or resolves outside
    `within` (see open_regular)."""
    with open_regular(url, options, max_bytes, within) as f:
        data = f.read() if max_bytes is None else f.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:  # grew after the check
        raise FileRefused("file_too_large", f"{url} is over the bound of {max_bytes} bytes")
    return data


def gzip_problem(f, chunk: int = 1 << 20) -> str | None:
    """Why an open binary file is not a whole gzip stream, or None. Decompresses it in chunks
    (memory stays ~chunk), because only the end of the deflate stream and its CRC show a
    truncated or corrupt file: polars would otherwise fail deep inside, naming no file."""
    head = f.read(chunk)
    if head[:2] != b"\x1f\x8b":
        return f"not gzip (starts with {head[:4].hex(' ') or 'nothing'}, not the gzip magic 1f 8b)"
    d, data = zlib.decompressobj(wbits=31), head
    try:
        while data:
            d.decompress(data, chunk)
            while d.unconsumed_tail:  # bounded output per call: a gzip bomb stays small here
                d.decompress(d.unconsumed_tail, chunk)
            if d.eof and d.unused_data:  # a multi-member gzip: the next member starts here
                data, d = d.unused_data, zlib.decompressobj(wbits=31)
                continue
            data = f.read(chunk)
    except zlib.error as e:
        return f"corrupt gzip ({e})"
    if not d.eof:
        return "truncated gzip (the compressed stream ends before its end marker)"
    return None
