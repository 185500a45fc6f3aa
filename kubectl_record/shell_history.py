"""Reading kubectl invocations out of existing shell history files (`import --format
bash-history|zsh-history`).

Nothing here evaluates anything: a history line is split by a small tokenizer that knows the
shell's quoting, and whatever the shell would have expanded when the line ran ($VAR, ${...},
$(...), backticks, globs, ~, {a,b}) stays exactly as typed and marks the command `unexpanded`.

Formats:
- bash: one command a line; with HISTTIMEFORMAT set, bash writes `#<epoch>` before each entry and
  every line up to the next `#<epoch>` belongs to that entry (multi-line commands). Without
  timestamps each line is its own entry and `started` is None: a file's mtime says nothing
  about when a line ran, so no time is made up.
- zsh: EXTENDED_HISTORY lines `: <epoch>:<duration>;<command>`, plain lines otherwise; a command
  spanning lines ends each but the last with a backslash; the file is "metafied" (a byte 0x83
  followed by c means c ^ 0x20).

Each kubectl command found becomes an ImportedLine. A line with several (`kubectl get po | grep
x && kubectl logs y`, or one inside `$(...)`) gives several. `key` identifies a command stably
across imports of the same (or a grown) file, so that importing twice adds nothing.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field

FORMATS = ("bash-history", "zsh-history")


@dataclass
class ImportedLine:
    started: float | None
    duration_s: float | None
    argv: list[str]
    env: list[tuple[str, str]]
    unexpanded: bool
    raw_line: str
    line_no: int
    # The position of this kubectl command among those of its history entry, and a stable id.
    part: int = 0
    key: str = ""


@dataclass
class HistoryEntry:
    started: float | None
    duration_s: float | None
    text: str
    line_no: int


# --- history files ------------------------------------------------------------------------------


def default_history_file(fmt: str, environ=None) -> str:
    """The file the shell writes its history to. HISTFILE is usually not exported, so this
    mostly falls back to the shells' defaults."""
    environ = os.environ if environ is None else environ
    home = environ.get("HOME") or os.path.expanduser("~")
    histfile = environ.get("HISTFILE")
    if fmt == "bash-history":
        if histfile and "zsh" not in os.path.basename(histfile):
            return histfile
        return os.path.join(home, ".bash_history")
    if fmt == "zsh-history":
        if histfile and "bash" not in os.path.basename(histfile):
            return histfile
        zdotdir = environ.get("ZDOTDIR") or home
        candidates = [os.path.join(zdotdir, ".zsh_history"), os.path.join(zdotdir, ".zhistory"),
                      os.path.join(zdotdir, ".histfile")]
        for candidate in candidates:
            if os.path.exists(candidate):
                return candidate
        return candidates[0]
    raise ValueError(f"unknown history format {fmt!r}")


def unmetafy(data: bytes) -> bytes:
    """zsh's history file encoding: 0x83 (Meta) followed by c stands for c ^ 0x20."""
    if b"\x83" not in data:
        return data
    out = bytearray()
    it = iter(data)
    for b in it:
        if b == 0x83:
            nxt = next(it, None)
            if nxt is None:
                break
            out.append(nxt ^ 0x20)
        else:
            out.append(b)
    return bytes(out)


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


_BASH_TS = re.compile(r"^#(\d{9,12})\s*$")


def parse_bash_history(data: bytes) -> list[HistoryEntry]:
    lines = _decode(data).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    has_ts = any(_BASH_TS.match(line) for line in lines)
    entries: list[HistoryEntry] = []
    if has_ts:
        current: HistoryEntry | None = None
        for no, line in enumerate(lines, 1):
            m = _BASH_TS.match(line)
            if m:
                current = HistoryEntry(float(m.group(1)), None, "", no + 1)
                entries.append(current)
            elif current is None:
                # Lines before the first timestamp: written before HISTTIMEFORMAT was set.
                entries.append(HistoryEntry(None, None, line, no))
            elif current.text == "" and current.line_no == no:
                current.text = line
            else:
                current.text += "\n" + line
        return [e for e in entries if e.text.strip()]
    pending: HistoryEntry | None = None
    for no, line in enumerate(lines, 1):
        if pending is not None:
            pending.text += "\n" + line
        else:
            pending = HistoryEntry(None, None, line, no)
        if _ends_in_backslash(line):
            continue
        entries.append(pending)
        pending = None
    if pending is not None:
        entries.append(pending)
    return [e for e in entries if e.text.strip()]


_ZSH_EXT = re.compile(r"^: *(\d+):(\d+);(.*)\Z", re.S)


def _ends_in_backslash(line: str) -> bool:
    n = len(line) - len(line.rstrip("\\"))
    return n % 2 == 1


def parse_zsh_history(data: bytes) -> list[HistoryEntry]:
    lines = _decode(unmetafy(data)).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    entries: list[HistoryEntry] = []
    pending: HistoryEntry | None = None
    for no, line in enumerate(lines, 1):
        if pending is not None:
            # zsh writes an embedded newline as backslash-newline.
            pending.text = pending.text[:-1] + "\n" + line
        else:
            m = _ZSH_EXT.match(line)
            if m:
                pending = HistoryEntry(float(m.group(1)), float(m.group(2)), m.group(3), no)
            else:
                pending = HistoryEntry(None, None, line, no)
        if pending.text.endswith("\\"):
            # zsh: any line ending in a backslash goes on (hist.c readhistline).
            continue
        entries.append(pending)
        pending = None
    if pending is not None:
        entries.append(pending)
    return [e for e in entries if e.text.strip()]


# --- command lines ------------------------------------------------------------------------------


@dataclass
class Word:
    text: str  # quotes removed where that is static; expansions kept as typed
    unexpanded: bool = False
    raw: str = ""


@dataclass
class _Scan:
    commands: list[list[Word]] = field(default_factory=list)
    # Bodies of $(...) and `...` found on the way, parsed as command lines of their own.
    nested: list[str] = field(default_factory=list)


_OPERATORS = ("&&", "||", ";;", "|&", "|", "&", ";", "\n", "(", ")", "{", "}")
_GLOB = set("*?[")
_RESERVED = {"if", "then", "else", "elif", "fi", "do", "done", "while", "until", "for", "in",
             "case", "esac", "function", "select", "!", "{", "}", "time", "coproc", "[[", "]]"}


def _find_closing_paren(s: str, i: int) -> int:
    """Index just past the `)` that closes the `(` before s[i], skipping quotes."""
    depth = 1
    n = len(s)
    while i < n:
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == "'":
            j = s.find("'", i + 1)
            i = n if j < 0 else j + 1
            continue
        if c == '"':
            i = _skip_double(s, i + 1)
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return n


def _skip_double(s: str, i: int) -> int:
    n = len(s)
    while i < n:
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == '"':
            return i + 1
        if c == "$" and s.startswith("$(", i):
            i = _find_closing_paren(s, i + 2)
            continue
        if c == "`":
            j = s.find("`", i + 1)
            i = n if j < 0 else j + 1
            continue
        i += 1
    return n


def _scan(line: str) -> _Scan:
    """Split a command line into simple commands (lists of words) at operators, keeping the
    shell's quoting rules. Redirections are dropped with their target."""
    out = _Scan()
    words: list[Word] = []
    cur: list[str] = []
    raw_start = None
    unexp = False
    in_word = False
    i, n = 0, len(line)

    def end_word():
        nonlocal cur, unexp, in_word, raw_start
        if in_word:
            words.append(Word("".join(cur), unexp, line[raw_start:i]))
        cur, unexp, in_word, raw_start = [], False, False, None

    def end_command():
        nonlocal words
        end_word()
        if words:
            out.commands.append(words)
        words = []

    def start():
        nonlocal in_word, raw_start
        if not in_word:
            in_word, raw_start = True, i

    while i < n:
        c = line[i]
        if c in " \t":
            end_word()
            i += 1
            continue
        if c == "#" and not in_word:
            # A comment runs to the end of the line.
            j = line.find("\n", i)
            i = n if j < 0 else j
            continue
        if c == "\\":
            if i + 1 < n and line[i + 1] == "\n":
                i += 2  # line continuation
                continue
            start()
            if i + 1 < n:
                cur.append(line[i + 1])
            i += 2
            continue
        if c == "'":
            start()
            j = line.find("'", i + 1)
            j = n if j < 0 else j
            cur.append(line[i + 1 : j])
            i = j + 1
            continue
        if c == "$" and line.startswith("$'", i):
            start()
            j = i + 2
            buf = []
            while j < n and line[j] != "'":
                if line[j] == "\\" and j + 1 < n:
                    buf.append(_ansi_c(line[j + 1]))
                    j += 2
                    continue
                buf.append(line[j])
                j += 1
            cur.append("".join(buf))
            i = j + 1
            continue
        if c == '"':
            start()
            j = _skip_double(line, i + 1)
            inner = line[i + 1 : j - 1] if j <= n and line[j - 1 : j] == '"' else line[i + 1 : j]
            text, has_exp = _unquote_double(inner)
            cur.append(text)
            unexp = unexp or has_exp
            if has_exp:
                for m in re.finditer(r"\$\(", inner):
                    end = _find_closing_paren(inner, m.end())
                    out.nested.append(inner[m.end() : end - 1])
            i = j
            continue
        if c == "$" and i + 1 < n and (line[i + 1] in "({" or line[i + 1].isalnum() or line[i + 1] in "_?!#@*-$"):
            start()
            if line[i + 1] == "(":
                end = _find_closing_paren(line, i + 2)
                if not line.startswith("$((", i):
                    out.nested.append(line[i + 2 : end - 1])
            elif line[i + 1] == "{":
                k = line.find("}", i + 2)
                end = n if k < 0 else k + 1
            elif line[i + 1].isalpha() or line[i + 1] == "_":
                m = re.match(r"[A-Za-z_][A-Za-z0-9_]*", line[i + 1 :])
                end = i + 1 + m.end()
            else:
                end = i + 2
            cur.append(line[i:end])
            unexp = True
            i = end
            continue
        if c == "`":
            start()
            j = line.find("`", i + 1)
            end = n if j < 0 else j + 1
            out.nested.append(line[i + 1 : end - 1])
            cur.append(line[i:end])
            unexp = True
            i = end
            continue
        if c in "<>" or (c.isdigit() and not in_word and re.match(r"\d+[<>]", line[i:])):
            # A redirection: drop it and its target word.
            end_word()
            m = re.match(r"\d*(<<<|<<-|<<|<>|>>|>\||>&|<&|&>>|&>|<|>)", line[i:])
            i += m.end() if m else 1
            if m and m.group(1).startswith("<<") and m.group(1) != "<<<":
                # A here-document: its body is on the following lines; the command ends here.
                end_command()
                return out
            while i < n and line[i] in " \t":
                i += 1
            # Skip the target word (simple scan: up to blank or operator).
            while i < n and line[i] not in " \t\n;&|()":
                i += 1
            continue
        if c == "&" and line.startswith("&>", i) and not in_word:
            i += 2
            while i < n and line[i] in " \t":
                i += 1
            while i < n and line[i] not in " \t\n;&|()":
                i += 1
            continue
        op = next((o for o in _OPERATORS if line.startswith(o, i)), None)
        if op and (op not in "{}" or not in_word):
            if op in ("{", "}"):
                # Braces are operators only as words of their own.
                nxt = line[i + 1 : i + 2]
                if (op == "{" and nxt not in ("", " ", "\t", "\n")) or in_word:
                    start()
                    cur.append(c)
                    unexp = unexp or op == "{"  # brace expansion {a,b}
                    i += 1
                    continue
            end_command()
            i += len(op)
            continue
        start()
        if c in _GLOB or (c == "~" and not cur):
            unexp = True
        cur.append(c)
        i += 1
    end_command()
    return out


def _ansi_c(ch: str) -> str:
    return {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "e": "\x1b",
            "a": "\a", "b": "\b", "f": "\f", "v": "\v", "0": "\0"}.get(ch, "\\" + ch)


def _unquote_double(inner: str) -> tuple[str, bool]:
    """Inside double quotes: backslash escapes only $ ` " \\ and newline; expansions stay."""
    out = []
    has_exp = False
    i, n = 0, len(inner)
    while i < n:
        c = inner[i]
        if c == "\\" and i + 1 < n and inner[i + 1] in '$`"\\\n':
            if inner[i + 1] != "\n":
                out.append(inner[i + 1])
            i += 2
            continue
        if c == "$" and i + 1 < n and (inner[i + 1] in "({_?!#@*-$" or inner[i + 1].isalnum()):
            has_exp = True
        if c == "`":
            has_exp = True
        out.append(c)
        i += 1
    return "".join(out), has_exp


_ASSIGN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_SUDO_VALUE_OPTS = {"-u", "-g", "-h", "-p", "-C", "-r", "-t", "-U", "-D", "-T", "-R"}
_ENV_VALUE_OPTS = {"-u", "-C", "-S", "--unset", "--chdir"}


def _strip_prefixes(words: list[Word]) -> tuple[list[Word], list[tuple[str, str]]]:
    """Drops what runs kubectl without changing its arguments: VAR=x prefixes (returned as env),
    sudo/env/command/exec/time/nohup/noglob/nice and their options, and reserved words."""
    env: list[tuple[str, str]] = []
    i = 0
    while i < len(words):
        w = words[i].text
        if _ASSIGN.match(w) and not words[i].raw.startswith(("'", '"')):
            name, _, value = w.partition("=")
            env.append((name, value))
            i += 1
            continue
        if w in _RESERVED:
            i += 1
            continue
        if w in ("command", "exec", "nohup", "noglob", "builtin", "-", "nocorrect"):
            i += 1
            while i < len(words) and words[i].text.startswith("-") and words[i].text != "--":
                i += 1
            continue
        if w == "time":
            i += 1
            continue
        if w in ("sudo", "doas"):
            i += 1
            while i < len(words) and words[i].text.startswith("-"):
                opt = words[i].text
                i += 1
                if opt == "--":
                    break
                if opt in _SUDO_VALUE_OPTS:
                    i += 1
            continue
        if w == "env":
            i += 1
            while i < len(words):
                t = words[i].text
                if t in _ENV_VALUE_OPTS:
                    i += 2
                elif t.startswith("-") and t != "-":
                    i += 1
                    if t == "--":
                        break
                elif _ASSIGN.match(t):
                    name, _, value = t.partition("=")
                    env.append((name, value))
                    i += 1
                else:
                    break
            continue
        if w == "watch":
            i += 1
            while i < len(words) and words[i].text.startswith("-"):
                opt = words[i].text
                i += 2 if opt in ("-n", "--interval", "-q", "--equexit") else 1
            continue
        if w == "nice":
            i += 1
            if i < len(words) and words[i].text in ("-n", "--adjustment"):
                i += 2
            elif i < len(words) and re.match(r"^-\d+$|^--adjustment=", words[i].text):
                i += 1
            continue
        break
    return words[i:], env


def _is_kubectl(word: Word, aliases: dict[str, list[str]]) -> list[str] | None:
    """The words that the command name stands for (after `kubectl`), or None if it is not
    kubectl."""
    name = word.text
    if word.unexpanded:
        return None
    if name.startswith("\\"):
        name = name[1:]
    if name in aliases:
        return list(aliases[name])
    if name == "kubectl" or (name.endswith("/kubectl") and "/" in name):
        return []
    return None


# Programs that run kubectl with the words after their `kubectl` subcommand, their own options
# first (`minikube -p dev kubectl -- get po`, `k3s kubectl get po`).
_LAUNCHERS = ("minikube", "k3s", "microk8s")


def _launched_args(words: list[Word]) -> list[Word] | None:
    """kubectl's arguments when WORDS run it through another program, or None."""
    if words[0].unexpanded:
        return None
    name = words[0].text.rsplit("/", 1)[-1]
    if name == "kubectl-record":  # the recorder's launcher: kubectl-record -- ARGS
        return words[2:] if len(words) > 1 and words[1].text == "--" else None
    if name == "microk8s.kubectl":
        return words[1:]
    if name not in _LAUNCHERS:
        return None
    for j in range(1, len(words)):
        w = words[j].text
        if w == "kubectl":
            break
        # Only options (and their values) may stand before `kubectl`: `minikube ssh -- kubectl`
        # runs it somewhere else.
        if not (w.startswith("-") or words[j - 1].text.startswith("-")) or w == "--":
            return None
    else:
        return None
    args = words[j + 1 :]
    if name == "minikube":
        # minikube kubectl [its own options] -- ARGS
        end = next((k for k, w in enumerate(args) if w.text == "--"), None)
        if end is not None and all(w.text.startswith("-") for w in args[:end]):
            args = args[end + 1 :]
    return args


def parse_aliases(specs) -> dict[str, list[str]]:
    """`--alias k` (k stands for kubectl) or `--alias kgp='kubectl get pods'`."""
    import shlex

    aliases: dict[str, list[str]] = {}
    for spec in specs or ():
        name, sep, expansion = spec.partition("=")
        name = name.strip()
        if not name:
            continue
        if not sep:
            aliases[name] = []
            continue
        words = shlex.split(expansion)
        if words and (words[0] == "kubectl" or words[0].endswith("/kubectl")):
            aliases[name] = words[1:]
    return aliases


def kubectl_commands(text: str, aliases: dict[str, list[str]] | None = None):
    """The kubectl commands on one history entry, in order: (argv, env, unexpanded)."""
    aliases = aliases or {}
    found = []
    pending = [text]
    seen = 0
    while pending and seen < 50:
        seen += 1
        scan = _scan(pending.pop(0))
        for words in scan.commands:
            rest, env = _strip_prefixes(words)
            if not rest:
                continue
            prefix = _is_kubectl(rest[0], aliases)
            args = rest[1:]
            if prefix is None:
                args = _launched_args(rest)
                if args is None:
                    continue
                prefix = []
            argv = prefix + [w.text for w in args]
            if argv[:2] == ["record", "--"]:
                argv = argv[2:]  # `kubectl record -- get po` ran `kubectl get po`
            elif argv[:1] == ["record"]:
                continue  # the recorder's own commands
            found.append((argv, env, any(w.unexpanded for w in args)))
        pending.extend(scan.nested)
    return found


def _key(fmt: str, entry: HistoryEntry, part: int, occurrence: int) -> str:
    stamp = "" if entry.started is None else f"{entry.started:.0f}"
    h = hashlib.sha256(f"{fmt}\0{stamp}\0{occurrence}\0{part}\0{entry.text}".encode("utf-8", "surrogateescape"))
    return "import-" + h.hexdigest()[:32]


def extract(entries: list[HistoryEntry], fmt: str, aliases=None) -> list[ImportedLine]:
    if isinstance(aliases, (list, tuple)):
        aliases = parse_aliases(aliases)
    result: list[ImportedLine] = []
    occurrences: dict[tuple, int] = {}
    for entry in entries:
        commands = kubectl_commands(entry.text, aliases)
        if not commands:
            continue
        ident = (entry.started, entry.text)
        occurrence = occurrences.get(ident, 0)
        occurrences[ident] = occurrence + 1
        for part, (argv, env, unexpanded) in enumerate(commands):
            result.append(ImportedLine(
                started=entry.started, duration_s=entry.duration_s, argv=argv, env=env,
                unexpanded=unexpanded, raw_line=entry.text, line_no=entry.line_no, part=part,
                key=_key(fmt, entry, part, occurrence),
            ))
    return result


def read_history(fmt: str, path: str | None = None, aliases=None, environ=None) -> list[ImportedLine]:
    """The kubectl commands of a bash or zsh history file (default: the shell's own)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown history format {fmt!r} (expected one of {', '.join(FORMATS)})")
    path = path or default_history_file(fmt, environ)
    with open(path, "rb") as f:
        data = f.read()
    return parse(data, fmt, aliases)


def parse(data: bytes, fmt: str, aliases=None) -> list[ImportedLine]:
    entries = parse_bash_history(data) if fmt == "bash-history" else parse_zsh_history(data)
    return extract(entries, fmt, aliases)
