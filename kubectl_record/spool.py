"""Reading the runtime spool that the shell hot path writes (format in shell/record.bash).

One file per run: a start section and, once kubectl has ended, an end section, each a run of
NUL-terminated ``key=value`` tokens closed by a lone ``.``. The start section carries the
arguments as ``argc=N`` followed by N raw words.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

FORMAT_VERSIONS = {"1"}
SUFFIX = ".run"


class SpoolFormatError(ValueError):
    """A spool file that this version cannot read (truncated, or written by a newer recorder)."""


@dataclass
class Entry:
    path: str
    start: dict[str, str] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)
    # Repeated keys keep their order: kubeconfig file/snapshot pairs and CI variables.
    kubeconfigs: list[tuple[str, str]] = field(default_factory=list)
    ci: dict[str, str] = field(default_factory=dict)
    end: dict[str, str] | None = None

    @property
    def id(self) -> str:
        return self.start.get("id") or os.path.basename(self.path)[: -len(SUFFIX)]


def parse(data: bytes, path: str = "") -> Entry:
    """Parse one spool file. An end section alone (written after an earlier ingestion marked
    the run unfinished) gives an Entry with an empty start."""
    tokens = data.split(b"\0")
    # A complete file ends with NUL, leaving one empty trailing element.
    if tokens and tokens[-1] == b"":
        tokens.pop()
    words = [t.decode("utf-8", "surrogateescape") for t in tokens]
    entry = Entry(path=path)
    i = 0
    while i < len(words):
        section: dict[str, str] = {}
        closed = False
        while i < len(words):
            word = words[i]
            i += 1
            if word == ".":
                closed = True
                break
            key, sep, value = word.partition("=")
            if not sep:
                raise SpoolFormatError(f"{path}: unexpected word in spool file")
            if key == "argc":
                count = int(value) if value.isdigit() else -1
                if count < 0 or i + count > len(words):
                    raise SpoolFormatError(f"{path}: truncated argument list")
                entry.argv = words[i : i + count]
                i += count
            elif key == "kcf":
                entry.kubeconfigs.append((value, ""))
            elif key == "kcs" and entry.kubeconfigs:
                entry.kubeconfigs[-1] = (entry.kubeconfigs[-1][0], value)
            elif key.startswith("ci."):
                entry.ci[key[3:]] = value
            else:
                section[key] = value
        if not closed:
            # A section still being written (or cut by a crash): only a closed start counts.
            if section.get("ev") == "start" or not entry.start:
                raise SpoolFormatError(f"{path}: unterminated section")
            break
        kind = section.get("ev")
        if kind == "start":
            if section.get("v") not in FORMAT_VERSIONS:
                raise SpoolFormatError(f"{path}: spool format {section.get('v')!r} is not supported")
            entry.start = section
        elif kind == "end":
            entry.end = section
    if not entry.start and entry.end is None:
        # Just created and not yet written: the writer opens the file before it writes.
        raise SpoolFormatError(f"{path}: empty spool file")
    return entry


def read(path: str) -> Entry:
    with open(path, "rb") as f:
        return parse(f.read(), path)


def list_entries(spool: str) -> list[str]:
    try:
        names = os.listdir(spool)
    except FileNotFoundError:
        return []
    # Names start with a UUIDv7, so sorting by name is sorting by start time.
    return [os.path.join(spool, n) for n in sorted(names) if n.endswith(SUFFIX)]
