"""Masking of secrets on kubectl command lines and in free text.

The product promise: no secret typed on a command line reaches disk, output or the network
unmasked. A value is replaced by MASK, the record is kept, and callers learn that something
was masked. Masking errs towards hiding: a harmless value hidden costs little, a leaked
token costs a rotation. But it never fires on the bare word "secret": `kubectl get secret db
-o yaml` stays as typed.

Everything here works on the raw words (one output word per input word) so that a
misclassification by the argument parser can only ever add masking, never remove it.
This runs in the background ingester, so clarity beats speed; regexes compile at import.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Callable, Iterator, NamedTuple, Optional

try:  # the parser only sharpens a few decisions; masking must work (and import) without it
    from kubectl_record import kubectl_args as _kubectl_args
except Exception:  # noqa: BLE001 - a broken parser module must not stop masking
    _kubectl_args = None

MASK = "***"

# ---------------------------------------------------------------------------------------
# What a secret-looking key name is (env vars, --from-literal keys, JSON/YAML keys, query
# parameters, flags of other programs). One place, so every rule agrees.

_NAME_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
# A name whose last word ends like these is secret: DB_PASSWORD, PGPASSWORD, apiToken,
# refresh-token, client-secret, GOOGLE_APPLICATION_CREDENTIALS, X-Amz-Signature, SSH_PASSPHRASE.
_SECRET_ENDINGS = (
    "token", "password", "passwd", "secret", "credential", "passphrase", "apikey",
    "privatekey", "signature", "cookie",
)
# Too short or too common to match as endings: "monkey", "bypass" and the shell's own $PWD
# are not secrets, but DB_PASS, db-pwd, api_key, sig and basic-auth are.
_SECRET_LAST_WORDS = frozenset({"pass", "sig", "auth"})
_SECRET_LAST_WORDS_QUALIFIED = frozenset({"key", "pwd"})  # only after another word: KEY, PWD alone are not
_SECRET_FIRST_WORDS = frozenset({"auth", "authorization"})  # AUTH_HEADER, Authorization


def _name_words(name: str) -> list[str]:
    return [w.lower() for w in _NAME_WORD.findall(name)]


def _singular(word: str) -> str:
    return word[:-1] if word.endswith("s") and len(word) > 4 else word


def is_secret_name(name: str) -> bool:
    """Whether a key/variable/parameter NAME says its value is a secret.

    The last word decides (TOKEN_TTL, secretName and PASSWORD_FILE are not secrets), except
    that names starting with AUTH are secret, and ...KEY_DATA (client-key-data) is.
    A bare KEY is not: `key` is everywhere in Kubernetes (tolerations, selectors, key refs).
    """
    words = _name_words(name)
    if not words:
        return False
    last = _singular(words[-1])
    if last.endswith(_SECRET_ENDINGS) or last in _SECRET_LAST_WORDS:
        return True
    if len(words) > 1 and (last in _SECRET_LAST_WORDS_QUALIFIED or words[-2:] == ["key", "data"]):
        return True
    return words[0] in _SECRET_FIRST_WORDS


# ---------------------------------------------------------------------------------------
# Generic shapes: recognisable by the value alone, wherever it appears. Each pattern's group
# "s" is the part replaced by MASK; the rest of the match is kept for readability.

_AUTH_SCHEMES = "bearer|basic|token|digest|negotiate|ntlm"  # kept before a masked credential

_SHAPES: tuple[re.Pattern[str], ...] = tuple(re.compile(p) for p in (
    # PEM private key blocks (RSA, EC, OPENSSH, ENCRYPTED, ...), also truncated ones
    r"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY-----(?P<s>[\s\S]*?)(?:-----END \1PRIVATE KEY-----|\Z)",
    # JWT / JWS / JWE, e.g. service-account and OIDC tokens
    r"\b(?P<s>eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]*){0,3})",
    # AWS access key ids (long-lived AKIA, temporary ASIA)
    r"\b(?P<s>(?:AKIA|ASIA)[A-Z0-9]{16})\b",
    # AWS secret keys as written in credentials files and docs, with spaces around "="
    r"(?i)\baws_(?:secret_access_key|session_token)[\"']?[ \t]*[=:][ \t]*[\"']?(?P<s>[^\s\"',;\\]+)",
    # GitHub tokens: classic/OAuth/user/server/refresh, and fine-grained
    r"\b(?P<s>gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})",
    # GitLab personal access tokens
    r"\b(?P<s>glpat-[A-Za-z0-9_-]{16,})",
    # Slack bot/user/app/refresh/workspace tokens
    r"\b(?P<s>xox[bpars]-[A-Za-z0-9-]{10,})",
    # Google API keys
    r"\b(?P<s>AIza[0-9A-Za-z_-]{35})",
    # kubeadm bootstrap tokens (id.secret); not part of a longer dotted or dashed name
    r"(?<![\w.-])(?P<s>[a-z0-9]{6}\.[a-z0-9]{16})(?![\w.-])",
    # Authorization header values, keeping the scheme word
    r"(?i)\b(?:proxy-)?authorization[\"']?[ \t]*[:=][ \t]*[\"']?"
    rf"(?:(?:{_AUTH_SCHEMES})[ \t]+)?(?P<s>[^\s\"',;\\]+)",
    r"(?i)\bbearer[ \t]+(?P<s>[A-Za-z0-9._~+/-]{8,}=*)",
    # the password in scheme://user:password@host (greedy: an unencoded "@" in it still ends at the host)
    r"(?i)(?<![a-z0-9+.-])[a-z][a-z0-9+.-]*://[^\s/:@\"'\\]*:(?P<s>[^\s/\"'\\]+)@",
))
# URL query parameters: ?token=, &access_token=, &sig=, X-Amz-Signature=, password= ...
_QUERY_PARAM = re.compile(r"(?<=[?&])(?P<k>[^=&#?\s\"']+)=(?P<s>[^&#\s\"'\\]+)")


def _keep_all_but(m: re.Match[str]) -> str:
    """The match with its secret group "s" replaced by MASK (unchanged if already masked)."""
    secret = m.group("s")
    if not secret or secret == MASK:
        return m.group(0)
    start, end = m.start("s") - m.start(), m.end("s") - m.start()
    return m.group(0)[:start] + MASK + m.group(0)[end:]


def _mask_query_param(m: re.Match[str]) -> str:
    return _keep_all_but(m) if is_secret_name(m.group("k")) else m.group(0)


def _mask_shapes(s: str) -> str:
    for pattern in _SHAPES:
        s = pattern.sub(_keep_all_but, s)
    return _QUERY_PARAM.sub(_mask_query_param, s)


# ---------------------------------------------------------------------------------------
# KEY=VALUE words


_ASSIGNED_NAME = re.compile(r"-{0,2}[\w.\-/]+")  # a key, not a URL with a query (that is _QUERY_PARAM's)


def _mask_assignment(word: str) -> str:
    """`DB_PASSWORD=x` -> `DB_PASSWORD=***`: the value of a secret-named key."""
    name, eq, value = word.partition("=")
    if eq and value and value != MASK and _ASSIGNED_NAME.fullmatch(name) and is_secret_name(name.lstrip("-")):
        return f"{name}={MASK}"
    return word


def _mask_whole(value: str) -> str:
    return MASK if value else value


def _mask_every_value(word: str) -> str:
    """`K=V` -> `K=***` whatever K is. `K-` removes K and stays; any other word without "=" is all value."""
    name, eq, value = word.partition("=")
    if not eq:
        return word if word.endswith("-") else _mask_whole(word)
    return f"{name}={_mask_whole(value)}"


# ---------------------------------------------------------------------------------------
# Documents: `patch -p`, `run --overrides`, heredoc bodies.

_KIND_SECRET = re.compile(r"""\bkind["']?\s*:\s*["']?Secret\b""")
_DATA_KEYS = ("data", "stringData")


def _mentions_secret(doc: str) -> bool:
    # stringData exists only on Secrets; data is shared with ConfigMaps, so it needs the kind
    return bool(_KIND_SECRET.search(doc)) or "stringData" in doc


def _mask_document(doc: str, secret_target: bool) -> str:
    """Mask Secret data/stringData values (and secret-named keys) inside a JSON or YAML text.

    secret_target: the document is applied to a Secret (`patch secret x -p ...`), so its
    top-level `data` is Secret data even without a `kind`.
    """
    try:
        parsed = json.loads(doc)
    except ValueError:
        return _mask_loose_documents(doc, secret_target)
    if not isinstance(parsed, (dict, list)):
        return doc
    masked = _mask_json(parsed, secret_target)
    return doc if masked == parsed else _dump_like(masked, doc)


def _mask_json(node: object, secret: bool) -> object:
    """Mask a parsed JSON value; `secret`: this object (or these list items) belong to a Secret."""
    if isinstance(node, list) and node and all(isinstance(item, str) for item in node):
        return _mask_command(node)  # command/args of a container: ["sh", "-c", "..."], ["--token", "x"]
    if isinstance(node, list):  # a List of objects or a JSON-patch array: items share the target
        return [_mask_json(item, secret) for item in node]
    if isinstance(node, str):
        return mask_text(node)[0]
    if not isinstance(node, dict):
        return node
    secret = secret or node.get("kind") == "Secret"
    patch_path = node.get("path")
    patches_data = secret and isinstance(patch_path, str) and patch_path.startswith(("/data", "/stringData"))
    env_entry_secret = isinstance(node.get("name"), str) and is_secret_name(node["name"])
    out: dict[str, object] = {}
    for key, value in node.items():
        if key == "stringData" or (secret and key == "data") or (patches_data and key == "value"):
            out[key] = _mask_all_values(value)
        elif isinstance(value, str) and (is_secret_name(key) or (key == "value" and env_entry_secret)):
            out[key] = _mask_whole(value)
        else:  # nested objects decide by their own kind
            out[key] = _mask_json(value, False)
    return out


def _mask_all_values(node: object) -> object:
    if isinstance(node, dict):
        return {k: _mask_all_values(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_mask_all_values(v) for v in node]
    return node if node in (None, "") else MASK


def _dump_like(value: object, original: str) -> str:
    """Re-serialise in roughly the original's layout so the record still reads naturally."""
    if "\n" in original.strip():
        return json.dumps(value, ensure_ascii=False, indent=2)
    spaced = re.search(r'"\s*:\s', original) is not None
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": ") if spaced else (",", ":"))


# YAML-ish lines and flow mappings, for texts that are not JSON (YAML patches, heredocs,
# broken JSON). A block pair at the start of a line takes the rest of the line as its value.
_BLOCK_PAIR = re.compile(
    r"""^[ \t]*(?:-[ \t]+)?(?P<q>["']?)(?P<key>[^\s"'#:{}\[\],](?:[^"':{}\[\],\n]*[^\s"':{}\[\],])?)(?P=q)"""
    r"""[ \t]*:(?:[ \t]+(?P<val>.*?))?[ \t]*$"""
)
_QUOTED_SCALAR = r"""(?:"(?:[^"\\\n]|\\.)*"|'[^'\n]*')"""
_QUOTED = re.compile(_QUOTED_SCALAR)
_INLINE_PAIR = re.compile(
    r"""(?<![\w.\-/])(?P<q>["']?)(?P<key>[\w.\-/]+)(?P=q)[ \t]*:(?:[ \t]+|(?=["']))"""
    rf"""(?P<val>{_QUOTED_SCALAR}|(?i:(?:{_AUTH_SCHEMES})[ \t]+)?[^\s,{{}}\[\]"';&|]+)"""
)
_INLINE_DATA_KEY = re.compile(r"""["']?\b(?:data|stringData)["']?[ \t]*:""")
_BLOCK_SCALAR = re.compile(r"[|>][-+0-9]*")


_SCHEMED_VALUE = re.compile(rf"(?i)((?:{_AUTH_SCHEMES})[ \t]+)\S.*")


def _masked_scalar(val: str) -> str:
    """A YAML/JSON scalar replaced by MASK, keeping its quotes and an auth scheme (`Bearer ***`)."""
    if len(val) >= 2 and val[0] in "\"'" and val[-1] == val[0]:
        return val[0] + _masked_scalar(val[1:-1]) + val[0] if len(val) > 2 else val
    scheme = _SCHEMED_VALUE.fullmatch(val)
    return scheme.group(1) + MASK if scheme else MASK


def _mask_inline_pairs(line: str, secret: bool, in_data: bool) -> str:
    """Mask quoted/flow pairs in one line: secret-named keys; in a Secret, all after `data:`."""
    data_at = _INLINE_DATA_KEY.search(line) if secret else None

    def mask(m: re.Match[str]) -> str:
        after_data = data_at is not None and m.start() >= data_at.end()
        if in_data or after_data or is_secret_name(m.group("key")):
            return m.group(0)[: m.start("val") - m.start()] + _masked_scalar(m.group("val"))
        return m.group(0)

    return _INLINE_PAIR.sub(mask, line)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _mask_loose_document(text: str, secret: bool) -> str:
    """Mask secret-named keys' values anywhere, and, when `secret`, every value under data/stringData."""
    out: list[str] = []
    data_indent: Optional[int] = None    # indent of the data:/stringData: line whose block we are in
    scalar_indent: Optional[int] = None  # indent of a secret `key: |` whose block-scalar lines we are in
    for line in text.split("\n"):
        indent, content = _indent(line), line.strip()
        if scalar_indent is not None and (not content or indent > scalar_indent):
            out.append(line[:indent] + MASK if content else line)
            continue
        scalar_indent = None
        if data_indent is not None and content and indent <= data_indent:
            data_indent = None
        in_data = data_indent is not None and bool(content)
        m = _BLOCK_PAIR.match(line)
        val = (m.group("val") or "") if m else ""
        if m and secret and m.group("key") in _DATA_KEYS and (not val or val[0] in "{["):
            data_indent = indent
        if m and (in_data or is_secret_name(m.group("key"))) and val:
            if _BLOCK_SCALAR.fullmatch(val):
                scalar_indent = indent
                out.append(line)
                continue
            if val[0] not in "{[":  # a flow collection is left to the inline pairs below
                quoted = _QUOTED.match(val)  # `"abc",` in JSON-ish lines keeps its comma
                masked = _masked_scalar(quoted.group()) + val[quoted.end():] if quoted else _masked_scalar(val)
                out.append(line[: m.start("val")] + masked + line[m.end("val"):])
                continue
        if in_data and not m and not _INLINE_PAIR.search(line) and content.strip("{}[], "):
            out.append(line[:indent] + MASK)  # a stray data line (continuation, odd syntax): hide it
            continue
        out.append(_mask_inline_pairs(line, secret, in_data))
    return "\n".join(out)


_YAML_DOCUMENT_START = re.compile(r"(?m)^(?=---)")


def _mask_loose_documents(text: str, secret_target: bool) -> str:
    """Mask a YAML stream document by document: only a Secret's `data` is all secret."""
    return "".join(
        _mask_loose_document(doc, secret_target or _mentions_secret(doc)) for doc in _YAML_DOCUMENT_START.split(text)
    )


def _mask_generic(text: str) -> str:
    """The rules that need no context, for every word and every text: `key: value` pairs with a
    secret-named key (JSON bodies, headers, YAML; a Secret's data), and the generic shapes."""
    return _mask_shapes(_mask_loose_documents(text, secret_target=False))


# ---------------------------------------------------------------------------------------
# kubectl's own arguments

# Flags whose values are kept as typed (paths, selectors), even when the name sounds secret
# (--client-key is a file) or the value holds a secret-sounding key (-l token=abc).
_PLAIN_FLAGS = frozenset({
    "selector", "field-selector", "labels", "label-columns", "filename", "kustomize",
    "kubeconfig", "cache-dir", "from-file", "from-env-file", "patch-file", "certificate-authority",
    "client-certificate", "client-key", "cert", "key", "auth-provider",
})
_DOCUMENT_FLAGS = frozenset({"patch", "overrides"})
# Flags whose value is KEY=VALUE (masked by key name, see _mask_assignment) or an argument of
# another program (--exec-arg=--token=x).
_ASSIGNMENT_FLAGS = frozenset({"env", "from-literal", "auth-provider-arg", "exec-env", "exec-arg"})
_SHORT_FLAGS = {
    "-p": "patch", "-e": "env", "-l": "selector", "-L": "label-columns", "-f": "filename", "-k": "kustomize",
}
# `config set users.NAME.token VALUE` and friends: the property paths that hold credentials
_CONFIG_CREDENTIAL_PATH = re.compile(r"users\..+\.(?:token|password|client-key-data|auth-provider\.config\..+)")
_SECRET_RESOURCE = re.compile(r"(?i)secrets?(?:[./].*)?")


class _KubectlContext(NamedTuple):
    secret_create: bool        # `create secret ...`: every --from-literal value is secret
    patch_secret: bool         # `patch secret ...`: the patch's top-level data is Secret data
    config_value: Optional[str]  # the VALUE of `config set <credential path> VALUE`, per the parser


class _Parsed(NamedTuple):
    verb: str = ""
    resources: tuple[str, ...] = ()
    positionals: tuple[str, ...] = ()


def _parsed(argv: list[str]) -> _Parsed:
    """What the shared parser makes of argv; empty if it is missing or fails."""
    if _kubectl_args is None:
        return _Parsed()
    try:
        parsed = _kubectl_args.parse(argv)
        return _Parsed(parsed.verb or "", tuple((parsed.resource or "").split(",")), tuple(parsed.positionals))
    except Exception:  # noqa: BLE001 - masking must survive a parser bug
        return _Parsed()


def _context(argv: list[str], end: int) -> _KubectlContext:
    # Raw-word checks OR the parser: either may flag a context, so a parser mistake can only add masking.
    verb, resources, positionals = _parsed(argv)
    lowered = [w.lower() for w in argv[:end]]
    raw_create = "create" in lowered and "secret" in lowered[lowered.index("create") + 1:]
    # a patch whose target is in a file (`patch -f x.yaml`, -k dir) may well be a Secret
    raw_patch = "patch" in lowered and any(
        w.startswith(("-f", "--filename", "-k", "--kustomize")) or _SECRET_RESOURCE.fullmatch(w)
        for w in lowered[lowered.index("patch") + 1:]
    )
    parsed_patch = verb == "patch" and (not positionals or "secrets" in resources)
    config_value = None
    if verb == "config set" and len(positionals) >= 2 and _CONFIG_CREDENTIAL_PATH.fullmatch(positionals[0]):
        config_value = positionals[1]
    return _KubectlContext(raw_create or verb.startswith("create secret"), raw_patch or parsed_patch, config_value)


def _mask_flag_value(ctx: _KubectlContext, name: str, value: str) -> str:
    if name in _PLAIN_FLAGS:
        return value
    if name in _DOCUMENT_FLAGS:
        return _mask_document(value, ctx.patch_secret and name == "patch")
    if name == "exec-env" or (name == "from-literal" and ctx.secret_create):
        return _mask_every_value(value)
    if name not in _ASSIGNMENT_FLAGS and is_secret_name(name):  # --token, --password, --docker-password, ...
        return _mask_whole(value)
    return _mask_assignment(value)


def _takes_value(name: str) -> bool:
    """Whether `--name WORD` hands WORD to a rule here (other flags' values read as plain words)."""
    return name in _PLAIN_FLAGS or name in _DOCUMENT_FLAGS or name in _ASSIGNMENT_FLAGS or is_secret_name(name)


def _mask_kubectl(argv: list[str]) -> list[str]:
    """Mask the words following `kubectl`."""
    if argv[:1] == ["--"]:  # `minikube kubectl -- get po`
        return ["--"] + _mask_kubectl(argv[1:])
    if argv[:1] == ["record"]:  # `kubectl record -- ARGS`: ARGS is the kubectl command line
        if "--" not in argv:
            return _mask_program(["kubectl"] + argv)[1:]
        cut = argv.index("--") + 1
        return _mask_program(["kubectl"] + argv[:cut])[1:] + _mask_kubectl(argv[cut:])
    end = argv.index("--") if "--" in argv else len(argv)
    ctx = _context(argv, end)
    out = list(argv)
    pending: Optional[Callable[[str], str]] = None  # the rule for a flag's value in the next word
    config_value_next = False  # after `users.x.token`: the next plain word is the credential
    for i, word in enumerate(argv[:end]):
        if pending is not None:
            out[i], pending = pending(word), None
        elif config_value_next and not word.startswith("-"):
            out[i], config_value_next = _mask_whole(word), False
        elif word.startswith("--") and "=" in word:
            name, _, value = word[2:].partition("=")
            out[i] = f"--{name}={_mask_flag_value(ctx, name, value)}"
        elif word.startswith("--"):
            name = word[2:]
            if _takes_value(name):
                pending = lambda v, name=name: _mask_flag_value(ctx, name, v)  # noqa: E731
        elif word[:2] in _SHORT_FLAGS:
            name = _SHORT_FLAGS[word[:2]]
            if len(word) == 2:
                pending = lambda v, name=name: _mask_flag_value(ctx, name, v)  # noqa: E731
            else:  # -pVALUE or -p=VALUE
                sep = "=" if word[2] == "=" else ""
                out[i] = word[:2] + sep + _mask_flag_value(ctx, name, word[2 + len(sep):])
        elif ctx.config_value is not None and word == ctx.config_value:
            out[i] = MASK
        else:
            out[i] = _mask_assignment(word)
            config_value_next = config_value_next or bool(_CONFIG_CREDENTIAL_PATH.fullmatch(word))
        out[i] = _mask_generic(out[i])
    if end < len(argv):
        out[end + 1:] = _mask_command(argv[end + 1:])
    return out


# ---------------------------------------------------------------------------------------
# Other programs: after `--` in exec/run/debug, and commands in shell lines.

_KUBECTL_NAMES = frozenset({"kubectl", "kubectl.exe", "k", "oc", "kubecolor", "microk8s.kubectl"})
# Words that may stand before the program: wrappers, and shell keywords (`do kubectl ...`)
_PREFIX_WORDS = frozenset({
    "sudo", "env", "time", "timeout", "nohup", "nice", "exec", "command", "builtin", "watch", "xargs",
    "minikube", "microk8s", "k3s", "k0s",
    "do", "then", "else", "if", "elif", "while", "until", "!", "{",
})
_ENV_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


class _Option(NamedTuple):
    mask: Callable[[str], str]
    attached_only: bool  # `mysql -p` alone prompts; only `-pSECRET` carries the password


def _mask_userpass(value: str) -> str:
    """`user:pass` -> `user:***`; a bare user (curl then prompts) stays."""
    user, colon, password = value.partition(":")
    return f"{user}:{MASK}" if colon and password else value


_P_ATTACHED = {"-p": _Option(_mask_whole, attached_only=True)}
_P_VALUE = {"-p": _Option(_mask_whole, attached_only=False)}
_CURL = {opt: _Option(_mask_userpass, attached_only=False) for opt in ("-u", "-U", "--user", "--proxy-user")}
# Options whose secret-ness the name does not tell; --password=... and the like need no entry.
_PROGRAM_OPTIONS: dict[str, dict[str, _Option]] = {
    "mysql": _P_ATTACHED, "mysqldump": _P_ATTACHED, "mysqladmin": _P_ATTACHED, "mariadb": _P_ATTACHED,
    "mariadb-dump": _P_ATTACHED,
    "mongo": _P_VALUE, "mongosh": _P_VALUE, "mongodump": _P_VALUE, "mongorestore": _P_VALUE, "sshpass": _P_VALUE,
    "redis-cli": {"-a": _Option(_mask_whole, attached_only=False)},
    "curl": _CURL,
}
# Programs recognised after a wrapper's argument (`watch -n 5 curl ...`: 5 is watch's, not the program)
_KNOWN_PROGRAMS = _PREFIX_WORDS | _KUBECTL_NAMES | frozenset(_PROGRAM_OPTIONS) | {"kubectl-record"}


def _program_name(word: str) -> str:
    return word.rsplit("/", 1)[-1]


def _mask_command(words: list[str]) -> list[str]:
    """A simple command: `VAR=x` prefixes, wrappers (sudo, env, watch ...), then the program."""
    out = list(words)
    n = 0
    while n < len(words) and _ENV_ASSIGNMENT.match(words[n]):
        n += 1
    pairs, _ = mask_env_assignments([(w.split("=", 1)[0], w.split("=", 1)[1]) for w in words[:n]])
    out[:n] = [f"{name}={value}" for name, value in pairs]
    program = n  # past the wrappers, their options and arguments: `sudo -u ops`, `timeout 10`, `env A=b`
    while program < len(words) and _program_name(words[program]) not in _KUBECTL_NAMES:
        in_wrapper = program > n
        if _program_name(words[program]) in _PREFIX_WORDS \
                or (in_wrapper and (words[program].startswith("-") or _ENV_ASSIGNMENT.match(words[program]))) \
                or (in_wrapper and program + 1 < len(words) and _program_name(words[program + 1]) in _KNOWN_PROGRAMS):
            program += 1
        else:
            break
    if program < len(words) and _program_name(words[program]) in _KUBECTL_NAMES:
        out[n:program + 1] = _mask_program(words[n:program + 1])
        out[program + 1:] = _mask_kubectl(words[program + 1:])
    elif program < len(words) and _program_name(words[program]) == "kubectl-record" and "--" in words[program:]:
        cut = words.index("--", program) + 1
        out[n:cut] = _mask_program(words[n:cut])
        out[cut:] = _mask_kubectl(words[cut:])
    else:
        out[n:program] = _mask_program(words[n:program])
        out[program:] = _mask_program(words[program:])
    return out


def _mask_program(words: list[str]) -> list[str]:
    """Any program's words (words[0] is its name, read like the rest: it may be a JSON args list's
    first item): secret-named options and assignments, per-program password options, quoted
    scripts (sh -c '...'), and the generic rules."""
    options = _PROGRAM_OPTIONS.get(_program_name(words[0]), {}) if words else {}
    out = list(words)
    pending: Optional[Callable[[str], str]] = None  # a program option's value comes next
    secret_next = False  # after `--password`: the next word is its value unless it is an option
    for i, word in enumerate(words):
        value_expected, secret_next = secret_next, False
        if pending is not None:
            out[i], pending = pending(word), None
        elif value_expected and not word.startswith("-"):
            out[i] = _mask_whole(word)
        elif word.startswith("--") and "=" in word:
            name, _, value = word.partition("=")
            if name in options:
                out[i] = f"{name}={options[name].mask(value)}"
            elif is_secret_name(name):
                out[i] = f"{name}={_mask_whole(value)}"
            else:
                out[i] = f"{name}={_mask_assignment(value)}"
        elif word in options and not options[word].attached_only:
            pending = options[word].mask
        elif word.startswith("--") and is_secret_name(word[2:]):
            secret_next = True
        elif word[:2] in options and len(word) > 2:  # -pSECRET, -uuser:pass
            out[i] = word[:2] + options[word[:2]].mask(word[2:])
        else:
            out[i] = _mask_assignment(word)
        if _has_quoted_space(out[i]):  # a script or a header: `sh -c 'mysql -pX'`, -H 'X-Api-Key: k'
            out[i] = mask_text(out[i])[0]
        out[i] = _mask_generic(out[i])
    return out


# ---------------------------------------------------------------------------------------
# Shell text


class _Word(NamedTuple):
    start: int
    end: int
    value: str               # unquoted; commands inside $(...) and `...` already masked
    masked_inside: bool      # whether such an inner command had something masked


_BLANKS = " \t"  # what separates words (a newline ends a command)
_OPERATORS = ";&|()\n"
_ANSI_C_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "e": "\x1b", "a": "\a"}


def _closing(text: str, i: int, opener: str, closer: str) -> int:
    """Index just past the `closer` matching the `opener` at text[i] (or len(text))."""
    depth = 0
    for j in range(i, len(text)):
        if text[j] == opener:
            depth += 1
        elif text[j] == closer:
            depth -= 1
            if depth == 0:
                return j + 1
    return len(text)


def _shell_commands(text: str) -> Iterator[list[_Word]]:
    """The simple commands in a shell text, as words with their spans in the text.

    Lenient by design (history lines are often cut or odd): an unterminated quote runs to
    the end; redirection targets and heredoc bodies are not command words (the text-wide
    rules in mask_text still see them).
    """
    words: list[_Word] = []
    value: list[str] = []
    start: Optional[int] = None
    heredocs: list[tuple[str, bool]] = []  # (delimiter, strip leading tabs) waiting for the next newline
    skip_next_word = False
    masked_inside = False
    i = 0

    def finish_word() -> None:
        nonlocal start, skip_next_word, masked_inside
        if start is not None:
            if skip_next_word:
                skip_next_word = False
            else:
                words.append(_Word(start, i, "".join(value), masked_inside))
        value.clear()
        start, masked_inside = None, False

    while i < len(text):
        c = text[i]
        if c in _BLANKS:
            finish_word()
            i += 1
        elif c in _OPERATORS:
            finish_word()
            if words:
                yield words
                words = []
            i += 1
            if c == "\n" and heredocs:
                i = _skip_heredoc_bodies(text, i, heredocs)
                heredocs = []
        elif c in "<>":
            finish_word()
            if text.startswith("<<", i) and not text.startswith("<<<", i):
                i += 2
                strip_tabs = text.startswith("-", i)
                i += strip_tabs
                while i < len(text) and text[i] in _BLANKS:
                    i += 1
                m = re.match(r"""(['"]?)([^\s'";&|<>()]+)\1""", text[i:])
                if m:
                    heredocs.append((m.group(2), strip_tabs))
                    i += m.end()
                continue
            while i < len(text) and text[i] in "<>&":
                i += 1
            skip_next_word = True
        elif c == "#" and start is None:
            while i < len(text) and text[i] != "\n":
                i += 1
        else:
            if start is None:
                start = i
            i, masked = _read_word_part(text, i, value)
            masked_inside = masked_inside or masked
    finish_word()
    if words:
        yield words


def _read_word_part(text: str, i: int, value: list[str]) -> tuple[int, bool]:
    """Append the unquoted value of the word part at text[i] to `value`.

    Returns the next index, and whether a command substitution in it had something masked.
    """
    c = text[i]
    if c == "'":
        end = text.find("'", i + 1)
        end = len(text) if end < 0 else end
        value.append(text[i + 1:end])
        return end + 1, False
    if c == '"' or text.startswith("$'", i):
        ansi_c = c == "$"
        j = i + (2 if ansi_c else 1)
        quote = "'" if ansi_c else '"'
        masked = False
        while j < len(text) and text[j] != quote:
            if not ansi_c and (text.startswith("$(", j) or text[j] == "`"):
                j, inner_masked = _read_substitution(text, j, value)
                masked = masked or inner_masked
            elif text[j] == "\\" and j + 1 < len(text):
                escaped = text[j + 1]
                if ansi_c:
                    value.append(_ANSI_C_ESCAPES.get(escaped, "\\" + escaped))
                elif escaped in '"\\$`':
                    value.append(escaped)
                elif escaped != "\n":
                    value.append("\\" + escaped)
                j += 2
            else:
                value.append(text[j])
                j += 1
        return j + 1, masked
    if text.startswith("$(", i) or c == "`":
        return _read_substitution(text, i, value)
    if c == "\\" and i + 1 < len(text):
        if text[i + 1] != "\n":  # backslash-newline continues the line
            value.append(text[i + 1])
        return i + 2, False
    value.append(c)
    return i + 1, False


def _read_substitution(text: str, i: int, value: list[str]) -> tuple[int, bool]:
    """A command substitution `$(...)` or `...` at text[i]: kept as typed, with its command masked."""
    if text[i] == "$":
        opener, end = 2, _closing(text, i + 1, "(", ")")
    else:
        opener, end = 1, text.find("`", i + 1) + 1 or len(text)
    closer = text[end - 1] if end - i > opener and text[end - 1] in ")`" else ""
    inner, masked = mask_text(text[i + opener:end - len(closer)])
    value.append(text[i:i + opener] + inner + closer)
    return end, masked


def _skip_heredoc_bodies(text: str, i: int, heredocs: list[tuple[str, bool]]) -> int:
    for delimiter, strip_tabs in heredocs:
        while i < len(text):
            end = text.find("\n", i)
            end = len(text) if end < 0 else end
            line = text[i:end]
            i = end + 1
            if (line.lstrip("\t") if strip_tabs else line) == delimiter:
                break
    return min(i, len(text))


def _has_quoted_space(word: str) -> bool:
    """Whether a word holds whitespace outside `$(...)` and backticks, i.e. whitespace that was
    quoted in the text it came from. Such a word is shorter than that text, so reading it as
    text again (a script, a header) always ends."""
    i = 0
    while i < len(word):
        if word.startswith("$(", i):
            i = _closing(word, i + 1, "(", ")")
        elif word[i] == "`":
            end = word.find("`", i + 1)
            i = len(word) if end < 0 else end + 1
        elif word[i] in _BLANKS or word[i] == "\n":
            return True
        else:
            i += 1
    return False


def _requote(raw: str, original: str, masked: str) -> str:
    """The masked word in the text, keeping the user's quoting where it is simple."""
    if raw == original or not any(c in raw for c in "'\"\\"):  # unquoted (maybe with a $(...) masked inside)
        return masked
    if raw == f"'{original}'" and "'" not in masked:
        return f"'{masked}'"
    if raw == f'"{original}"' and not any(c in masked for c in '"\\$`'):
        return f'"{masked}"'
    return shlex.quote(masked)


# ---------------------------------------------------------------------------------------
# Public API


def mask_argv(argv: list[str]) -> tuple[list[str], bool]:
    """Mask the arguments following `kubectl`; one output word per input word.

    Returns the masked words and whether anything was masked.
    """
    masked = _mask_kubectl(list(argv))
    return masked, masked != list(argv)


def mask_env_assignments(pairs: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], bool]:
    """Mask `VAR=value` prefixes of a command: secret-named variables, and generic shapes in any value."""
    masked = [
        (name, MASK if value and value != MASK and is_secret_name(name) else _mask_generic(value))
        for name, value in pairs
    ]
    return masked, masked != list(pairs)


def mask_text(text: str) -> tuple[str, bool]:
    """Mask free text: a shell history line (kubectl and other commands, VAR=x prefixes,
    heredocs), or any string such as a field of an imported record.

    Words are masked by the same rules as mask_argv and written back in place, keeping the
    rest of the text as typed; then the text-wide rules (YAML/JSON pairs with secret keys,
    Secret data in heredocs, generic shapes) run over everything, comments included.
    """
    pieces: list[str] = []
    done = 0
    for command in _shell_commands(text):
        original = [w.value for w in command]
        masked = _mask_command(original)
        for word, new in zip(command, masked):
            if new != word.value or word.masked_inside:
                pieces += [text[done:word.start], _requote(text[word.start:word.end], word.value, new)]
                done = word.end
    pieces.append(text[done:])
    masked_text = _mask_generic("".join(pieces))
    return masked_text, masked_text != text
