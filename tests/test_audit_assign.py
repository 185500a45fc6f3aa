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
       kind: str = "") -> tuple:
    # the columns of correlate._EV_COLS (kind: the responseObject's, logged at RequestResponse level)
    return (aid, t, verb, "alice", "", "kubectl/v1.32.4", resource, sub, "default", POD if verb != "list" else "",
            "", 200, "allow", "/api/v1/namespaces/default/pods", 3, manager, kind)


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
