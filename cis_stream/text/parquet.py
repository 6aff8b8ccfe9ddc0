"""Parquet input (FineWeb, most Hugging Face datasets): documents from one string column, read
through pyarrow one row group at a time, so memory stays bounded by the largest row group.

`--text-field` names the column, or a field inside a struct column with a dotted path
(`meta.body`); other columns are never read. A row whose text is null, empty or too long is a
reject naming its row and row group, as a bad JSON line is; a file that is not Parquet, is
truncated or lacks the column is one reject for the file, whose message lists the columns it has.
"""

from __future__ import annotations

from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cis_stream.text.records import Record, Reject, checked_text

# Columns named in a wrong-column message (enough to spot the right --text-field).
_COLUMNS_SHOWN = 12


def _columns(schema: pa.Schema, prefix: str = '') -> list[str]:
    """Every column and struct field of `schema` as a dotted path, with its type."""
    found = []
    for field in schema:
        name = prefix + field.name
        found.append(f'{name} ({field.type})' if not pa.types.is_struct(field.type) else f'{name} (struct)')
        if pa.types.is_struct(field.type):
            found += _columns(pa.schema(list(field.type)), name + '.')
    return found


def _text_column(schema: pa.Schema, text_field: str) -> tuple[str, list[str]] | str:
    """(top-level column, the struct fields below it) for `text_field`, or why it cannot be the text."""
    names = text_field.split('.')
    shown = _columns(schema)
    listed = ', '.join(shown[:_COLUMNS_SHOWN]) + (', ...' if len(shown) > _COLUMNS_SHOWN else '')
    fields, kind = schema, None
    for depth, name in enumerate(names):
        index = fields.get_field_index(name)
        if index < 0:
            missing = f'no column {name!r}' if depth == 0 else f'no field {name!r} in {".".join(names[:depth])!r}'
            return f'{missing}; the file has {listed}; choose one with --text-field'
        kind = fields.field(index).type
        if depth < len(names) - 1:
            if not pa.types.is_struct(kind):
                return f'column {".".join(names[:depth + 1])!r} is {kind}, not a struct: {text_field!r} cannot be in it'
            fields = kind
    if pa.types.is_struct(kind):
        inner = ', '.join(f'{text_field}.{f.name}' for f in kind)
        return f'column {text_field!r} is a struct: name its text field with a dotted path ({inner})'
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        return (f'column {text_field!r} is {kind}, not a string column; the file has {listed}; '
                f'choose one with --text-field')
    return names[0], names[1:]


def read_parquet(path: str, text_field: str, max_bytes: int) -> Iterator[Record]:
    """Yield the documents and rejects of one Parquet file; `line` is the row number (1-based)."""
    try:
        parquet = pq.ParquetFile(path)
        schema = parquet.schema_arrow
    except (pa.ArrowException, OSError) as err:
        yield Reject(path, 0, f'not a readable Parquet file ({err}): the whole file is skipped; a truncated '
                              f'file must be copied again')
        return
    column = _text_column(schema, text_field)
    if isinstance(column, str):
        yield Reject(path, 0, f'whole file skipped: {column}')
        return
    top, inner = column
    row = 0
    for group in range(parquet.num_row_groups):
        try:
            values = parquet.read_row_group(group, columns=[top]).column(0)
            for name in inner:
                values = pc.struct_field(values, name)
            texts = values.to_pylist()
        except (pa.ArrowException, OSError, UnicodeDecodeError) as err:
            rows = parquet.metadata.row_group(group).num_rows
            yield Reject(path, row + 1, f'row group {group} ({rows:,} rows from row {row + 1:,}) cannot be read '
                                        f'({err}): the rest of the file is skipped')
            return
        for offset, text in enumerate(texts):
            row += 1
            where = f'row {row:,} (row group {group}, row {offset})'
            if text is None:
                yield Reject(path, row, f'{where}: text field {text_field!r} is null')
            else:
                yield checked_text(path, row, where, text, max_bytes)
