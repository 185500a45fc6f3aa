"""No secret on a command line reaches disk or output unmasked, through every capture path.

Every corpus line runs through the wrapper and through the shim; afterwards every byte the
recorder keeps — the database with its WAL and shared memory, everything else under the state
directory, the spool (kubeconfig snapshots included) — and every output format is scanned for
each secret."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from tests.conftest import Recorder, real_kubectl
from tests.redaction_corpus import LOOKALIKES, SECRET_CASES, SHELL_LINE_CASES


def every_secret() -> list[str]:
    return [s for _, secrets in SECRET_CASES for s in secrets]


def kept_bytes(recorder: Recorder) -> dict[str, bytes]:
    """Every file the recorder keeps after ingestion, by path."""
    files = {}
    for root in (Path(recorder.env["KUBECTL_RECORD_HOME"]), recorder.spool_dir()):
        for path in root.rglob("*"):
            if path.is_file():
                files[str(path)] = path.read_bytes()
    return files


def outputs(recorder: Recorder) -> dict[str, str]:
    shown = {fmt: recorder.cli("history", "-o", fmt).stdout for fmt in ("json", "jsonl", "csv", "yaml", "wide")}
    shown["table"] = recorder.cli("history", "--limit", "1000").stdout
    shown["export"] = recorder.cli("export").stdout
    return shown


def assert_no_secret_anywhere(recorder: Recorder, extra: tuple[str, ...] = ()) -> None:
    stored = kept_bytes(recorder)
    assert any(p.endswith("records.db") for p in stored)
    shown = outputs(recorder)
    leaks = [(secret, where) for secret in [*every_secret(), *extra]
             for where, data in [*stored.items(), *((f"history -o {k}", v.encode()) for k, v in shown.items())]
             if secret.encode() in data]
    assert leaks == []


def test_corpus_through_wrapper_and_shim_leaves_no_secret(recorder: Recorder, fake_kubectl):
    fake = fake_kubectl("exit 0\n")
    shim_dir = recorder.cli("shim", "install", "--dir", str(recorder.tmp / "shim")).stdout.split()[-1]
    lines = []
    for argv, _ in SECRET_CASES:
        words = shlex.join(argv)
        lines += [f"kubectl-record -- {words}", f"{shim_dir}/kubectl {words}"]
    env = dict(recorder.env, KUBECTL_RECORD_KUBECTL=fake, PATH=f"{recorder.tmp / 'bin'}:{recorder.env['PATH']}")
    proc = subprocess.run(["bash", "-c", "\n".join(lines)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    records = recorder.records()
    assert len(records) == 2 * len(SECRET_CASES)
    assert {r["source"] for r in records} == {"wrapper", "shim"}
    assert all(r["redacted"] for r in records)
    assert not list(recorder.spool_dir().glob("*.run"))
    assert_no_secret_anywhere(recorder)


def test_corpus_through_the_shell_hook_leaves_no_secret(recorder: Recorder, fake_kubectl):
    fake = fake_kubectl("exit 0\n")
    hook = subprocess.run([recorder.python, "-m", "kubectl_record.hooks", "bash"], env=recorder.env,
                          capture_output=True, text=True, check=True).stdout
    script = hook + "\n" + "\n".join(f"kubectl {shlex.join(argv)}" for argv, _ in SECRET_CASES)
    env = dict(recorder.env, PATH=f"{Path(fake).parent}:{recorder.env['PATH']}")
    proc = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    records = recorder.records()
    assert len(records) == len(SECRET_CASES) and {r["source"] for r in records} == {"hook"}
    assert all(r["redacted"] for r in records)
    assert_no_secret_anywhere(recorder)


def test_corpus_through_both_imports_leaves_no_secret(recorder: Recorder):
    """Records from elsewhere (JSONL) and typed history (bash) are masked again on the way in."""
    import json

    jsonl = recorder.tmp / "elsewhere.jsonl"
    with jsonl.open("w") as f:
        for i, (argv, _) in enumerate(SECRET_CASES):
            f.write(json.dumps({"id": f"elsewhere-{i}", "install_id": "other-laptop", "seq": i + 1,
                                "started_at": "2026-11-01T10:00:00.000Z", "state": "finished", "source": "shim",
                                "argv": argv, "command": "kubectl " + shlex.join(argv), "exit_code": 0}) + "\n")
    # Typed lines: the corpus, then raw shell lines (VAR= prefixes, sudo, watch, `k` alias, pipes).
    typed = [f"kubectl {shlex.join(argv)}" for argv, _ in SECRET_CASES]
    typed += [line for line, _ in SHELL_LINE_CASES if "\n" not in line]
    history = recorder.tmp / "bash_history"
    history.write_text("".join(f"#{1_790_000_000 + i}\n{line}\n" for i, line in enumerate(typed)))
    recorder.cli("import", str(jsonl))
    recorder.cli("import", "--format", "bash-history", "--alias", "k", str(history))
    records = recorder.records()
    assert {r["source"] for r in records} == {"shim", "import"}
    # Every corpus line once per import; shell lines that hold no kubectl run add nothing.
    assert len(records) >= 2 * len(SECRET_CASES)
    assert all(r["redacted"] for r in records if r["source"] == "shim")
    shell_secrets = tuple(s for line, secrets in SHELL_LINE_CASES if "\n" not in line for s in secrets)
    assert_no_secret_anywhere(recorder, shell_secrets)


def test_lookalikes_are_recorded_as_typed(recorder: Recorder, fake_kubectl):
    fake = fake_kubectl("exit 0\n")
    shim_dir = recorder.cli("shim", "install", "--dir", str(recorder.tmp / "shim")).stdout.split()[-1]
    script = "\n".join(f"{shim_dir}/kubectl {shlex.join(argv)}" for argv in LOOKALIKES)
    env = dict(recorder.env, KUBECTL_RECORD_KUBECTL=fake)
    assert subprocess.run(["bash", "-c", script], env=env, timeout=300).returncode == 0
    records = recorder.records()
    assert sorted(map(tuple, (r["argv"] for r in records))) == sorted(map(tuple, LOOKALIKES))
    assert not any(r["redacted"] for r in records)


def test_credentials_written_into_the_kubeconfig_do_not_outlive_ingestion(recorder: Recorder):
    """The real kubectl stores a token in the kubeconfig; the spool's snapshot of that file must
    not keep it once ingested, nor may the record."""
    real_kubectl()
    shim_dir = recorder.cli("shim", "install", "--dir", str(recorder.tmp / "shim")).stdout.split()[-1]
    script = (f"{shim_dir}/kubectl config set-credentials leak --token=s3cr3t-kc-9001 && "
              f"{shim_dir}/kubectl config set-context leak --cluster=dev-cluster --user=leak && "
              f"{shim_dir}/kubectl --context leak get pods --token s3cr3t-kc-9002 --request-timeout=2s; true")
    subprocess.run(["bash", "-c", script], env=recorder.env, capture_output=True, timeout=120)
    records = recorder.records()
    assert [r["verb"] for r in reversed(records)] == ["config set-credentials", "config set-context", "get"]
    assert records[0]["context"] == "leak" and records[0]["user"] == "leak"
    kubeconfig = Path(recorder.env["HOME"], ".kube", "config").read_text()
    assert "s3cr3t-kc-9001" in kubeconfig  # kubectl's own file keeps it: that is the user's file
    stored = kept_bytes(recorder)
    assert any("/kc/" in p for p in stored), "the snapshot itself is kept (newest copy)"
    for secret in ("s3cr3t-kc-9001", "s3cr3t-kc-9002", "dev-token-not-a-secret-shape"):
        assert [p for p, data in stored.items() if secret.encode() in data] == []
