"""The assignment step of audit correlation (kubectl_record/audit/correlate.py), on hand-made runs
and events: which calls a command sends and in which order decide shared events; what the audit
log cannot tell apart stays `ambiguous`."""

from __future__ import annotations

import pytest

from kubectl_record.audit import correlate as corr, expect

POD = "web-0"


def rec(rid: str, argv: list[str], start: float, end: float) -> corr.Rec:
    """A run of `kubectl ARGV` on pods (`logs POD`, `label pod POD a=b`, `get pods` …)."""
    words = [a for a in argv if "=" not in a and not a.startswith("-")]
    names = words[1:] if argv[0] == "logs" else words[2:]
    d = {"id": rid, "argv": argv, "verb": argv[0], "resource": "pods", "names": names, "namespace": "default", "all_namespaces": False, "local_only": False, "exit_code": 0,
         "context": "c", "user": "u", "impersonate": None}
    return corr.Rec(rid, start, end, d, expect.expect(d), "alice", None)


def ev(aid: str, t: float, verb: str, sub: str = "", manager: str = "", resource: str = "pods",
       kind: str = "", sets: str = "") -> tuple:
    # the columns of correlate._EV_COLS (kind: the responseObject's, logged at RequestResponse
    # level; sets: what a patch sets, from its requestObject)
    return (aid, t, verb, "alice", "", "kubectl/v1.32.4", resource, sub, "default", POD if verb != "list" else "",
            "", 200, "allow", "/api/v1/namespaces/default/pods", 3, manager, kind, sets)


@pytest.mark.parametrize("argv,calls,fits", [
    (["label", "pod", POD, "a=b"], [("get", ""), ("patch", "")], True),
    (["label", "pod", POD, "a=b"], [("patch", ""), ("get", "")], False),      # out of order
    (["label", "pod", POD, "a=b"], [("get", ""), ("get", "")], False),        # one GET only
    (["label", "pod", POD, "a=b"], [("patch", "")], True),                    # a call dropped by the policy
    (["describe", "pod", POD], [("get", ""), ("get", "")], True),
    (["describe", "pod", POD], [("get", ""), ("get", ""), ("get", "")], False),
    (["logs", POD], [("get", ""), ("get", "log")], True),
    (["logs", POD], [("get", "log"), ("get", "")], False),
    (["get", "pods"], [("list", ""), ("list", "")], True),                    # chunked
])
def test_a_run_takes_only_the_calls_its_command_sends_in_order(argv, calls, fits):
    r = rec("x", argv, 0.0, 1.0)
    evs = [ev(f"e{i}", 0.1 * (i + 1), v, s) for i, (v, s) in enumerate(calls)]
    assert expect.follows_plan(r.exp, evs) is fits


def test_plans_decide_what_time_windows_cannot():
    # label X and logs Y overlap; both GETs of the pod fall in both runs. Only X sends a PATCH
    # and only Y a GET …/log, and each GETs before those: the early GET precedes the PATCH.
    x = rec("x", ["label", "pod", POD, "a=b"], 0.0, 1.0)
    y = rec("y", ["logs", POD], 0.0, 1.0)
    evs = [ev("g1", 0.20, "get"), ev("p", 0.30, "patch", manager="kubectl-label"), ev("g2", 0.40, "get"),
           ev("l", 0.50, "get", sub="log")]
    corr.assign([x, y], evs, 0.0, 0.01)
    assert sorted(e[0] for e, _ in x.unique) == ["g1", "p"] and not x.shared
    assert sorted(e[0] for e, _ in y.unique) == ["g2", "l"] and not y.shared


def test_one_call_per_run_pairs_identical_runs_when_time_allows():
    # two overlapping `version`-like single-call runs: the late event fits only Y, so the early
    # one is X's
    x = rec("x", ["get", "pods"], 0.0, 0.5)
    y = rec("y", ["get", "pods"], 0.1, 1.0)
    y.exp = x.exp = expect.expect({**x.data, "argv": ["auth", "whoami"], "verb": "auth whoami", "resource": None})
    e1 = ev("e1", 0.3, "create", resource="selfsubjectreviews")
    e2 = ev("e2", 0.7, "create", resource="selfsubjectreviews")
    corr.assign([x, y], [e1, e2], 0.0, 0.01)
    assert [e[0] for e, _ in x.unique] == ["e1"] and [e[0] for e, _ in y.unique] == ["e2"]


def test_the_same_call_from_two_commands_at_once_stays_ambiguous():
    # label X and `get pod` Y each GET the pod once, both GETs inside both runs, X's PATCH after
    # both: either GET can be either run's. The PATCH is X's alone.
    x = rec("x", ["label", "pod", POD, "a=b"], 0.0, 1.0)
    y = rec("y", ["get", "pod", POD], 0.0, 1.0)
    evs = [ev("g1", 0.2, "get"), ev("g2", 0.3, "get"), ev("p", 0.4, "patch", manager="kubectl-label")]
    corr.assign([x, y], evs, 0.0, 0.01)
    assert [e[0] for e, _ in x.unique] == ["p"]
    assert sorted(e[0] for e, _ in x.shared) == sorted(e[0] for e, _ in y.shared) == ["g1", "g2"]
    assert corr.status_of(x, True)[0] == corr.status_of(y, True)[0] == "ambiguous"


@pytest.mark.parametrize("argv,kind,fits", [
    (["get", "pod", POD], "Table", True),          # kubectl get asks for Table rows
    (["get", "pod", POD], "Pod", False),
    (["get", "pod", POD, "-o", "wide"], "Table", True),
    (["get", "pod", POD, "-o", "yaml"], "Table", False),  # -o yaml/json/name…: the object
    (["get", "pod", POD, "-o", "yaml"], "Pod", True),
    (["get", "pod", POD, "--server-print=false"], "Pod", True),
    (["describe", "pod", POD], "Table", False),
    (["logs", POD], "Pod", True),
    (["label", "pod", POD, "a=b"], "Table", False),
    (["get", "pod", POD], "Status", True),         # an error answers a Status, whatever was asked
    (["describe", "pod", POD], "", True),          # Metadata level: not known
])
def test_the_response_kind_tells_a_get_from_commands_that_read_the_object(argv, kind, fits):
    r = rec("x", argv, 0.0, 1.0)
    assert (expect.score(r.exp, "pods", "", "get", "default", POD, response_kind=kind) > 0) is fits


def test_a_table_answer_settles_what_the_same_get_leaves_ambiguous():
    # as above, but logged at RequestResponse level: the GET answered with a Table is `get pod`'s
    x = rec("x", ["label", "pod", POD, "a=b"], 0.0, 1.0)
    y = rec("y", ["get", "pod", POD], 0.0, 1.0)
    evs = [ev("g1", 0.2, "get", kind="Table"), ev("g2", 0.3, "get", kind="Pod"),
           ev("p", 0.4, "patch", manager="kubectl-label", kind="Pod")]
    corr.assign([x, y], evs, 0.0, 0.01)
    assert sorted(e[0] for e, _ in x.unique) == ["g2", "p"] and [e[0] for e, _ in y.unique] == ["g1"]
    assert not x.shared and not y.shared


def test_a_run_that_started_up_faster_than_any_seen_keeps_its_call():
    # Two `get ns` (one list each, but a chunked list sends several). Runs seen so far took
    # 0.3 s to send their first call; Y, started when the load dropped, sent its list 0.05 s
    # after its start. It is Y's, not a second list of X (which has its own).
    x = rec("x", ["get", "pods"], 0.0, 1.0)
    y = rec("y", ["get", "pods"], 0.8, 1.0)
    e1, e2 = ev("e1", 0.5, "list"), ev("e2", 0.85, "list")
    corr.assign([x, y], [e1, e2], 0.0, 0.01, lead=0.3, tail=0.0)
    assert [e[0] for e, _ in x.unique] == ["e1"] and [e[0] for e, _ in y.unique] == ["e2"]
    assert corr.status_of(x, True)[0] == corr.status_of(y, True)[0] == "strong"


def test_a_run_that_started_up_slower_than_any_seen_keeps_its_call():
    # the same the other way: runs seen so far sent their first call within 0.1 s; Y, started
    # under a load spike, sent its list 0.5 s after its start
    x = rec("x", ["get", "pods"], 0.3, 1.0)
    y = rec("y", ["get", "pods"], 0.0, 0.55)
    e1, e2 = ev("e1", 0.5, "list"), ev("e2", 0.6, "list")
    corr.assign([x, y], [e1, e2], 0.0, 0.01, lead_hi=0.1, tail_hi=0.1)
    assert [e[0] for e, _ in x.unique] == ["e2"] and [e[0] for e, _ in y.unique] == ["e1"]


def test_identical_runs_each_keep_the_call_they_made_rather_than_one_taking_two():
    # both lists fall in both runs: either can be either's, so neither is decided
    x = rec("x", ["get", "pods"], 0.0, 1.0)
    y = rec("y", ["get", "pods"], 0.0, 1.0)
    corr.assign([x, y], [ev("e1", 0.5, "list"), ev("e2", 0.6, "list")], 0.0, 0.01)
    assert corr.status_of(x, True)[0] == corr.status_of(y, True)[0] == "ambiguous"
    # the early list is before Y started: X's; the late one then goes to Y, which made a call
    y = rec("y", ["get", "pods"], 0.55, 1.0)
    corr.assign([x, y], [ev("e1", 0.5, "list"), ev("e2", 0.6, "list")], 0.0, 0.01)
    assert [e[0] for e, _ in x.unique] == ["e1"] and [e[0] for e, _ in y.unique] == ["e2"]


def test_a_group_too_large_to_solve_shares_its_calls(monkeypatch):
    # label X has its PATCH and describe Y its events list; the GET fits both (Pod answer).
    # Solved, the GET precedes X's PATCH and Y's list, so it can be either's: ambiguous. When
    # the solver gives up, the same holds: X being short of calls does not make the GET X's.
    monkeypatch.setattr(corr, "SOLVE_STATES", 0)
    x = rec("x", ["label", "pod", POD, "a=b"], 0.0, 1.0)
    y = rec("y", ["describe", "pod", POD], 0.0, 1.0)
    evs = [ev("g", 0.2, "get", kind="Pod"), ev("p", 0.4, "patch", manager="kubectl-label", kind="Pod"),
           ev("l", 0.5, "list", resource="events")]
    corr.assign([x, y], evs, 0.0, 0.01)
    assert [e[0] for e, _ in x.shared] == [e[0] for e, _ in y.shared] == ["g"]
    assert corr.status_of(x, True)[0] == corr.status_of(y, True)[0] == "ambiguous"


def test_one_skew_holds_for_all_calls_of_back_to_back_runs():
    # Three `get pod` runs one after the other, the skew known to ±0.09 s only: each GET falls
    # in its neighbour's window too. But a GET handed to the next run puts the skew at one end
    # of that range and its neighbour's GET then fits no run: under any one skew each run has
    # its own.
    runs = [rec("a", ["get", "pod", POD], 0.0, 0.26), rec("b", ["get", "pod", POD], 0.266, 0.403),
            rec("c", ["get", "pod", POD], 0.406, 0.544)]
    evs = [ev("ga", 0.2125, "get"), ev("gb", 0.358, "get"), ev("gc", 0.4997, "get")]
    corr.assign(runs, evs, 0.0225, 0.092)  # (from tests/test_audit_e2e.py's rotation test)
    assert [[e[0] for e, _ in r.unique] for r in runs] == [["ga"], ["gb"], ["gc"]]
    assert all(corr.status_of(r, True)[0] == "strong" for r in runs)


def test_the_skew_is_the_whole_range_the_runs_allow():
    # Every run sends its one call 0.5-0.9 s after its start and 0.1-0.5 s before its end (a
    # loaded machine); the server's clock is 2 s ahead. Any skew in [1.9, 2.5] fits every run.
    # One more run fits the slowest call only at a skew of 2.3 or more: the estimate must not
    # pin itself there. The window it leaves (± width/2) holds the true skew.
    runs, evs = [], []
    for i in range(12):
        start = 30.0 * i
        runs.append(rec(f"r{i}", ["get", "pods"], start, start + 1.0))
        evs.append(ev(f"e{i}", start + 0.5 + 0.1 * (i % 5) + 2.0, "list"))
    runs.append(rec("other", ["get", "pods"], 119.7, 120.6))  # e4 at 122.9 fits it at skew [2.3, 3.2]
    skew, support, width = corr.estimate_skew(runs, evs)
    assert skew - width / 2 <= 2.0 <= skew + width / 2
    assert width <= 0.61  # [1.9, 2.5]: no wider than the runs allow


@pytest.mark.parametrize("argv,sets,fits", [
    (["label", "pod", POD, "a=b"], "label:a=b", True),
    (["label", "pod", POD, "a=b"], "label:a=c", False),           # another label run's patch
    (["label", "pod", POD, "a=b", "c-"], "label:c-", True),       # only what changes is sent
    (["label", "pod", POD, "a=b", "--overwrite"], "label:a=b\nlabel:z=y", False),
    (["annotate", "pod", POD, "token=***"], "annotate:token=***", True),  # masked on both sides
    (["annotate", "pod", POD, "n=v"], "label:n=v", False),        # labels are not annotations
    (["scale", "deploy", POD, "--replicas", "3"], "replicas:3", True),
    (["scale", "deploy", POD, "--replicas=3"], "replicas:2", False),
    (["patch", "pod", POD, "-p", "{}"], "label:a=b", True),        # a command line that does not say
])
def test_what_a_patch_sets_must_be_what_the_command_line_says(argv, sets, fits):
    r = rec("x", argv, 0.0, 1.0)  # (on pods: rec's resource)
    assert (expect.score(r.exp, "pods", "scale" if argv[0] == "scale" else "", "patch", "default", POD,
                         sets=sets) > 0) is fits


def test_two_label_runs_at_once_are_told_apart_by_what_their_patches_set():
    # both runs GET then PATCH the same pod, all four calls inside both runs; the timing alone
    # allows either pairing, the patches' bodies only one
    x = rec("x", ["label", "pod", POD, "s1=v1", "--overwrite"], 0.0, 1.0)
    y = rec("y", ["label", "pod", POD, "s2=v9", "--overwrite"], 0.0, 1.0)
    evs = [ev("g1", 0.2, "get"), ev("g2", 0.3, "get"),
           ev("p1", 0.4, "patch", manager="kubectl-label", sets="label:s2=v9"),
           ev("p2", 0.5, "patch", manager="kubectl-label", sets="label:s1=v1")]
    corr.assign([x, y], evs, 0.0, 0.01)
    assert "p2" in [e[0] for e, _ in x.unique] and "p1" in [e[0] for e, _ in y.unique]
    # the GETs each precede both patches: still either run's
    assert corr.status_of(x, True)[0] == "ambiguous"


def _paced(n: int, verb_argv: list[str], calls: list[tuple], gaps: list[float], t0: float = 100.0) -> tuple:
    """N past runs of a command that sent CALLS (verb, subresource) GAPS apart, each alone."""
    runs, evs = [], []
    for k in range(n):
        t = t0 + k * 2.0
        runs.append(rec(f"past{k}", verb_argv, t, t + 1.0))
        at = t + 0.2
        for j, (verb, sub) in enumerate(calls):
            at += gaps[j - 1] * (1 + 0.2 * ((k % 3) - 1)) if j else 0.0
            evs.append(ev(f"past{k}-{j}", at, verb, sub))
    return runs, evs


def test_the_pace_of_a_commands_calls_says_which_run_likely_sent_the_same_get():
    # describe GETs the pod twice, 3 ms apart, then lists events 5 ms later; logs GETs it and
    # asks for the log 4 ms later (as learned from past runs). Now both run at once: GETs at
    # 0.200 and 0.203 (describe's) and 0.205 (logs'), describe's events list at 0.208, logs'
    # /log at 0.209. Every order fits the plans; only one keeps both commands at their pace.
    d_past, d_evs = _paced(12, ["describe", "pod", POD], [("get", ""), ("get", ""), ("list", "")], [0.003, 0.005])
    l_past, l_evs = _paced(12, ["logs", POD], [("get", ""), ("get", "log")], [0.004], t0=200.0)
    corr.assign(d_past + l_past, d_evs + l_evs, 0.0, 0.01)
    pace = corr.learn_pace(d_past + l_past)
    assert set(pace) == {("describe", 0), ("describe", 1), ("logs", 0)}
    d = rec("d", ["describe", "pod", POD], 0.0, 1.0)
    lg = rec("l", ["logs", POD], 0.0, 1.0)
    d.exp = expect.expect({**d.data, "resource": "pods"})
    now = [ev("g1", 0.200, "get"), ev("g2", 0.203, "get"), ev("g3", 0.205, "get"),
           ev("ls", 0.208, "list", resource="events"), ev("lg", 0.209, "get", "log")]
    corr.assign([d, lg], now, 0.0, 0.01)
    assert corr.status_of(lg, True)[0] == "ambiguous"  # without the pace, any GET can be logs'
    corr._reset([d, lg])
    corr.assign([d, lg], now, 0.0, 0.01, pace=pace)
    # each is linked to its own GETs and keeps the others' as possible; the pace decides nothing
    # alone: both stay ambiguous
    assert [e[0] for e in corr.status_of(d, True)[1]] == ["g1", "g2", "ls"]
    assert [e[0] for e in corr.status_of(lg, True)[1]] == ["g3", "lg"]
    assert [e[0] for e in d.possible] == ["g3"] and [e[0] for e in lg.possible] == ["g1", "g2"]
    assert corr.status_of(d, True)[0] == corr.status_of(lg, True)[0] == "ambiguous"


def test_a_call_no_run_can_take_leaves_the_rest_solved():
    # two label runs, three GETs of the pod before both patches: each run sends one GET, so one
    # GET is another client's. The best ways place two; any GET can be either run's or the other
    # client's, so each run lists all three, and each keeps its own patch.
    x = rec("x", ["label", "pod", POD, "a=1"], 0.0, 1.0)
    y = rec("y", ["label", "pod", POD, "b=2"], 0.0, 1.0)
    evs = [ev("g1", 0.2, "get"), ev("g2", 0.25, "get"), ev("g3", 0.3, "get"),
           ev("p1", 0.4, "patch", manager="kubectl-label", sets="label:a=1"),
           ev("p2", 0.5, "patch", manager="kubectl-label", sets="label:b=2")]
    corr.assign([x, y], evs, 0.0, 0.01)
    assert [e[0] for e, _ in x.unique] == ["p1"] and [e[0] for e, _ in y.unique] == ["p2"]
    assert sorted(e[0] for e, _ in x.shared) == sorted(e[0] for e, _ in y.shared) == ["g1", "g2", "g3"]
