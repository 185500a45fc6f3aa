"""`kubectl record stats`: per context and overall — counts, failure rate, mutating vs read-only,
top verbs, resources, namespaces and hours, and activity per day as a terminal chart.

Fast on a million records: each figure is one pass over a covering index (context, verb,
resource, namespace, started_at), and the time figures count hour buckets with index range
scans, converted to local days and hours in Python (exact across daylight-saving changes).
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime, timedelta

import click

from .filters import BadUsage, Command, filter_options, parse_time

BARS = " ▁▂▃▄▅▆▇█"


def _where(where: str) -> str:
    return f" WHERE {where}" if where else ""


def collect(conn, where: str, params: list, *, top: int = 10, days: int | None = None,
            since: float | None = None, until: float | None = None, now: float | None = None) -> dict:
    """Every figure of the report as plain data (what `-o json` prints)."""
    now = time.time() if now is None else now
    params = list(params)
    contexts = []
    for ctx, count, failed, unknown, mutating, read_only, first, last in conn.execute(
        "SELECT context, count(*), sum(exit_code != 0), sum(exit_code IS NULL), sum(mutating = 1),"
        f" sum(mutating = 0), min(started_at), max(started_at) FROM records{_where(where)}"
        " GROUP BY context ORDER BY count(*) DESC, context", params
    ):
        contexts.append({"context": ctx, "count": count, "failed": failed or 0, "exit_unknown": unknown or 0,
                         "failure_rate": _rate(failed or 0, count - (unknown or 0)), "mutating": mutating or 0,
                         "read_only": read_only or 0, "first": first, "last": last})
    total = sum(c["count"] for c in contexts)
    failed = sum(c["failed"] for c in contexts)
    unknown = sum(c["exit_unknown"] for c in contexts)
    overall = {
        "count": total, "failed": failed, "exit_unknown": unknown, "failure_rate": _rate(failed, total - unknown),
        "mutating": sum(c["mutating"] for c in contexts), "read_only": sum(c["read_only"] for c in contexts),
        "contexts": len(contexts),
        "first": min((c["first"] for c in contexts if c["first"]), default=None),
        "last": max((c["last"] for c in contexts if c["last"]), default=None),
    }
    report = {"overall": overall, "contexts": contexts}
    for column, key in (("verb", "verbs"), ("resource", "resources"), ("namespace", "namespaces")):
        clause = f"{column} IS NOT NULL" + (f" AND {where}" if where else "")
        report[key] = [{"name": name, "count": n} for name, n in conn.execute(
            f"SELECT {column}, count(*) FROM records WHERE {clause} GROUP BY {column}"
            f" ORDER BY count(*) DESC, {column} LIMIT ?", [*params, top])]
    buckets = _hour_buckets(conn, where, params, overall["first"], overall["last"], since, until)
    hours = [0] * 24
    per_day: dict[str, int] = {}
    localtime = time.localtime
    for utc_hour, n in buckets:
        local = localtime(utc_hour)
        hours[local.tm_hour] += n
        day = f"{local.tm_year:04d}-{local.tm_mon:02d}-{local.tm_mday:02d}"
        per_day[day] = per_day.get(day, 0) + n
    report["hours"] = [{"hour": h, "count": n} for h, n in enumerate(hours)]
    report["days"] = _day_series(per_day, days, since, until, now, overall["last"])
    return report


def _rate(failed: int, known: int) -> float:
    return round(failed / known, 4) if known else 0.0


def _hour_buckets(conn, where: str, params: list, first: str | None, last: str | None,
                  since: float | None, until: float | None) -> list[tuple[float, int]]:
    """(epoch of the UTC hour, count) for every hour with records: one index range count per hour,
    all inside one statement."""
    if not first or not last:
        return []
    if where:
        # A filtered set: one grouping pass over what matches.
        return [(_hour_epoch(a), n) for a, n in conn.execute(
            f"SELECT substr(started_at, 1, 13), count(*) FROM records WHERE {where} GROUP BY 1", params)]
    # Everything: count each hour with an index range scan (no per-row function, no sorter).
    start = int(_hour_epoch(first[:13]))
    end = int(_hour_epoch(last[:13])) + 3600
    edges = [time.strftime("%Y-%m-%dT%H", time.gmtime(t)) for t in range(start, end + 1, 3600)]
    sql = ("WITH e AS (SELECT key AS k, value AS a, lead(value) OVER (ORDER BY key) AS b FROM json_each(?))"
           " SELECT k, (SELECT count(*) FROM records WHERE started_at >= e.a AND started_at < e.b)"
           " FROM e WHERE b IS NOT NULL")
    return [(start + k * 3600, n) for k, n in conn.execute(sql, [json.dumps(edges)]) if n]


def _hour_epoch(text: str) -> float:
    """Epoch seconds of a UTC `YYYY-MM-DDTHH`."""
    import calendar

    return calendar.timegm((int(text[:4]), int(text[5:7]), int(text[8:10]), int(text[11:13]), 0, 0))


def _day_series(per_day: dict[str, int], days: int | None, since: float | None, until: float | None,
                now: float, last: str | None) -> list[dict]:
    """Consecutive local days (zeros included): the last DAYS days, or the --since/--until span."""
    end = datetime.fromtimestamp(until if until is not None else now).date()
    if days is None:
        if since is not None:
            days = max(1, (end - datetime.fromtimestamp(since).date()).days + 1)
        else:
            days = 30
    days = min(days, 3660)
    start = end - timedelta(days=days - 1)
    return [{"day": (d := start + timedelta(days=i)).isoformat(), "count": per_day.get(d.isoformat(), 0)}
            for i in range(days)]


# --- rendering --------------------------------------------------------------------------------


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def _hbar(n: int, most: int, width: int) -> str:
    if not most:
        return ""
    cells = n / most * width
    full = int(cells)
    rest = cells - full
    partial = "▏▎▍▌▋▊▉"[int(rest * 7) - 1] if rest * 7 >= 1 and full < width else ""
    return "█" * full + partial


def _columns() -> int:
    try:
        return max(40, os.get_terminal_size(sys.stdout.fileno()).columns)
    except (OSError, ValueError):
        return int(os.environ.get("COLUMNS", "100") or 100)


def render(report: dict, out=None, *, color: bool = False) -> None:
    out = out or sys.stdout
    w = out.write
    o = report["overall"]
    cols = _columns()

    def head(text: str) -> None:
        w("\n" + (click.style(text, bold=True) if color else text) + "\n")

    w(f"{o['count']} record(s) in {o['contexts']} context(s)")
    if o["first"]:
        w(f", {o['first'][:10]} … {o['last'][:10]}")
    w("\n")
    if not o["count"]:
        return
    w(f"failed: {o['failed']} ({_pct(o['failure_rate'])} of runs with a known exit status)"
      f"   mutating: {o['mutating']}   read-only: {o['read_only']}\n")

    head("PER CONTEXT")
    rows = [("CONTEXT", "RUNS", "FAILED", "FAIL%", "MUTATING", "READ-ONLY", "LAST")]
    for c in report["contexts"]:
        rows.append((c["context"] or "-", str(c["count"]), str(c["failed"]), _pct(c["failure_rate"]),
                     str(c["mutating"]), str(c["read_only"]), (c["last"] or "")[:10]))
    _table(rows, w, right={1, 2, 3, 4, 5})

    bar_width = max(10, min(40, cols - 40))
    for key, title in (("verbs", "TOP VERBS"), ("resources", "TOP RESOURCES"), ("namespaces", "TOP NAMESPACES")):
        items = report[key]
        if not items:
            continue
        head(title)
        most = items[0]["count"]
        name_w = max(len(i["name"]) for i in items)
        num_w = max(len(str(i["count"])) for i in items)
        for i in items:
            w(f"  {i['name']:<{name_w}}  {i['count']:>{num_w}}  {_hbar(i['count'], most, bar_width)}\n")

    head("HOURS (local time)")
    hours = report["hours"]
    most = max(h["count"] for h in hours)
    num_w = max(len(str(h["count"])) for h in hours)
    for h in hours:
        w(f"  {h['hour']:02d}  {h['count']:>{num_w}}  {_hbar(h['count'], most, bar_width)}\n")

    days = report["days"]
    if days:
        head(f"ACTIVITY PER DAY ({days[0]['day']} … {days[-1]['day']})")
        _day_chart(days, w, cols, color)


def _table(rows, w, right=frozenset()) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        cells = [(cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])) for i, cell in enumerate(r)]
        w("  " + "   ".join(cells).rstrip() + "\n")


def _day_chart(days: list[dict], w, cols: int, color: bool, height: int = 8) -> None:
    """A vertical bar chart, one column per day (several days per column when they do not fit)."""
    label_w = len(str(max(d["count"] for d in days))) + 1
    room = max(10, cols - label_w - 4)
    per_col = max(1, -(-len(days) // room))
    groups = [days[i:i + per_col] for i in range(0, len(days), per_col)]
    values = [sum(d["count"] for d in g) for g in groups]
    most = max(values) or 1
    levels = [v / most * height for v in values]
    for row in range(height, 0, -1):
        label = str(most) if row == height else ""
        line = []
        for lv in levels:
            if lv >= row:
                line.append("█")
            elif lv > row - 1:
                frac = lv - (row - 1)
                line.append(BARS[max(1, int(frac * 8))] if lv > 0 else " ")
            else:
                line.append(" ")
        w(f"  {label:>{label_w}} │{''.join(line)}\n")
    w(f"  {'':>{label_w}} └{'─' * len(groups)}\n")
    first, last = groups[0][0]["day"], groups[-1][-1]["day"]
    unit = "day" if per_col == 1 else f"{per_col} days"
    axis = f"{first}  (one column = {unit})"
    pad = max(1, len(groups) - len(axis) - len(last))
    w(f"  {'':>{label_w}}  {axis}{' ' * pad}{last}\n" if len(groups) >= len(axis) + len(last) + 1
      else f"  {'':>{label_w}}  {first} … {last}  (one column = {unit})\n")


@click.command(cls=Command)
@filter_options
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True, help="How many verbs, resources, namespaces.")
@click.option("--days", type=click.IntRange(min=1), help="Days in the activity chart (default: the --since span, or 30).")
@click.option("-o", "--output", type=click.Choice(["text", "json", "yaml"]), default="text", show_default=True)
def stats(filters, top: int, days: int | None, output: str) -> None:
    """Per context and overall: counts, failure rate, mutating vs read-only, top verbs, resources,
    namespaces and hours, and activity per day. Takes the same filters as `history`."""
    now = time.time()
    filters.where(now)  # bad values fail before the store is opened
    since = until = None
    try:
        if filters.since:
            since = parse_time(filters.since, now)
        if filters.until:
            until = parse_time(filters.until, now)
    except ValueError as exc:
        raise BadUsage(str(exc)) from None
    from .cli import open_store

    conn = open_store()
    where, params = filters.where(now)
    report = collect(conn, where, params, top=top, days=days, since=since, until=until, now=now)
    if output == "json":
        sys.stdout.write(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    elif output == "yaml":
        import yaml

        sys.stdout.write(yaml.safe_dump(report, sort_keys=False, allow_unicode=True))
    else:
        from .output import use_color

        render(report, color=use_color())
