"""Masking of secrets on kubectl command lines (kubectl_record/redact.py), driven by the corpus.

The promise pinned down here: a secret typed on a command line never survives masking, the
record keeps its shape (one word per word, flags and keys as typed), masking says that it
masked, and nothing that merely looks like a secret is touched.
"""

from __future__ import annotations

import json
import random
import shlex
import time

import pytest

from kubectl_record import redact
from kubectl_record.redact import MASK, is_secret_name, mask_argv, mask_env_assignments, mask_text
from tests.redaction_corpus import LOOKALIKES, SECRET_CASES, SHELL_LINE_CASES


def _case_id(argv: list[str]) -> str:
    return " ".join(argv)[:60]


secret_cases = pytest.mark.parametrize(
    ("argv", "secrets"), SECRET_CASES, ids=[_case_id(argv) for argv, _ in SECRET_CASES]
)
lookalikes = pytest.mark.parametrize("argv", LOOKALIKES, ids=[_case_id(argv) for argv in LOOKALIKES])
shell_lines = pytest.mark.parametrize(
    ("line", "secrets"), SHELL_LINE_CASES, ids=[line[:60] for line, _ in SHELL_LINE_CASES]
)


# --- the corpus itself is meaningful -----------------------------------------------------


def test_corpus_is_large_enough_and_every_secret_is_distinct_and_present() -> None:
    assert len(SECRET_CASES) >= 45 and len(LOOKALIKES) >= 35 and SHELL_LINE_CASES
    secrets = [s for _, case in SECRET_CASES for s in case] + [s for _, case in SHELL_LINE_CASES for s in case]
    assert len(secrets) == len(set(secrets)), "a byte scan needs every secret to be unique"
    for argv, case in SECRET_CASES:
        assert all(s in "\n".join(argv) for s in case), argv
    for line, case in SHELL_LINE_CASES:
        assert all(s in line for s in case), line


# --- command lines with secrets -----------------------------------------------------------


@secret_cases
def test_every_secret_is_masked_and_reported(argv: list[str], secrets: list[str]) -> None:
    masked, redacted = mask_argv(argv)
    assert redacted
    assert not [s for s in secrets if s in "\n".join(masked)]
    assert any(MASK in word for word in masked)


@secret_cases
def test_masking_keeps_the_command_shape(argv: list[str], secrets: list[str]) -> None:
    masked, _ = mask_argv(argv)
    assert len(masked) == len(argv), "one output word per input word"
    for typed, kept in zip(argv, masked):
        if not any(s in typed for s in secrets):
            assert kept == typed, "a word without a secret stays as typed"
        elif typed.startswith("-"):
            flag = typed.split("=", 1)[0] if typed.startswith("--") else typed[:2]
            assert kept.startswith(flag), "the flag name stays"


@secret_cases
def test_masking_masked_output_changes_nothing(argv: list[str], secrets: list[str]) -> None:
    masked, _ = mask_argv(argv)
    assert mask_argv(masked) == (masked, False)


@secret_cases
def test_the_typed_line_of_every_case_is_masked_as_text(argv: list[str], secrets: list[str]) -> None:
    line = shlex.join(["kubectl", *argv])
    masked, redacted = mask_text(line)
    assert redacted
    assert not [s for s in secrets if s in masked]
    assert mask_text(masked) == (masked, False)


# --- look-alikes ----------------------------------------------------------------------------


@lookalikes
def test_lookalikes_stay_as_typed(argv: list[str]) -> None:
    assert mask_argv(argv) == (argv, False)


@lookalikes
def test_lookalikes_stay_as_typed_in_text(argv: list[str]) -> None:
    line = shlex.join(["kubectl", *argv])
    assert mask_text(line) == (line, False)


# --- shell lines ------------------------------------------------------------------------------


@shell_lines
def test_shell_lines_lose_their_secrets(line: str, secrets: list[str]) -> None:
    masked, redacted = mask_text(line)
    assert redacted
    assert not [s for s in secrets if s in masked]
    assert mask_text(masked) == (masked, False)


def test_text_keeps_everything_but_the_secret() -> None:
    assert mask_text("PGPASSWORD=hunter2x kubectl exec db -- psql") == ("PGPASSWORD=*** kubectl exec db -- psql", True)
    assert mask_text("kubectl get po -n prod | grep web") == ("kubectl get po -n prod | grep web", False)


def test_heredoc_secret_data_is_masked_but_the_manifest_shape_stays() -> None:
    line = "kubectl apply -f - <<EOF\nkind: Secret\nmetadata:\n  name: db\ndata:\n  password: aGVsbG8=\nEOF"
    masked, redacted = mask_text(line)
    assert redacted
    assert masked == line.replace("aGVsbG8=", MASK)


def test_a_configmap_heredoc_keeps_its_data() -> None:
    line = "kubectl apply -f - <<EOF\nkind: ConfigMap\ndata:\n  mode: fast\nEOF"
    assert mask_text(line) == (line, False)


# --- exact outputs for the main shapes ---------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["get", "po", "--token=abc"], ["get", "po", "--token=***"]),
        (["get", "po", "--token", "abc"], ["get", "po", "--token", "***"]),
        (["create", "secret", "generic", "x", "--from-literal=password=abc"],
         ["create", "secret", "generic", "x", "--from-literal=password=***"]),
        (["apply", "-f", "https://user:pw@host/x"], ["apply", "-f", "https://user:***@host/x"]),
        (["config", "set", "users.u.token", "abc"], ["config", "set", "users.u.token", "***"]),
        (["exec", "db", "--", "mysql", "-pabc"], ["exec", "db", "--", "mysql", "-p***"]),
        (["exec", "web", "--", "curl", "-H", "Authorization: Bearer abcdefgh1"],
         ["exec", "web", "--", "curl", "-H", "Authorization: Bearer ***"]),
    ],
)
def test_only_the_secret_part_of_a_word_is_masked(argv: list[str], expected: list[str]) -> None:
    assert mask_argv(argv) == (expected, True)


def test_from_literal_keys_decide_outside_a_secret() -> None:
    masked, _ = mask_argv(["create", "configmap", "c", "--from-literal=mode=fast", "--from-literal=api_token=t1"])
    assert masked[3:] == ["--from-literal=mode=fast", "--from-literal=api_token=***"]


def test_a_value_flag_takes_the_next_word_even_if_it_looks_like_a_flag() -> None:
    # pflag hands `--token -x9` the value "-x9"; so must masking
    assert mask_argv(["get", "po", "--token", "-x9"]) == (["get", "po", "--token", "***"], True)


def test_a_password_prompt_and_a_bare_user_stay() -> None:
    assert mask_argv(["exec", "db", "--", "mysql", "-p", "app"])[1] is False
    assert mask_argv(["exec", "web", "--", "curl", "-u", "admin", "http://x"])[1] is False


def test_config_set_value_is_masked_when_flags_come_between() -> None:
    masked, _ = mask_argv(["config", "set", "users.u.password", "--set-raw-bytes=false", "pw-after-flag"])
    assert masked[-1] == MASK and masked[-2] == "--set-raw-bytes=false"


def test_kubectl_record_wrapper_line_is_masked_as_kubectl() -> None:
    masked, redacted = mask_argv(["record", "--", "create", "secret", "generic", "x", "--from-literal=k=v1"])
    assert redacted and masked[-1] == "--from-literal=k=***"


# --- independence from the argument parser ---------------------------------------------------


class _FailingParser:
    @staticmethod
    def parse(argv: list[str]) -> object:
        raise RuntimeError("parser bug")


class _MisleadingParser:
    @staticmethod
    def parse(argv: list[str]) -> object:
        return type("Parsed", (), {"verb": "get", "resource": "pods", "positionals": ["a", "b"]})


@pytest.mark.parametrize("parser", [None, _FailingParser, _MisleadingParser], ids=["absent", "failing", "misleading"])
def test_masking_holds_whatever_the_parser_says(parser: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redact, "_kubectl_args", parser)
    for argv, secrets in SECRET_CASES:
        masked, redacted = mask_argv(argv)
        assert redacted and not [s for s in secrets if s in "\n".join(masked)], argv
    for argv in LOOKALIKES:
        assert mask_argv(argv) == (argv, False)


# --- documents --------------------------------------------------------------------------------


@secret_cases
def test_masked_json_documents_stay_valid_json(argv: list[str], secrets: list[str]) -> None:
    for typed, kept in zip(argv, mask_argv(argv)[0]):
        document = typed.split("=", 1)[1] if typed.startswith(("-p=", "--patch=", "--overrides=")) else typed
        try:
            json.loads(document)
        except ValueError:
            continue
        masked_document = kept[len(typed) - len(document):]
        assert json.loads(masked_document) is not None


def test_secret_patch_keeps_keys_and_masks_each_value() -> None:
    patch = '{"data": {"user": "YWRtaW4=", "password": "aHVudGVy"}, "metadata": {"labels": {"a": "b"}}}'
    masked, _ = mask_argv(["patch", "secret", "db", "-p", patch])
    assert json.loads(masked[-1]) == {"data": {"user": MASK, "password": MASK}, "metadata": {"labels": {"a": "b"}}}


def test_configmap_patch_data_stays_unless_a_key_is_secret_named() -> None:
    patch = '{"data":{"mode":"fast","db_password":"x1"}}'
    masked, _ = mask_argv(["patch", "configmap", "app", "-p", patch])
    assert json.loads(masked[-1]) == {"data": {"mode": "fast", "db_password": MASK}}


def test_unparseable_secret_patch_masks_its_values() -> None:
    masked, redacted = mask_argv(["patch", "secret", "db", "-p", "{'data': {'k': 'v-broken-1'"])
    assert redacted and "v-broken-1" not in masked[-1] and "'data'" in masked[-1]


# --- env assignments and names ---------------------------------------------------------------


def test_env_assignments_mask_secret_names_and_shapes_only() -> None:
    pairs = [("KUBECONFIG", "/tmp/kc"), ("NS", "prod"), ("GITHUB_TOKEN", "t1"), ("DB_URL", "postgres://u:p1@h/db")]
    masked, redacted = mask_env_assignments(pairs)
    assert redacted
    assert masked == [
        ("KUBECONFIG", "/tmp/kc"), ("NS", "prod"), ("GITHUB_TOKEN", MASK), ("DB_URL", "postgres://u:***@h/db"),
    ]
    assert mask_env_assignments(masked) == (masked, False)
    assert mask_env_assignments([("KUBECONFIG", "/tmp/kc")]) == ([("KUBECONFIG", "/tmp/kc")], False)


@pytest.mark.parametrize(
    "name",
    ["PGPASSWORD", "DB_PASS", "db-pwd", "api_key", "apiKey", "AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN", "refresh-token",
     "client-secret", "client-key-data", "GOOGLE_APPLICATION_CREDENTIALS", "AUTH_HEADER", "Authorization",
     "X-Amz-Signature", "sig", "docker-password", "token", "password"],
)
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize(
    "name",
    ["KUBECONFIG", "NS", "PWD", "KEY", "key", "keys", "secretName", "secretKeyRef", "TOKEN_TTL",
     "PASSWORD_FILE", "SSH_AUTH_SOCK", "AWS_ACCESS_KEY_ID", "username", "author", "monkey", "token-file"],
)
def test_names_that_are_not_secret(name: str) -> None:
    assert not is_secret_name(name)


def test_the_word_secret_alone_never_masks() -> None:
    assert mask_argv(["get", "secret", "secret", "-n", "secret", "-o", "yaml"])[1] is False
    assert mask_text("kubectl get secret db -o yaml") == ("kubectl get secret db -o yaml", False)


def test_container_args_in_overrides_are_read_as_a_command() -> None:
    overrides = '{"spec":{"containers":[{"name":"x","args":["--token","t-ovr-1"],"command":["mysql","-pp-ovr-1"]}]}}'
    masked, _ = mask_argv(["run", "x", "--image=busybox", "--overrides", overrides])
    container = json.loads(masked[-1])["spec"]["containers"][0]
    assert container == {"name": "x", "args": ["--token", MASK], "command": ["mysql", "-p***"]}


# --- shell text edge cases -------------------------------------------------------------------


def test_commands_inside_substitutions_are_masked_in_place() -> None:
    assert mask_text("RESULT=$(curl -u admin:pw-sub-1 https://x) kubectl get po") == (
        "RESULT=$(curl -u admin:*** https://x) kubectl get po", True)
    assert mask_text("echo `mysql -ppw-sub-2 -e x`") == ("echo `mysql -p*** -e x`", True)


def test_a_wrapper_option_value_before_kubectl() -> None:
    masked, _ = mask_text("sudo -u ops kubectl create secret generic x --from-literal=a=pw-sudo-1")
    assert masked == "sudo -u ops kubectl create secret generic x --from-literal=a=***"


def test_a_password_option_without_value_does_not_swallow_the_next_option() -> None:
    assert mask_text("mysql --password -h db") == ("mysql --password -h db", False)
    assert mask_text("tool --password --token=t-opt-1 x") == ("tool --password --token=*** x", True)


def test_only_the_secret_document_of_a_yaml_stream_loses_its_data() -> None:
    line = ("kubectl apply -f - <<EOF\n"
            "kind: ConfigMap\ndata:\n  mode: fast\n---\nkind: Secret\ndata:\n  pw: c2VjcmV0\nEOF")
    assert mask_text(line) == (line.replace("c2VjcmV0", MASK), True)


@pytest.mark.parametrize(
    "text",
    ["echo a$(b c)", "echo $(", "echo `", "x\r y\x0c", "'unterminated", '"a b', "$'\\t'", "a <<EOF", "#", ""],
)
def test_odd_text_is_read_without_error_and_kept(text: str) -> None:
    assert mask_text(text) == (text, False)


@pytest.mark.parametrize("unit", ["A", "a.", "x:", "a ", "k: ", "a@", "x=", '"', "/"])
def test_long_inputs_take_no_more_than_linear_time(unit: str) -> None:
    # a regex that backtracks quadratically would take minutes on these 200 kB
    text = unit * (200_000 // len(unit))
    started = time.monotonic()
    mask_text(text)
    mask_argv(["get", text])
    assert time.monotonic() - started < 10


def test_masking_mixed_input_twice_changes_nothing_more() -> None:
    rng = random.Random(7)
    pieces = [word for argv, _ in SECRET_CASES for word in argv] + [word for argv in LOOKALIKES for word in argv]
    pieces += ['"', "'", "$(", ")", "`", "\\", "\n", "<<EOF", "EOF", "|", ";", "--", "kubectl", "data:", "kind: Secret",
               "stringData:", "password:", "{", "}", "mysql", "curl", "-p", "-u", "sh", "-c", "Bearer", "#"]
    for _ in range(2000):
        words = [rng.choice(pieces) for _ in range(rng.randint(1, 8))]
        text, _ = mask_text(" ".join(words))
        assert mask_text(text) == (text, False), " ".join(words)
        masked, _ = mask_argv(words)
        assert len(masked) == len(words)
        assert mask_argv(masked) == (masked, False), words


_SHELL_CONTEXTS = [
    "sudo {}", "echo hi && {}", "{} | grep x", "sh -c {q}", "bash -lc {q}", "X=$({})", 'echo "$({})"',
    "watch -n 5 {}", "for i in 1; do {}; done", "if true; then {}; fi", "({})", "time {}", "{}  # note",
    "KUBECONFIG=/x {}", "kubectl exec -it x -- sh -c {q}",
]


@pytest.mark.parametrize("context", _SHELL_CONTEXTS)
def test_no_secret_survives_any_shell_context(context: str) -> None:
    lines = [(shlex.join(["kubectl", *argv]), secrets) for argv, secrets in SECRET_CASES] + SHELL_LINE_CASES
    for line, secrets in lines:
        text = context.format(line, q=shlex.quote(line))
        masked, _ = mask_text(text)
        assert not [s for s in secrets if s in masked], text
