"""The bash and zsh hooks, as shipped, in real interactive shells driven through a pty.

Each test loads `kubectl record init <shell>` (here `python -m kubectl_record.hooks <shell>`, the
same text) into `bash --norc -i` or `zsh -f -i` and reads the records back with
`python -m kubectl_record history -o json`. A fake kubectl first on PATH gives exact exit
statuses and delays; the real kubectl resolves contexts from a kubeconfig.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

pexpect = pytest.importorskip("pexpect")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL_KUBECTL = shutil.which("kubectl", path="/usr/local/bin:/usr/bin:/bin")
PROMPT = "KRP> "
# Typed as two strings so that the echo of the line that sets it never looks like the prompt.
SET_PROMPT = {"bash": "PS1='KR''P> '", "zsh": "PS1='KR''P> '"}

FAKE_KUBECTL = r"""#!/bin/sh
# A kubectl with exact statuses and delays: logs each run, then acts on $1.
printf '%s|%s\n' "$*" "${KUBECTL_RECORD_ACTIVE-}" >>"$FAKE_LOG"
case "$1" in
exit) exit "$2" ;;
sleep) echo STARTED; exec sleep "$2" ;;
record) [ -n "${FAKE_PLUGIN-}" ] && shift && exec "$FAKE_PLUGIN" "$@"  # kubectl's plugin dispatch
    echo "record-subcommand $*"; exit 0 ;;
esac
echo "fake: $*"
"""


def require_shell(name: str) -> str:
    path = shutil.which(name)
    if path:
        return path
    if os.environ.get("CI") == "true":
        pytest.fail(f"{name} is required in CI and is not installed")
    pytest.skip(f"{name} is not installed")


def kubeconfig(path, contexts=("a", "b"), current="a", padding_clusters=0):
    lines = ["apiVersion: v1", "kind: Config", f"current-context: {current}", "clusters:"]
    for c in contexts:
        lines += [f"- name: c-{c}", "  cluster:", "    server: https://127.0.0.1:1"]
    for i in range(padding_clusters):
        lines += [f"- name: pad-{i}", "  cluster:", "    server: https://10.0.0.1:6443",
                  "    certificate-authority-data: " + "QUJD" * 1200]
    lines.append("contexts:")
    for c in contexts:
        lines += [f"- name: {c}", "  context:", f"    cluster: c-{c}", f"    user: u-{c}",
                  f"    namespace: ns-{c}"]
    lines.append("users:")
    for c in contexts:
        lines += [f"- name: u-{c}", "  user:", "    token: t"]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


class Shell:
    """One interactive shell on a pty."""

    def __init__(self, kind, tmp_path, *, fake=True, before=(), hook=True, after=(), extra_env=None, exe=None):
        if not exe:
            require_shell(kind)
        self.kind = kind
        self.tmp = tmp_path
        home = tmp_path / "home"
        home.mkdir(exist_ok=True)
        self.bin = tmp_path / "bin"
        self.bin.mkdir(exist_ok=True)
        self.fake_log = tmp_path / "fake.log"
        path = os.environ.get("PATH", "/usr/bin:/bin")
        if fake:
            (self.bin / "kubectl").write_text(FAKE_KUBECTL)
            (self.bin / "kubectl").chmod(0o755)
            path = f"{self.bin}:{path}"
        self.env = {
            "PATH": path,
            "HOME": str(home),
            "TERM": "dumb",
            "LANG": "C.UTF-8",
            "KUBECTL_RECORD_HOME": str(tmp_path / "krhome"),
            "KUBECTL_RECORD_RUNTIME_DIR": str(tmp_path / "spool"),
            "KUBECONFIG": kubeconfig(tmp_path / "kubeconfig"),
            "FAKE_LOG": str(self.fake_log),
            "PYTHONPATH": REPO,
            "HISTFILE": str(tmp_path / "histfile"),
        }
        if extra_env:
            self.env.update(extra_env)
        if kind == "bash":
            args = ["--norc", "--noprofile", "-i"]
        else:
            args = ["-f", "-i"]
        self.p = pexpect.spawn(exe or kind, args, env=self.env, cwd=str(tmp_path), encoding="utf-8",
                               codec_errors="replace", timeout=30, dimensions=(40, 2000))
        first = SET_PROMPT[kind]
        if kind == "zsh":
            first = "unsetopt prompt_sp prompt_cr; unset zle_bracketed_paste; " + first
        self.p.sendline(first)
        self.p.expect_exact(PROMPT)
        for line in before:
            self.source(line) if "\n" in line else self.run(line)
        if hook:
            self.load_hook()
        for line in after:
            self.source(line) if "\n" in line else self.run(line)

    def load_hook(self):
        return self.run(f'eval "$({sys.executable} -m kubectl_record.hooks {self.kind})"')

    def source(self, code):
        """Loads CODE from a file, as an rc file would."""
        self._n = getattr(self, "_n", 0) + 1
        path = self.tmp / f"setup{self._n}.sh"
        path.write_text(code + "\n")
        return self.run(f". {path}")

    def run(self, line, timeout=30):
        """Types LINE, waits for the next prompt, returns what was printed (without the echo)."""
        self.p.sendline(line)
        self.p.expect_exact(PROMPT, timeout=timeout)
        out = self.p.before
        # The first line is the shell's echo of what was typed (a multi-line input echoes more).
        for _ in range(line.count("\n") + 1):
            out = out.split("\n", 1)[1] if "\n" in out else ""
        return out.replace("\r", "")

    def interrupt(self, line):
        """Types LINE, presses ^C once its kubectl has started, waits for the prompt; returns when
        ^C was pressed."""
        self.p.sendline(line)
        self.p.expect_exact("STARTED")
        time.sleep(0.3)
        pressed = time.time()
        self.p.sendintr()
        self.p.expect_exact(PROMPT, timeout=10)
        return pressed

    def many(self, line, count):
        """Types LINE COUNT times in one go and waits for all the prompts."""
        self.p.send((line + "\n") * count)
        for _ in range(count):
            self.p.expect_exact(PROMPT)

    def records(self):
        return records(self.env)

    def fake_runs(self):
        if not self.fake_log.exists():
            return []
        # The ingester asks the kubectl it recorded for its version: not a run of the user's.
        return [l.split("|")[0] for l in self.fake_log.read_text().splitlines()
                if not l.startswith("version --client")]

    def close(self):
        if self.p.isalive():
            self.p.sendline("exit")
            try:
                self.p.expect(pexpect.EOF, timeout=5)
            except pexpect.TIMEOUT:
                self.p.terminate(force=True)


def records(env):
    out = subprocess.run([sys.executable, "-m", "kubectl_record", "history", "-o", "json"],
                         env=dict(os.environ, **env), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return sorted(json.loads(out.stdout), key=lambda r: (r["started_at"], r.get("seq") or 0))


@pytest.fixture(params=["bash", "zsh"])
def shell_kind(request):
    return request.param


@pytest.fixture
def make_shell(tmp_path):
    shells = []

    def make(kind, **kw):
        s = Shell(kind, tmp_path, **kw)
        shells.append(s)
        return s

    yield make
    for s in shells:
        s.close()


def argvs(recs):
    return [r["argv"] for r in recs]


# --- what is recorded ---------------------------------------------------------------------------


def test_typed_status_args_times_cwd_session(make_shell, shell_kind):
    sh = make_shell(shell_kind)
    (sh.tmp / "wd").mkdir()
    sh.run("cd wd")
    session = sh.run("echo $KUBECTL_RECORD_SESSION").strip()
    assert session
    t0 = time.time()
    assert sh.run("kubectl exit 3; echo rc=$?").strip() == "rc=3"
    assert sh.run("ns=prod; kubectl get po -n $ns 'a b'").strip() == "fake: get po -n prod a b"
    [r1, r2] = sh.records()
    assert r1["argv"] == ["exit", "3"] and r1["exit_code"] == 3
    assert r2["argv"] == ["get", "po", "-n", "prod", "a b"] and r2["exit_code"] == 0
    for r in (r1, r2):
        assert r["source"] == "hook" and r["state"] == "finished"
        assert r["session"] == session and r["parent"] == shell_kind
        assert r["cwd"] == str(sh.tmp / "wd")
        assert r["started_at"] <= r["ended_at"]
        assert abs(_epoch(r["started_at"]) - t0) < 30


def _epoch(rfc3339):
    from datetime import datetime

    return datetime.strptime(rfc3339, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=__import__("datetime").timezone.utc).timestamp()


def test_alias_function_and_env_prefix(make_shell, shell_kind):
    sh = make_shell(shell_kind)
    sh.run("alias k=kubectl")
    sh.run("kf() { kubectl get \"$@\"; }")
    sh.run("k get po")
    sh.run("kf deploy web")
    sh.run("FOO=bar kubectl version")
    assert argvs(sh.records()) == [["get", "po"], ["get", "deploy", "web"], ["version"]]


def test_pipeline_records_kubectl_status_not_grep(make_shell, shell_kind):
    sh = make_shell(shell_kind)
    ps = "${PIPESTATUS[*]}" if shell_kind == "bash" else "$pipestatus"
    out = sh.run(f"kubectl exit 4 | grep nothing; echo \"rc=$? ps={ps}\"")
    assert out.strip() == "rc=1 ps=4 1"
    [r] = sh.records()
    assert r["exit_code"] == 4


def test_chains_record_only_what_ran(make_shell, shell_kind):
    sh = make_shell(shell_kind)
    sh.run("kubectl exit 1 && kubectl never1; kubectl exit 0 || kubectl never2; kubectl exit 0 && kubectl ran")
    assert argvs(sh.records()) == [["exit", "1"], ["exit", "0"], ["exit", "0"], ["ran"]]
    assert "never1" not in sh.fake_runs() and "never2" not in sh.fake_runs()


def test_loop_gives_one_record_per_run(make_shell, shell_kind):
    sh = make_shell(shell_kind)
    sh.run("for ns in a b; do kubectl get po -n $ns; done")
    assert argvs(sh.records()) == [["get", "po", "-n", "a"], ["get", "po", "-n", "b"]]


def test_command_substitution_subshell_background(make_shell, shell_kind):
    sh = make_shell(shell_kind)
    assert sh.run('x=$(kubectl get ns); echo "[$x]"').strip() == "[fake: get ns]"
    assert sh.run("(kubectl exit 5); echo rc=$?").strip() == "rc=5"
    sh.run("kubectl get bg & wait")
    recs = sh.records()
    assert sorted(map(tuple, argvs(recs))) == [("exit", "5"), ("get", "bg"), ("get", "ns")]
    assert {r["exit_code"] for r in recs if r["argv"] == ["exit", "5"]} == {5}


def test_ctrl_c_records_status_and_end_time(make_shell, shell_kind):
    sh = make_shell(shell_kind)
    t_int = sh.interrupt("kubectl sleep 30; echo AFTER")
    assert "AFTER" not in sh.p.before  # the chain stops, as it does for bare kubectl
    assert sh.run("echo rc=$?").strip() == "rc=130"
    sh.interrupt("for i in 1 2; do kubectl sleep 30; done")  # a loop stops at the first interrupted run
    sh.interrupt("kubectl sleep 30 | cat")  # and in a pipeline
    recs = sh.records()
    assert argvs(recs) == [["sleep", "30"]] * 3
    for r in recs:
        assert r["exit_code"] == 130 and r["state"] == "finished"
        assert r["duration_ms"] < 5000
    assert abs(_epoch(recs[0]["ended_at"]) - t_int) < 2


def test_ctrl_z_then_fg_records_the_real_end(make_shell, shell_kind):
    sh = make_shell(shell_kind)
    sh.p.sendline("kubectl sleep 2")
    sh.p.expect_exact("STARTED")
    time.sleep(0.2)
    sh.p.sendcontrol("z")
    sh.p.expect_exact(PROMPT, timeout=10)
    assert sh.records() == []  # still running (stopped)
    sh.run("fg", timeout=20)
    [r] = sh.records()
    assert r["exit_code"] == 0 and r["state"] == "finished" and r["duration_ms"] >= 1900


def test_exactly_once_with_the_shim_on_path(make_shell, shell_kind, tmp_path):
    shim_dir = tmp_path / "shim"
    env = {"KUBECTL_RECORD_HOME": str(tmp_path / "krhome"), "KUBECTL_RECORD_RUNTIME_DIR": str(tmp_path / "spool")}
    subprocess.run([sys.executable, "-m", "kubectl_record", "shim", "install", "--dir", str(shim_dir)],
                   env=dict(os.environ, **env), check=True, capture_output=True)
    sh = make_shell(shell_kind)
    sh.run(f"PATH={shim_dir}:$PATH")
    assert sh.run("kubectl exit 2; echo rc=$?").strip() == "rc=2"
    sh.run("for n in 1 2; do kubectl get po -n $n | cat; done")
    recs = sh.records()
    assert argvs(recs) == [["exit", "2"], ["get", "po", "-n", "1"], ["get", "po", "-n", "2"]]
    assert {r["source"] for r in recs} == {"hook"}
    # Without the hook the shim records (and it is the same shim that stepped aside above).
    subprocess.run([str(shim_dir / "kubectl"), "exit", "0"],
                   env=dict(os.environ, **dict(sh.env, PATH=f"{shim_dir}:{sh.env['PATH']}")))
    assert [r["source"] for r in sh.records()][-1] == "shim"


def test_exact_mode_marks_argv0_with_the_record_id(make_shell, shell_kind, tmp_path):
    """KUBECTL_RECORD_AUDIT_MARKER=1: the real kubectl runs with argv[0] kubectl+r.<record id>.
    A copy of sleep stands in for kubectl so that its argv[0] can be read from /proc."""
    sh = make_shell(shell_kind, fake=False, extra_env={"KUBECTL_RECORD_AUDIT_MARKER": "1"})
    shutil.copy(shutil.which("sleep"), sh.bin / "kubectl")
    sh.run(f"PATH={sh.bin}:$PATH")
    sh.p.sendline("kubectl 2")
    seen = None
    deadline = time.time() + 10
    while seen is None and time.time() < deadline:
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        argv = f.read().split(b"\0")
                except OSError:
                    continue
                if argv[0].startswith(b"kubectl+r.") and argv[1:2] == [b"2"]:
                    seen = argv[0].decode()
        time.sleep(0.05)
    sh.p.expect_exact(PROMPT, timeout=10)
    [r] = sh.records()
    assert seen == f"kubectl+r.{r['id']}"


def test_record_subcommand_is_not_recorded(make_shell, shell_kind):
    sh = make_shell(shell_kind)
    assert "record-subcommand" in sh.run("kubectl record history")
    assert sh.records() == []


def test_completion_queries_are_not_runs(make_shell, shell_kind):
    sh = make_shell(shell_kind)
    sh.run("kubectl __complete get po '' >/dev/null; kubectl __completeNoDesc get '' >/dev/null")
    assert sh.records() == []
    assert sh.fake_runs() == ["__complete get po ", "__completeNoDesc get "]


def test_kubectl_alias_defined_before_or_after(make_shell, shell_kind):
    sh = make_shell(shell_kind, before=["alias kubectl='kubectl --context=al'"])
    sh.run("kubectl get po")
    sh.run("unalias kubectl; alias kubectl='kubectl -v=0'")
    sh.run("kubectl get ns")
    assert argvs(sh.records()) == [["--context=al", "get", "po"], ["-v=0", "get", "ns"]]


def test_slow_ingester_is_not_on_the_prompt_path(make_shell, shell_kind, tmp_path):
    slow = tmp_path / "slow-python"
    slow.write_text("#!/bin/sh\nsleep 5\n")
    slow.chmod(0o755)
    sh = make_shell(shell_kind, after=[f"__KR_PYTHON={slow}"])
    t = time.time()
    assert sh.run("kubectl exit 0; echo rc=$?").strip() == "rc=0"
    assert time.time() - t < 2
    assert sh.run("jobs").strip() == ""


def test_context_in_effect_when_each_run_started(make_shell, shell_kind):
    if not REAL_KUBECTL:
        pytest.skip("no real kubectl")
    sh = make_shell(shell_kind, fake=False)
    sh.run("for c in b a; do kubectl config use-context $c >/dev/null; kubectl config current-context; done")
    sh.run("kubectl config use-context b >/dev/null && kubectl config current-context")
    other = kubeconfig(sh.tmp / "other", contexts=("x",), current="x")
    sh.run(f"KUBECONFIG={other} kubectl config current-context")
    recs = sh.records()
    got = [(" ".join(r["argv"]), r["context"]) for r in recs]
    assert got == [
        ("config use-context b", "a"),
        ("config current-context", "b"),
        ("config use-context a", "b"),
        ("config current-context", "a"),
        ("config use-context b", "a"),
        ("config current-context", "b"),
        ("config current-context", "x"),
    ]


def test_disable_hides_a_run(make_shell, shell_kind):
    sh = make_shell(shell_kind)
    sh.run("KUBECTL_RECORD_DISABLE=1 kubectl get secret")
    sh.run("kubectl get po")
    assert argvs(sh.records()) == [["get", "po"]]
    assert "get secret" in sh.fake_runs()


def test_ignore_patterns_from_the_config_hide_runs_also_from_the_shim(make_shell, shell_kind, tmp_path):
    """record.ignore, baked in by init (and by shim install): a run whose arguments, joined by
    spaces, match one of the globs runs as usual and is not recorded, by the hook or the shim."""
    env = {"KUBECTL_RECORD_HOME": str(tmp_path / "krhome"), "KUBECTL_RECORD_RUNTIME_DIR": str(tmp_path / "spool")}
    run = dict(os.environ, **env)
    subprocess.run([sys.executable, "-m", "kubectl_record", "config", "set", "record.ignore",
                    "get secret*,config view --raw*"], env=run, check=True, capture_output=True)
    shim_dir = tmp_path / "shim"
    subprocess.run([sys.executable, "-m", "kubectl_record", "shim", "install", "--dir", str(shim_dir)],
                   env=run, check=True, capture_output=True)
    sh = make_shell(shell_kind)
    sh.run(f"PATH={shim_dir}:$PATH")
    assert sh.run("kubectl get secret db -o yaml; echo rc=$?").strip().splitlines() == [
        "fake: get secret db -o yaml", "rc=0"]
    sh.run("kubectl get secrets; kubectl config view --raw; kubectl get po secret")
    sh.run("IFS=,; kubectl get secret a b")  # matched on single spaces, whatever IFS is
    assert argvs(sh.records()) == [["get", "po", "secret"]]
    assert "get secret db -o yaml" in sh.fake_runs() and "config view --raw" in sh.fake_runs()
    # The shim alone applies the same rule; the environment overrides the setting.
    shim_env = dict(os.environ, **dict(sh.env, PATH=f"{shim_dir}:{sh.env['PATH']}"))
    subprocess.run([str(shim_dir / "kubectl"), "get", "secret", "x"], env=shim_env, check=True)
    subprocess.run([str(shim_dir / "kubectl"), "get", "secret", "y"], env=dict(shim_env, KUBECTL_RECORD_IGNORE=""),
                   check=True)
    assert argvs(sh.records()) == [["get", "po", "secret"], ["get", "secret", "y"]]


@pytest.mark.parametrize("option", ["on", "off"])
def test_leading_space_hides_a_run_where_the_shell_can_tell(make_shell, shell_kind, option):
    """zsh with HIST_IGNORE_SPACE: a line typed with a leading space (kept out of the history)
    is not recorded, loops included. bash cannot tell such a line from a repeated one inside
    the function, so there a leading space does not hide (documented)."""
    sh = make_shell(shell_kind)
    if option == "on":
        sh.run("HISTCONTROL=ignorespace" if shell_kind == "bash" else "setopt hist_ignore_space")
    assert sh.run(" kubectl get secret hidden").strip() == "fake: get secret hidden"
    sh.run(" for n in a b; do kubectl get po -n $n; done")
    sh.run("kubectl get po -n shown")
    sh.run("kubectl get po -n shown")  # a repeated line is not a hidden one
    hidden = shell_kind == "zsh" and option == "on"
    expected = [] if hidden else [["get", "secret", "hidden"], ["get", "po", "-n", "a"], ["get", "po", "-n", "b"]]
    assert argvs(sh.records()) == expected + [["get", "po", "-n", "shown"]] * 2


def test_a_loop_starts_one_background_ingester(make_shell, shell_kind, tmp_path):
    """The hot path names the ingester it starts in the spool at once, so the runs that end
    before Python is up leave their work to it instead of starting one Python each."""
    starts = tmp_path / "starts"
    python = tmp_path / "counting-python"
    python.write_text(f'#!/bin/sh\necho start >>{starts}\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    sh = make_shell(shell_kind, after=[f"__KR_PYTHON={python}"])
    sh.run("for n in 1 2 3 4 5 6; do kubectl get po -n $n; done")
    sh.run("kubectl get po -n 7")
    assert [r["argv"][-1] for r in sh.records()] == ["1", "2", "3", "4", "5", "6", "7"]
    assert starts.read_text().splitlines() == ["start"]


def test_an_ingester_started_while_another_lingers_does_not_stay(tmp_path):
    from kubectl_record import ingest

    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / ingest.PID_FILE).write_text(f"{os.getppid()}\n")  # a live process, not this one
    naps = []
    result = ingest.ingest(str(spool), str(tmp_path / "db"), blocking=False, linger=30.0, sleep=naps.append)
    assert result.error is None and naps == []
    assert (spool / ingest.PID_FILE).read_text() == f"{os.getppid()}\n"


def test_a_lingering_ingester_removes_only_its_own_name(tmp_path):
    from kubectl_record import ingest

    spool = tmp_path / "spool"
    spool.mkdir()
    pid_file = spool / ingest.PID_FILE

    def nap(seconds):  # while it idles, a run names the ingester it has just started
        assert pid_file.read_text().strip() in (str(os.getpid()), "4242")
        pid_file.write_text("4242\n")

    ingest.ingest(str(spool), str(tmp_path / "db"), blocking=False, linger=1.0, sleep=nap)
    assert pid_file.read_text() == "4242\n"
    pid_file.unlink()
    ingest.ingest(str(spool), str(tmp_path / "db"), blocking=False, linger=1.0, sleep=lambda s: None)
    assert not pid_file.exists()


def test_older_bash_records_each_run_through_the_wrapper(make_shell, tmp_path):
    """bash < 4.4 (macOS ships 3.2): the function hands each run to `kubectl record --`, so runs
    are recorded with their own status (source=wrapper) and prompts stay untouched. No package
    registry ships such a bash (CI cannot have one either): this runs where
    KUBECTL_RECORD_TEST_OLD_BASH names one, e.g. bash 3.2.48 built from its source."""
    old_bash = os.environ.get("KUBECTL_RECORD_TEST_OLD_BASH", "")
    if not os.access(old_bash, os.X_OK):
        pytest.skip("no bash < 4.4 here (set KUBECTL_RECORD_TEST_OLD_BASH)")
    plugin = os.path.join(os.path.dirname(sys.executable), "kubectl-record")
    sh = make_shell("bash", exe=old_bash, extra_env={"FAKE_PLUGIN": plugin})
    assert sh.run("echo ${BASH_VERSINFO[0]}.${BASH_VERSINFO[1]}").strip() < "4.4"
    assert sh.run("echo $KUBECTL_RECORD_HOOK").strip().startswith("bash:wrapper:")
    assert sh.run("kubectl exit 3; echo rc=$?").strip() == "rc=3"
    assert sh.run('kubectl exit 4 | cat; echo "${PIPESTATUS[*]}"').strip() == "4 0"
    sh.run("for ns in a b; do kubectl get po -n $ns; done")
    sh.run("KUBECTL_RECORD_DISABLE=1 kubectl get hidden")
    recs = sh.records()
    assert argvs(recs) == [["exit", "3"], ["exit", "4"], ["get", "po", "-n", "a"], ["get", "po", "-n", "b"]]
    assert [r["exit_code"] for r in recs] == [3, 4, 0, 0] and {r["source"] for r in recs} == {"wrapper"}
    assert sh.run("trap -p DEBUG; echo PC=${PROMPT_COMMAND-}").strip() == "PC="


def test_bash_4_4_runs_the_function_with_whole_second_times(make_shell):
    """bash 4.4, the oldest with full support: the same function and subshell (no EPOCHREALTIME,
    so times have whole seconds). Debian ships only 5.2; this runs where
    KUBECTL_RECORD_TEST_BASH44 names a bash 4.4 built from its source, like the 3.2 test above."""
    bash44 = os.environ.get("KUBECTL_RECORD_TEST_BASH44", "")
    if not os.access(bash44, os.X_OK):
        pytest.skip("no bash 4.4 here (set KUBECTL_RECORD_TEST_BASH44)")
    sh = make_shell("bash", exe=bash44)
    assert sh.run("echo ${BASH_VERSINFO[0]}.${BASH_VERSINFO[1]}").strip() == "4.4"
    assert sh.run("echo $KUBECTL_RECORD_HOOK").strip().startswith("bash:function:")
    assert sh.run("kubectl exit 3; echo rc=$?").strip() == "rc=3"
    assert sh.run('kubectl exit 4 | (exit 2); echo "${PIPESTATUS[*]}"').strip() == "4 2"
    assert sh.run("kubectl get pod lastarg >/dev/null; echo $_").strip() == "lastarg"
    sh.run("for ns in a b; do kubectl get po -n $ns; done")
    sh.interrupt("for i in 1 2; do kubectl sleep 30; done")
    recs = sh.records()
    # Runs within one second share a start time: compared in any order.
    assert sorted((r["argv"], r["exit_code"]) for r in recs) == sorted([
        (["exit", "3"], 3), (["exit", "4"], 4), (["get", "pod", "lastarg"], 0),
        (["get", "po", "-n", "a"], 0), (["get", "po", "-n", "b"], 0), (["sleep", "30"], 130)])
    assert {r["source"] for r in recs} == {"hook"}
    assert all(r["started_at"].endswith(".000Z") for r in recs)
    assert sh.run("trap -p DEBUG; echo PC=${PROMPT_COMMAND-}").strip() == "PC="


# --- what must never happen ------------------------------------------------------------------------


def _state(sh):
    if sh.kind == "bash":
        return sh.run("set -o; shopt -p; echo HC=$HISTCONTROL; trap -p; echo PC=$PROMPT_COMMAND; "
                      "echo PS0=$PS0; echo IFS=${IFS@Q}; echo \"PS1=${PS1/KRP/}\"")
    return sh.run("setopt; echo HC=$HISTFILE; trap; echo precmd=$precmd_functions preexec=$preexec_functions; "
                  "echo IFS=${(q)IFS}; print -r -- ${PS1/KRP/}")


def test_loading_changes_no_option_trap_or_history_setting(make_shell, shell_kind):
    sh = make_shell(shell_kind, hook=False)
    if shell_kind == "bash":
        sh.run("HISTCONTROL=ignorespace; trap 'echo int' INT; set -o pipefail; shopt -s nullglob")
    else:
        sh.run("setopt hist_ignore_space ksh_arrays; trap 'echo int' INT")
    before = _state(sh)
    assert sh.load_hook() == ""
    assert _state(sh) == before
    sh.run("kubectl exit 1 | cat")
    sh.run(" kubectl get hidden-from-history")
    assert _state(sh) == before
    # The history is the shell's business: nothing written to the file before the shell does,
    # and a space-prefixed line stays out of it (HISTCONTROL=ignorespace / HIST_IGNORE_SPACE).
    if shell_kind == "bash":
        assert not (sh.tmp / "histfile").exists()
    assert "hidden-from-history" not in sh.run("fc -l -5" if shell_kind == "zsh" else "history 5")


def test_status_pipestatus_bang_and_underscore_preserved(make_shell, shell_kind):
    sh = make_shell(shell_kind)
    sh.run("sleep 0.1 &")
    sh.run("wait")
    bang = sh.run("echo $!").strip()
    if shell_kind == "bash":
        assert sh.run('kubectl exit 3 | (exit 2); echo "${PIPESTATUS[*]}"').strip() == "3 2"
    else:
        assert sh.run('kubectl exit 3 | (exit 2); echo "$pipestatus"').strip() == "3 2"
    assert sh.run("kubectl exit 7; echo $?").strip() == "7"
    assert sh.run("kubectl get pod lastarg >/dev/null; echo $_").strip() == "lastarg"
    assert sh.run("echo $!").strip() == bang
    # No job is left behind by the background ingester, and nothing was printed about one.
    assert sh.run("jobs").strip() == ""


def test_never_prints(make_shell, shell_kind):
    sh = make_shell(shell_kind)
    assert sh.run("kubectl get po").strip() == "fake: get po"
    time.sleep(0.5)  # a job notification would come at the next prompt
    assert sh.run("true").strip() == ""
    assert sh.run("kubectl exit 1").strip() == ""
    assert sh.run("echo done").strip() == "done"


def test_command_text_is_never_evaluated(make_shell, shell_kind, tmp_path):
    sh = make_shell(shell_kind)
    marker = tmp_path / "pwned"
    sh.run(f"kubectl get po '$(touch {marker})' '`touch {marker}`'")
    time.sleep(0.5)
    [r] = sh.records()
    assert not marker.exists()
    assert r["argv"] == ["get", "po", f"$(touch {marker})", f"`touch {marker}`"]


def test_loading_twice_is_harmless(make_shell, shell_kind):
    sh = make_shell(shell_kind)
    session = sh.run("echo $KUBECTL_RECORD_SESSION")
    assert sh.load_hook() == ""
    assert sh.run("echo $KUBECTL_RECORD_SESSION") == session
    sh.run("kubectl get po")
    assert argvs(sh.records()) == [["get", "po"]]
    assert sh.fake_runs() == ["get po"]


def test_nounset_and_custom_ifs(make_shell, shell_kind):
    sh = make_shell(shell_kind)
    if shell_kind == "bash":
        sh.run("set -u; IFS=,; shopt -s nullglob failglob")
    else:
        sh.run("setopt nounset ksh_arrays sh_word_split null_glob; IFS=,")
    out = sh.run("kubectl get po 'a b,c'; echo rc=$?")
    assert out.strip().splitlines() == ["fake: get po a b,c", "rc=0"]
    assert argvs(sh.records()) == [["get", "po", "a b,c"]]


def test_existing_kubectl_function_is_wrapped(make_shell, shell_kind):
    sh = make_shell(shell_kind, before=['kubectl() { command kubectl --context=mine "$@"; }'])
    sh.run("kubectl get po")
    assert sh.fake_runs() == ["--context=mine get po"]
    assert argvs(sh.records()) == [["get", "po"]]


def test_nothing_runs_per_prompt(make_shell, shell_kind):
    """The hook adds no DEBUG trap, no PROMPT_COMMAND/precmd/preexec entry, no PS0/PS1 change:
    other commands run exactly as without it."""
    sh = make_shell(shell_kind, hook=False)
    before = _state(sh)
    sh.load_hook()
    assert _state(sh) == before
    if shell_kind == "bash":
        assert sh.run("trap -p DEBUG") == ""


def test_locked_or_broken_store_does_not_disturb_the_prompt(make_shell, shell_kind, tmp_path):
    # The spool cannot be created: kubectl still runs, with its status, and nothing is printed.
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    sh = make_shell(shell_kind, extra_env={"KUBECTL_RECORD_RUNTIME_DIR": str(blocker / "spool")})
    t = time.time()
    assert sh.run("kubectl exit 3; echo rc=$?").strip() == "rc=3"
    assert time.time() - t < 2


def test_locked_store_does_not_slow_the_prompt(make_shell, shell_kind, tmp_path):
    sh = make_shell(shell_kind)
    sh.run("kubectl get first")
    sh.records()  # creates the database
    db = tmp_path / "krhome" / "records.db"
    assert db.exists()
    conn = sqlite3.connect(db, timeout=0.1)
    conn.execute("BEGIN EXCLUSIVE")
    try:
        times = []
        for i in range(5):
            t = time.time()
            assert sh.run(f"kubectl get locked{i}").strip() == f"fake: get locked{i}"
            times.append(time.time() - t)
        assert max(times) < 1.5
    finally:
        conn.rollback()
        conn.close()
    names = argvs(sh.records())
    assert names[-5:] == [["get", f"locked{i}"] for i in range(5)]


def test_broken_store_keeps_runs_spooled(make_shell, shell_kind, tmp_path):
    home = tmp_path / "krhome"
    home.mkdir()
    (home / "records.db").write_bytes(b"this is not a database" * 100)
    sh = make_shell(shell_kind)
    t = time.time()
    assert sh.run("kubectl exit 0; echo rc=$?").strip() == "rc=0"
    assert time.time() - t < 2
    assert sh.run("echo ok").strip() == "ok"
    # The run is not lost: it waits in the spool for a store that works.
    from kubectl_record import spool

    time.sleep(1)
    entries = [spool.read(p) for p in spool.list_entries(str(tmp_path / "spool"))]
    assert [(e.argv, e.end and e.end.get("rc")) for e in entries] == [(["exit", "0"], "0")]


def test_doctor_reports_the_hook(make_shell, shell_kind):
    sh = make_shell(shell_kind, hook=False)
    out = sh.run(f"{sys.executable} -m kubectl_record doctor")
    assert "hook: not active" in out
    sh.load_hook()
    sh.run("kubectl get po")
    out = sh.run(f"{sys.executable} -m kubectl_record doctor")
    # doctor (cli.py) names the mechanism that hook_status reports.
    assert "hook: active in this shell" in out and "function" in out, out


def test_hook_status_api():
    from kubectl_record.hooks import hook_status

    st = hook_status({"KUBECTL_RECORD_HOOK": f"bash:function:{os.getpid()}", "KUBECTL_RECORD_SESSION": "s"},
                     ppid=os.getpid())
    assert st["active"] and st["mechanism"] == "function" and st["shell"] == "bash" and st["session"] == "s"
    # Our grandparent exported it: still active (e.g. run through `kubectl record doctor`).
    st = hook_status({"KUBECTL_RECORD_HOOK": f"zsh:function:{os.getppid()}"}, ppid=os.getpid())
    assert st["active"]
    # Inherited by something that is not a descendant of that shell.
    st = hook_status({"KUBECTL_RECORD_HOOK": "bash:function:999999999"})
    assert not st["active"] and st["inherited"]
    assert not hook_status({})["active"]


def test_init_script_and_unsupported_shell():
    from kubectl_record.hooks import UnsupportedShell, init_script

    text = init_script("bash", "/opt/py/bin/python")
    assert text.splitlines()[1] == "__KR_PYTHON=/opt/py/bin/python"
    assert "__kr_begin()" in text and "function kubectl" in text
    assert "zmodload" in init_script("zsh", "/x")
    assert init_script("/bin/zsh", "/x") == init_script("zsh", "/x")
    with pytest.raises(UnsupportedShell):
        init_script("fish", "/x")
    assert issubclass(UnsupportedShell, ValueError)


def test_init_script_from_an_installed_wheel_layout(tmp_path, monkeypatch):
    """The wheel puts shell/ at kubectl_record/shell/: init reads it from there."""
    pkg = tmp_path / "kubectl_record"
    shutil.copytree(os.path.join(REPO, "kubectl_record"), pkg,
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(os.path.join(REPO, "shell"), pkg / "shell")
    (pkg / "shell" / "hook.bash").write_text("# from the wheel\n")
    out = subprocess.run([sys.executable, "-m", "kubectl_record.hooks", "bash"], cwd=tmp_path,
                         env=dict(os.environ, PYTHONPATH=str(tmp_path)), capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.rstrip().endswith("# from the wheel")


# --- coexistence ---------------------------------------------------------------------------------

BASH_PREEXEC_MINI = textwrap.dedent(r"""
    __mp_pre=0 __mp_post=0 __mp_interactive=1 __mp_last=
    __mp_preexec() {
        [[ -n $COMP_LINE ]] && return
        [[ $__mp_interactive == 1 ]] || return
        __mp_interactive=0
        ((__mp_pre++))
        __mp_last=$BASH_COMMAND
    }
    __mp_precmd() { local s=$?; ((__mp_post++)); __mp_interactive=1; return $s; }
    trap '__mp_preexec' DEBUG
    PROMPT_COMMAND="__mp_precmd${PROMPT_COMMAND:+; $PROMPT_COMMAND}"
""").strip()

STARSHIP_MINI = textwrap.dedent(r"""
    starship_precmd() {
        STARSHIP_CMD_STATUS=$? STARSHIP_PIPE_STATUS=(${PIPESTATUS[@]})
        PS1="[$STARSHIP_CMD_STATUS|${STARSHIP_PIPE_STATUS[*]}] KR""P> "
    }
    PROMPT_COMMAND="starship_precmd;${PROMPT_COMMAND}"
""").strip()

DIRENV_MINI = textwrap.dedent(r"""
    _direnv_hook() {
        local previous_exit_status=$?
        if [[ $PWD == */envdir ]]; then export KUBECONFIG=$PWD/kc; else export KUBECONFIG=$__base_kc; fi
        return $previous_exit_status
    }
    __base_kc=$KUBECONFIG
    if [[ ";${PROMPT_COMMAND[*]:-};" != *";_direnv_hook;"* ]]; then
        PROMPT_COMMAND="_direnv_hook${PROMPT_COMMAND:+;$PROMPT_COMMAND}"
    fi
""").strip()


BASH_SETUPS = {
    "prompt_command_string": ["__pc=0; PROMPT_COMMAND='((__pc++))'"],
    "prompt_command_array": ["__pc=0; __pc2=0; PROMPT_COMMAND=('((__pc++))' '((__pc2++))')"],
    "debug_trap": ["__dbg=0; trap '((__dbg++))' DEBUG"],
    "preexec_framework": [BASH_PREEXEC_MINI],
    "starship": [STARSHIP_MINI],
    "direnv": [DIRENV_MINI],
}

ZSH_SETUPS = {
    "add_zsh_hook": ["autoload -Uz add-zsh-hook; __pre=0 __post=0; __kp() { (( __post++ )); }; "
                     "__ke() { (( __pre++ )); }; add-zsh-hook precmd __kp; add-zsh-hook preexec __ke"],
    "starship": ['starship_precmd() { STARSHIP_CMD_STATUS=$? STARSHIP_PIPE_STATUS=(${pipestatus[@]}); '
                 'PS1="[$STARSHIP_CMD_STATUS|${STARSHIP_PIPE_STATUS[*]}] KR""P> "; }; '
                 'precmd_functions+=(starship_precmd)'],
    "direnv": ['__base_kc=$KUBECONFIG; _direnv_hook() { if [[ $PWD == */envdir ]]; then export KUBECONFIG=$PWD/kc; '
               'else export KUBECONFIG=$__base_kc; fi; }; typeset -ag precmd_functions; '
               'precmd_functions=(_direnv_hook $precmd_functions); chpwd_functions=(_direnv_hook $chpwd_functions)'],
    "debug_trap": ["__dbg=0; trap '(( __dbg++ ))' DEBUG"],
}


def _coexist_cases():
    for kind, setups in (("bash", BASH_SETUPS), ("zsh", ZSH_SETUPS)):
        for name in setups:
            for order in ("tool_first", "hook_first"):
                yield pytest.param(kind, name, order, id=f"{kind}-{name}-{order}")


@pytest.mark.parametrize("kind, tool, order", list(_coexist_cases()))
def test_coexistence_at_the_3rd_and_300th_prompt(make_shell, kind, tool, order):
    setup = (BASH_SETUPS if kind == "bash" else ZSH_SETUPS)[tool]
    if order == "tool_first":
        sh = make_shell(kind, before=setup)
    else:
        sh = make_shell(kind, after=setup)
    sh.run(":")
    sh.run("kubectl exit 3 | cat")  # the 3rd prompt or so
    sh.many(":", 296)
    out = sh.run("kubectl get po -n three-hundred; echo rc=$?")
    assert "rc=0" in out
    recs = sh.records()
    assert argvs(recs) == [["exit", "3"], ["get", "po", "-n", "three-hundred"]]
    assert recs[0]["exit_code"] == 3
    # ... and the other tool still works.
    if tool == "prompt_command_string":
        assert int(sh.run("echo $__pc").strip()) >= 299
    elif tool == "prompt_command_array":
        a, b = map(int, sh.run("echo $__pc $__pc2").split())
        assert a >= 299 and b >= 299
    elif tool == "debug_trap":
        assert int(sh.run("echo $__dbg").strip()) >= 299
    elif tool == "preexec_framework":
        pre, post = map(int, sh.run("echo $__mp_pre $__mp_post").split())
        assert pre >= 299 and post >= 299
    elif tool == "add_zsh_hook":
        pre, post = map(int, sh.run("echo $__pre $__post").split())
        assert pre >= 299 and post >= 299
    elif tool == "starship":
        # The prompt shows kubectl's status and the pipeline's statuses, as without the hook.
        sh.p.sendline("kubectl exit 4 | (exit 2)")
        sh.p.expect_exact(PROMPT)
        assert sh.p.before.rstrip().endswith("[2|4 2]")
    elif tool == "direnv":
        envdir = sh.tmp / "envdir"
        envdir.mkdir()
        kubeconfig(envdir / "kc", contexts=("dir",), current="dir")
        sh.run("cd envdir")
        assert sh.run("echo $KUBECONFIG").strip() == str(envdir / "kc")
        sh.run("kubectl get po")
        assert sh.records()[-1]["kubeconfig"] == [str(envdir / "kc")]
