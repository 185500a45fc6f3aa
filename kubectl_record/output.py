"""Shared output options and formatters (in the style of sqlite-utils' shared output options).

`-o table|wide|json|jsonl|csv|tsv|yaml|name|custom-columns=SPEC|template=TEXT` and `--no-headers`,
for every command that prints records. Everything streams: json is one array written record by
record, csv/jsonl/yaml line by line, and the table measures its widths on the first rows only.
PyYAML is imported only for `-o yaml`.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator

import click

from .filters import BadUsage

FORMATS = ("table", "wide", "json", "jsonl", "csv", "tsv", "yaml", "name")
TEMPLATE_FORMATS = ("custom-columns=", "template=")
# How many rows the table measures before it starts printing (the rest stream in those widths).
TABLE_WINDOW = 1000


def output_options(fn):
    """Add -o/--output and --no-headers."""
    fn = click.option("--no-headers", is_flag=True, help="Omit the header row (table, wide, csv, tsv, custom-columns).")(fn)
    fn = click.option(
        "-o", "--output", default="table", metavar="FORMAT", callback=_check_format, show_default=True,
        help="table, wide, json, jsonl, csv, tsv, yaml, name, custom-columns=HEADER:.field,…, or"
             " template='{id} {command}'.",
    )(fn)
    return fn


def _check_format(ctx, param, value: str) -> str:
    value = value or "table"
    if value in FORMATS:
        return value
    if value == "ndjson":
        return "jsonl"
    for prefix in TEMPLATE_FORMATS:
        if value.startswith(prefix):
            if not value[len(prefix):].strip():
                raise BadUsage(f"-o {prefix}: the spec is empty")
            if prefix == "custom-columns=":
                parse_custom_columns(value[len(prefix):])
            return value
    raise BadUsage(f"unknown output format {value!r}: use one of {', '.join(FORMATS)}, custom-columns=…, template=…")


def streams_everything(fmt: str) -> bool:
    """Machine formats print every match unless --limit says otherwise; tables default to 50."""
    return fmt not in ("table", "wide") and not fmt.startswith("custom-columns=")


def use_color(stream=None) -> bool:
    stream = stream or sys.stdout
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# --- values -----------------------------------------------------------------------------------


def json_line(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(", ", ": "))


def flat(value) -> str:
    """A value in one cell: JSON for lists and objects, true/false, empty for null."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


_PATH_PART = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+|\*)\]")


def _path_getter(path: str) -> Callable[[dict], object]:
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    if not path.startswith("."):
        path = "." + path
    parts = []
    pos = 0
    for m in _PATH_PART.finditer(path):
        if m.start() != pos:
            break
        parts.append(m.group(1) if m.group(1) is not None else (m.group(2) if m.group(2) == "*" else int(m.group(2))))
        pos = m.end()
    if pos != len(path) or not parts:
        raise BadUsage(f"custom-columns: cannot read the field path {path!r} (use .field, .field.sub, .list[0])")

    def get(record):
        value = record
        for part in parts:
            if value is None:
                return None
            if part == "*":
                continue
            if isinstance(part, int):
                value = value[part] if isinstance(value, list) and -len(value) <= part < len(value) else None
            elif isinstance(value, dict):
                value = value.get(part)
            elif isinstance(value, list):
                value = [v.get(part) if isinstance(v, dict) else None for v in value]
            else:
                return None
        return value

    return get


def parse_custom_columns(spec: str) -> list[tuple[str, Callable]]:
    """kubectl's custom-columns: `HEADER:.path,HEADER:.path`."""
    columns = []
    for item in spec.split(","):
        if not item.strip():
            continue
        header, sep, path = item.partition(":")
        if not sep or not header.strip():
            raise BadUsage(f"custom-columns: {item!r} is not HEADER:.field")
        columns.append((header.strip(), _path_getter(path)))
    if not columns:
        raise BadUsage("custom-columns: no columns given")
    return columns


def _cell(value) -> str:
    if value is None:
        return "<none>"
    if isinstance(value, list):
        return ",".join("<none>" if v is None else flat(v) for v in value) or "<none>"
    return flat(value)


class _Template:
    """`template={id}\\t{command}`: str.format fields over the record (`{names[0]}`, `{ci[system]}`);
    null prints as empty; \\t and \\n are understood."""

    def __init__(self, text: str):
        import string

        self.text = text.replace("\\t", "\t").replace("\\n", "\n")
        self.formatter = string.Formatter()

    def render(self, record: dict) -> str:
        class Nulls(dict):
            def __missing__(self, key):
                raise BadUsage(f"template: unknown field {key!r}")

        values = Nulls({k: ("" if v is None else v) for k, v in record.items()})
        try:
            return self.formatter.vformat(self.text, (), values)
        except BadUsage:
            raise
        except (IndexError, KeyError, ValueError, AttributeError, TypeError) as exc:
            raise BadUsage(f"template: {exc}") from None


# --- writers ----------------------------------------------------------------------------------


class Column:
    __slots__ = ("header", "get", "style")

    def __init__(self, header: str, get: Callable[[dict], str], style: Callable[[dict, str], str] | None = None):
        self.header, self.get, self.style = header, get, style


def write_table(rows: Iterable[dict], columns: list[Column], *, no_headers: bool = False, color: bool = False,
                out=None, window: int = TABLE_WINDOW) -> int:
    """kubectl's table: columns separated by three spaces, the last one unpadded. Widths come
    from the first WINDOW rows; later rows stream in those widths. Returns the number of rows."""
    out = out or sys.stdout
    it = iter(rows)
    first: list[tuple[dict, list[str]]] = []
    for record in it:
        first.append((record, [c.get(record) for c in columns]))
        if len(first) >= window:
            break
    widths = [len(c.header) if not no_headers else 0 for c in columns]
    for _, cells in first:
        for i, cell in enumerate(cells):
            if len(cell) > widths[i]:
                widths[i] = len(cell)
    last = len(columns) - 1

    def line(cells: list[str], record: dict | None) -> str:
        parts = []
        for i, cell in enumerate(cells):
            text = cell if i == last else cell.ljust(widths[i])
            if color and record is not None and columns[i].style:
                text = columns[i].style(record, text)
            parts.append(text)
        return "   ".join(parts).rstrip() if not color else "   ".join(parts)

    count = 0
    if not first:
        return 0
    if not no_headers:
        header = line([c.header for c in columns], None)
        out.write((click.style(header, bold=True) if color else header) + "\n")
    for record, cells in first:
        out.write(line(cells, record) + "\n")
        count += 1
    for record in it:
        out.write(line([c.get(record) for c in columns], record) + "\n")
        count += 1
    out.flush()
    return count


def write_records(records: Iterable[dict], fmt: str, *, fields: tuple[str, ...] | None = None,
                  no_headers: bool = False, out=None) -> int:
    """Every machine format (json, jsonl, csv, tsv, yaml, name, custom-columns, template).
    Returns how many records were written."""
    out = out or sys.stdout
    count = 0
    if fmt == "json":
        out.write("[")
        for record in records:
            out.write(("," if count else "") + "\n" + json_line(record))
            count += 1
        out.write("\n]\n" if count else "]\n")
    elif fmt == "jsonl":
        for record in records:
            out.write(json_line(record) + "\n")
            count += 1
    elif fmt in ("csv", "tsv"):
        import csv

        writer = csv.writer(out, dialect="excel" if fmt == "csv" else "excel-tab", lineterminator="\n")
        names = None
        for record in records:
            if names is None:
                names = list(fields or record.keys())
                if not no_headers:
                    writer.writerow(names)
            writer.writerow([flat(record.get(n)) for n in names])
            count += 1
        if names is None and fields and not no_headers:
            writer.writerow(fields)
    elif fmt == "yaml":
        import yaml

        dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
        for record in records:
            out.write(yaml.dump([record], Dumper=dumper, sort_keys=False, allow_unicode=True,
                                default_flow_style=False, width=1 << 16))
            count += 1
        if not count:
            out.write("[]\n")
    elif fmt == "name":
        for record in records:
            out.write(f"{record['id']}\n")
            count += 1
    elif fmt.startswith("custom-columns="):
        columns = [Column(h, (lambda g: lambda r: _cell(g(r)))(g)) for h, g in parse_custom_columns(fmt[15:])]
        count = write_table(records, columns, no_headers=no_headers, out=out)
    elif fmt.startswith("template="):
        template = _Template(fmt[9:])
        for record in records:
            text = template.render(record)
            out.write(text if text.endswith("\n") else text + "\n")
            count += 1
    else:
        raise BadUsage(f"unknown output format {fmt!r}")
    out.flush()
    return count


def limited(records: Iterator[dict], limit: int | None) -> Iterator[dict]:
    if limit is None:
        yield from records
        return
    for i, record in enumerate(records):
        if i >= limit:
            return
        yield record
