"""Called by the ingester after records are stored (kubectl_record/ingest.py)."""

from __future__ import annotations


def after_ingest(conn, records: list[dict], marked: list[str], *, background: bool) -> None:
    if marked:
        conn.executemany("INSERT OR IGNORE INTO audit_marked (record_id) VALUES (?)", [(m,) for m in marked])
    if not background or not records:
        return
    # Only clusters an audit source is bound to, one cached SelfSubjectReview per context and
    # credential; no other network call happens in the ingester.
    if not conn.execute("SELECT 1 FROM audit_clusters LIMIT 1").fetchone():
        return
    from .identity import fill

    fill(conn, records, only_bound=True, budget_s=10.0)
