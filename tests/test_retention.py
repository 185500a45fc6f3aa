"""delete, prune, automatic retention, and the tombstones deletions leave."""

from __future__ import annotations

import time

from kubectl_record import retention, store
from tests.recordfactory import make_record, st  # noqa: F401 (fixture)


def _tombstones(st):
    cur = st.conn.execute("SELECT * FROM tombstones ORDER BY install_id, seq_from")
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur]


def _chain(st):
    return {r[0]: (r[1], r[2], r[3]) for r in st.conn.execute("SELECT id, seq, prev_hash, hash FROM records")}


def test_prune_older_than_leaves_a_tombstone_bridging_the_chain(st):
    recs = st.add(*[make_record(f"get pods p{i}", ago=(100 - i) * 86400 - 3600) for i in range(100)])
    chain = _chain(st)
    result = st.run("prune", "--older-than", "90d", "--yes")
    assert result.exit_code == 0, result.output
    assert "deleted 10 record(s); 1 tombstone(s)" in result.stderr
    remaining = st.json("history")
    assert len(remaining) == 90
    [stone] = _tombstones(st)
    first, last = chain[recs[0]["id"]], chain[recs[9]["id"]]
    assert (stone["seq_from"], stone["seq_to"], stone["count"]) == (1, 10, 10)
    assert stone["prev_hash"] == first[1] == store.GENESIS
    assert stone["last_hash"] == last[2]
    # the next record's prev_hash is the tombstone's last_hash: the gap is accounted for
    assert chain[recs[10]["id"]][1] == stone["last_hash"]
    assert stone["reason"] == "prune --older-than 90d" and stone["uploaded_at"] is None
    assert stone["install_id"] == store.install_id(st.conn) == stone["deleted_by"]
    # search indexes follow the deletion
    assert st.history_ids("-q", "p0") == []
    assert st.conn.execute("SELECT count(*) FROM records_fts").fetchone()[0] == 90


def test_delete_by_ids_splits_tombstones_per_contiguous_range(st):
    recs = st.add(*[make_record(f"get pods p{i}", ago=100 - i) for i in range(10)])
    ids = [recs[i]["id"] for i in (2, 3, 4, 7)]
    result = st.run("delete", ids[0], ids[1][:30], ids[2][-8:], ids[3], "--yes")
    assert result.exit_code == 0, result.output
    stones = _tombstones(st)
    assert [(s["seq_from"], s["seq_to"], s["count"]) for s in stones] == [(3, 5, 3), (8, 8, 1)]
    assert len({s["deletion"] for s in stones}) == 1
    assert st.ids() == {r["id"] for i, r in enumerate(recs) if i not in (2, 3, 4, 7)}


def test_delete_by_filter_asks_first(st):
    recs = st.add(make_record("delete pod x", context="prod", mutating=True), make_record("get pods", context="dev"))
    declined = st.run("delete", "--context", "prod", input="n\n")
    assert declined.exit_code == 1 and "nothing deleted" in declined.stderr
    assert len(st.ids()) == 2
    accepted = st.run("delete", "--context", "prod", input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert st.ids() == {recs[1]["id"]}
    no_tty = st.subprocess("delete", "--context", "dev")  # stdin closed: no answer means no
    assert no_tty.returncode == 1 and len(st.ids()) == 1


def test_dry_run_and_nothing_to_delete(st):
    st.add(*[make_record("get pods", ago=200 * 86400) for _ in range(3)])
    dry = st.run("prune", "--older-than", "90d", "--dry-run")
    assert dry.exit_code == 0 and "would delete 3 record(s) in 1 seq range(s)" in dry.stdout
    assert len(st.ids()) == 3
    none = st.run("prune", "--older-than", "1y", "--yes")
    assert none.exit_code == 0 and "nothing to delete" in none.stderr
    assert _tombstones(st) == []


def test_usage_errors(st):
    for args in (["delete"], ["prune"], ["prune", "--older-than", "soonish"], ["prune", "--auto"],
                 ["prune", "--auto", "--older-than", "1d"]):
        result = st.run(*args, "--yes")
        assert result.exit_code == 2, (args, result.output)
        assert len(result.stderr.strip().splitlines()) == 1
    assert st.run("delete", "nosuchid", "--yes").exit_code == 1


def test_foreign_records_without_seq(st):
    st.add_foreign(make_record("get a", install_id="imported", ago=100 * 86400),
                   make_record("get b", install_id="imported", ago=99 * 86400))
    assert st.run("prune", "--older-than", "30d", "--yes").exit_code == 0
    [stone] = _tombstones(st)
    assert stone["install_id"] == "imported" and stone["count"] == 2 and stone["seq_from"] is None


def test_automatic_retention(st, monkeypatch):
    st.add(*[make_record("get pods", ago=d * 86400) for d in (400, 200, 10, 1)])
    monkeypatch.setenv("KUBECTL_RECORD_RETENTION", "365d")
    assert retention.maybe_auto_prune(st.conn) == 1
    assert retention.maybe_auto_prune(st.conn) == 0  # at most once a day
    assert retention.maybe_auto_prune(st.conn, now=time.time() + 2 * 86400) == 0
    monkeypatch.setenv("KUBECTL_RECORD_RETENTION", "100d")
    result = st.run("prune", "--auto", "--yes")
    assert result.exit_code == 0, result.output
    assert len(st.ids()) == 2
    assert {s["reason"] for s in _tombstones(st)} == {"retention"}


def test_retention_from_config_file(st, monkeypatch):
    from kubectl_record import paths

    st.add(*[make_record("get pods", ago=i * 86400) for i in range(5)])
    with open(paths.config_file(), "w") as f:
        f.write('[retention]\nmax_records = 2\n')
    assert retention.retention_settings() == {"max_age": None, "max_records": 2}
    assert retention.maybe_auto_prune(st.conn) == 3
    assert len(st.ids()) == 2


def test_deleting_the_newest_records_never_reuses_their_seq(st):
    """The next run continues the chain from the tombstone: the collector may already hold the
    deleted records, and a reused seq would look like a conflicting record."""
    old = st.add(*(make_record(f"get pods p{i}", ago=100 - i) for i in range(3)))
    deleted, _ = retention.delete_where(st.conn, "id = ?", [old[2]["id"]], "test")
    assert deleted == 1
    [tomb] = _tombstones(st)
    [new] = st.add(make_record("get pods p9", ago=1))
    seq, prev, _ = _chain(st)[new["id"]]
    assert (seq, prev) == (tomb["seq_to"] + 1, tomb["last_hash"]) == (4, tomb["last_hash"])
