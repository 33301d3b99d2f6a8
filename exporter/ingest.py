"""Incremental reader of one node's report directory: each file parsed once.

A file that does not parse is retried while it may still be being written (the real node
writes non-atomically); once it has been unchanged for ``settle_s`` it is counted once
under its reason and logged once. Files are taken in epoch-index order.

Nothing here blocks or raises for one file: an entry is ``lstat``-ed first, anything that is
not a regular file (or a symlink to one inside the directory) is an ``io`` error without
being opened, a file is opened with ``O_NONBLOCK`` and its type checked again on the open
descriptor before a byte is read (a FIFO swapped in between is refused too), and an error
met by one file (a symlink loop, an unreadable entry) is counted for that file only.

Order and identity. Reports are ordered by the epoch index in their name, never by a clock.
Two spellings of one epoch (``epoch-01.json`` beside ``epoch-1.json``) are taken in the order
(epoch, name length, name), so the canonical name wins when both are new; whichever is
read second is counted once as ``duplicate`` and not ingested. A file is remembered by its
identity (device, inode, mtime, size) and a digest of its content: a name already read whose
identity changed is read again, and if its content changed too the node's numbering started
over (a wiped report folder, a new node writing ``epoch-0`` again): the report opens a new
*sequence*, ordered after every earlier one.

Cost does not grow with the run: when the directory's mtime moved (a file was created) the
next epoch numbers are probed by name; the directory is listed in full only on the first
poll, when it moved and no expected name appeared (a gap, an index reset), or when it moved
and the last full listing is ``FULL_LIST_S`` old (a stray file beside the expected one).
A full listing compares known files by inode (free), and stats them (mtime, size) only when
the expected name did not appear. Only pending files, the lowest-numbered file and the next
file of a restarted numbering are stat'ed on other polls (a new node rewriting files in
place does not move the directory).
"""
from __future__ import annotations

import logging
import os
import re
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

from exporter.reports import MAX_REPORT_BYTES, Report, ReportError, parse_report

log = logging.getLogger("soak-exporter")
REPORT_NAME = re.compile(r"^epoch-(\d+)\.json$")
# Reasons that may be a file still being written; others (too_large, io, duplicate) are final at once.
RETRIED = frozenset({"partial", "invalid_json", "schema"})
# A directory mtime this close to now may hide a file created in the same timestamp tick
# as our last listing, so such a directory is listed again (git's "racy" rule).
RACY_S = 2.0
# Bound on how late an out-of-sequence file beside in-sequence ones is noticed; a full
# listing of 100k files costs ~0.1 s, so this keeps its share of scrape time small.
FULL_LIST_S = 30.0
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)

Ident = tuple[int, int, int, int]  # st_dev, st_ino, st_mtime_ns, st_size of the directory entry


class Arrival(NamedTuple):
    """One report as ingested: its place in the node's order and when it arrived."""

    report: Report
    epoch: int          # from the file name (the node's numbering)
    sequence: int       # 0, then +1 each time the node's numbering starts over
    arrived_s: float    # the file's mtime: this machine's clock, not the node's


class Seen(NamedTuple):
    ident: Ident | None           # None: could not even be lstat'ed (never retried)
    digest: int | None            # content last read (None if it could not be read); in-process hash
    sequence: int                 # the numbering it was read in
    ingested: bool                # taken as a report (False: counted as an error)


def _ident(st: os.stat_result) -> Ident:
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


def _digest(data: bytes) -> int:
    # Only ever compared with the same file's earlier read in this process: the interpreter's
    # 64-bit hash of the bytes (several times cheaper than a cryptographic digest) suffices.
    return hash(data)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a directory"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


Order = tuple[int, int, str]  # (epoch, name length, name): see ``_order``


@dataclass
class ReportDir:
    node: str
    path: Path
    settle_s: float = 3.0      # unchanged this long and still invalid = counted as an error
    clock: Callable[[], float] = time.time
    done: dict[str, Seen] = field(default_factory=dict)  # read (or given up on) as it is now
    pending: dict[str, tuple[int, int, float]] = field(default_factory=dict)  # name -> size, mtime_ns, since
    sequence: int = 0
    sequence_restarts: int = 0
    _by_epoch: dict[int, str] = field(default_factory=dict)  # epoch -> name ingested in this sequence
    _seq_high: int = -1       # highest epoch of the current sequence
    _lowest: Order | None = None  # lowest-numbered name ever read: watched for an in-place restart
    _listed_mtime_ns: int | None = None
    _high: int = -1  # highest epoch index seen: the next file is probably _high + 1
    _full_listed_at: float = float("-inf")
    # Names the last listing saw as regular files (the directory entry's type, no syscall):
    # opened without an lstat first (``_open_listed``).
    _regular: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._dir = os.fspath(self.path)
        self._prefix = os.path.join(self._dir, "")  # names are joined by concatenation on the hot path

    def poll(self) -> tuple[list[Arrival], list[str]]:
        """New reports (in epoch order) and new error reasons since the last poll.

        Raises OSError only when the directory itself cannot be listed (it is missing: no
        error, nothing to read); one bad file never raises.
        """
        try:
            names = self._new_names()
        except FileNotFoundError:
            return [], []
        for name in self.pending:
            if name not in names:
                names[name] = _index(name)
        for name in self._watched():
            if name not in names:
                names[name] = _index(name)
        reports, errors = [], []
        for order in sorted((index, len(name), name) for name, index in names.items()):
            name = order[2]
            try:
                result = self._read(name, order)
            except Exception as exc:  # noqa: BLE001 - a bug met by one file must not lose its neighbours
                log.exception("%s: unexpected error", self._prefix + name)
                result = self._give_up(name, ReportError("io", f"unexpected {type(exc).__name__}"), None)
            if result is None:
                continue
            if type(result) is Arrival:
                reports.append(result)
            else:
                errors.append(result)
        return reports, errors

    # -- finding names ------------------------------------------------------------------
    def _new_names(self) -> dict[str, int]:
        """Names to read, with their epoch index."""
        st = os.stat(self._dir)
        if not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(20, "not a directory", self._dir)
        moved = st.st_mtime_ns != self._listed_mtime_ns
        if not moved and self.clock() - st.st_mtime > RACY_S:
            return {}
        names = self._probe() if self._listed_mtime_ns is not None else {}
        if moved and (not names or self.clock() - self._full_listed_at >= FULL_LIST_S):
            # Without the expected name something else happened (a gap, a wipe, a restarted
            # numbering): only then is every known file stat'ed for a changed mtime or size.
            names = self._list(deep=not names)
            self._full_listed_at = self.clock()
        self._listed_mtime_ns = st.st_mtime_ns
        if names:
            self._high = max(self._high, max(names.values()))
        return names

    def _list(self, deep: bool) -> dict[str, int]:
        """Names that are new, or read before and changed since: by inode (free from the
        listing), and when ``deep`` also by mtime and size (a stat each)."""
        names = {}
        done, match = self.done, REPORT_NAME.match
        with os.scandir(self._dir) as it:
            for e in it:
                m = match(e.name)
                if m is None:
                    continue
                seen = done.get(e.name)
                if seen is None:
                    names[e.name] = int(m.group(1))
                    if e.is_file(follow_symlinks=False):
                        self._regular.add(e.name)
                elif seen.ident is not None:
                    try:
                        changed = e.inode() != seen.ident[1] or (
                            deep and _ident(e.stat(follow_symlinks=False)) != seen.ident)
                    except OSError:
                        changed = False  # vanished under us: nothing to read
                    if changed:
                        names[e.name] = int(m.group(1))
        return names

    def _probe(self) -> dict[str, int]:
        names, index = {}, self._high + 1
        while os.path.lexists(f"{self._prefix}epoch-{index}.json"):
            names[f"epoch-{index}.json"] = index
            index += 1
        return {n: i for n, i in names.items() if n not in self.done}

    def _watched(self) -> set[str]:
        """Already-read names that a restarted numbering would rewrite next, stat'ed every poll."""
        out = set()
        if self._lowest is not None:
            out.add(self._lowest[2])
        if self.sequence_restarts:
            nxt = f"epoch-{self._seq_high + 1}.json"
            if nxt in self.done:
                out.add(nxt)
        return out

    # -- reading one file ---------------------------------------------------------------
    def _read(self, name: str, order: Order) -> Arrival | str | None:
        path = self._prefix + name
        opened = self._open_listed(name, path) if name in self._regular else None
        try:
            return self._read_entry(name, order, path, opened)
        finally:
            if opened is not None:
                os.close(opened[0])

    def _open_listed(self, name: str, path: str) -> tuple[int, os.stat_result] | None:
        """A file the listing saw as regular, opened without following links, and its fstat (the
        same identity and type as its lstat): one path lookup fewer. None when it is anything
        else by now (gone, a link, unreadable, not regular): the lstat path then says what."""
        self._regular.discard(name)
        try:
            fd = os.open(path, _OPEN_FLAGS | os.O_NOFOLLOW)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
        except OSError:
            st = None
        if st is None or not stat.S_ISREG(st.st_mode):
            os.close(fd)
            return None
        return fd, st

    def _read_entry(self, name: str, order: Order, path: str,
                    opened: tuple[int, os.stat_result] | None) -> Arrival | str | None:
        if opened is not None:
            lst = opened[1]
        else:
            try:
                lst = os.lstat(path)
            except FileNotFoundError:
                self.pending.pop(name, None)  # removed before we got to it: nothing to count
                return None
            except OSError as exc:
                return self._give_up(name, ReportError("io", exc.strerror or str(exc)), None)
        ident = (lst.st_dev, lst.st_ino, lst.st_mtime_ns, lst.st_size)
        prior = self.done.get(name)
        if prior is not None and (prior.ident is None or prior.ident == ident):
            return None  # unchanged since it was read
        mode = lst.st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
            return self._give_up(name, ReportError("io", _kind(mode)), ident)
        try:
            data, arrived_s = self._read_bytes(path, lst, opened)
            report = parse_report(data)
        except ReportError as exc:
            return self._retry_or_give_up(name, lst, exc)
        except OSError as exc:
            return self._give_up(name, ReportError("io", exc.strerror or str(exc)), ident)
        if self.pending:
            self.pending.pop(name, None)
        digest = _digest(data)
        if prior is not None and prior.digest == digest:
            self.done[name] = Seen(ident, digest, prior.sequence, prior.ingested)  # touched: nothing new
            return None
        index = order[0]
        if prior is not None and prior.ingested and prior.sequence == self.sequence:
            # Read before in this numbering, and now different: the numbering started over.
            self.sequence += 1
            self.sequence_restarts += 1
            self._by_epoch, self._seq_high = {}, -1
            log.warning("%s: rewritten with new content: the node's report numbering started over", path)
        other = self._by_epoch.get(index)
        if other is not None and other != name:
            return self._give_up(name, ReportError("duplicate", f"epoch {index} was already read from {other}"),
                                 ident, digest)
        self._by_epoch[index] = name
        if index > self._seq_high:
            self._seq_high = index
        self.done[name] = Seen(ident, digest, self.sequence, True)
        if self._lowest is None or order < self._lowest:
            self._lowest = order
        return Arrival(report, index, self.sequence, arrived_s)

    def _read_bytes(self, path: str, lst: os.stat_result,
                    opened: tuple[int, os.stat_result] | None = None) -> tuple[bytes, float]:
        """The file's bytes and mtime; never opens anything but a regular file for reading
        (``opened``: already open, and checked regular)."""
        if stat.S_ISLNK(lst.st_mode):
            real = os.path.realpath(path, strict=True)  # a loop is OSError (ELOOP), not a hang
            if not Path(real).is_relative_to(os.path.realpath(self._dir)):
                raise ReportError("io", "symlink points outside the report dir")
        elif lst.st_size > MAX_REPORT_BYTES:
            raise ReportError("too_large", f"{lst.st_size} bytes > {MAX_REPORT_BYTES}")
        fd = opened[0] if opened is not None else os.open(path, _OPEN_FLAGS)
        try:
            st = opened[1] if opened is not None else os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):  # swapped for a FIFO after the lstat, or a link to one
                raise ReportError("io", _kind(st.st_mode))
            size = st.st_size
            if size > MAX_REPORT_BYTES:
                raise ReportError("too_large", f"{size} bytes > {MAX_REPORT_BYTES}")
            # One read of the size the file has plus one byte (no buffer of the limit's size);
            # a file that grew since the fstat is read on, one byte past the limit at most.
            data = os.read(fd, size + 1)
            if len(data) > size:
                chunks, got = [data], len(data)
                while got <= MAX_REPORT_BYTES:
                    chunk = os.read(fd, min(1 << 20, MAX_REPORT_BYTES + 1 - got))
                    if not chunk:
                        break
                    chunks.append(chunk)
                    got += len(chunk)
                data = b"".join(chunks)
            return data, st.st_mtime
        finally:
            if opened is None:   # an opened file is closed by ``_read``
                os.close(fd)

    def _retry_or_give_up(self, name: str, st: os.stat_result, exc: ReportError) -> str | None:
        if exc.reason not in RETRIED:
            return self._give_up(name, exc, _ident(st))
        stamp = (st.st_size, st.st_mtime_ns)
        prev = self.pending.get(name)
        since = prev[2] if prev and prev[:2] == stamp else self.clock()
        self.pending[name] = (*stamp, since)
        if self.clock() - since < self.settle_s:
            return None  # may still be being written; retried on the next poll
        return self._give_up(name, exc, _ident(st))

    def _give_up(self, name: str, exc: ReportError, ident: Ident | None, digest: int | None = None) -> str:
        prior = self.done.get(name)
        # A report rewritten into something unreadable stays the report it was (its digest and
        # sequence are kept): rewritten back later, it is not new; rewritten anew, it restarts.
        if prior is not None and prior.ingested:
            self.done[name] = Seen(ident, prior.digest, prior.sequence, True)
        else:
            self.done[name] = Seen(ident, digest, self.sequence, False)
        self.pending.pop(name, None)
        log.warning("%s: %s (counted as %s)", self._prefix + name, exc, exc.reason)
        return exc.reason


def _index(name: str) -> int:
    match = REPORT_NAME.match(name)
    return int(match.group(1)) if match else -1


def _order(name: str) -> Order:
    """Epoch first; of two spellings of one epoch the canonical (shortest) name first."""
    return (_index(name), len(name), name)
