"""Writing result files so that a reader never sees half of one; Parquet files that carry metadata."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ._params import ScenarioError

__all__ = ["atomic_write", "save_parquet", "load_parquet"]


def atomic_write(path, write) -> Path:
    """Call write(tmp_path), then rename over `path`: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)       # mkstemp's 0600 is for the temporary name only
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def save_parquet(path, df, key: bytes, meta: dict, frames: dict) -> Path:
    """Write df as one Parquet file, atomically, with `meta` and the small DataFrames
    `frames` (by name) as JSON in its schema metadata under `key`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    extra = {"meta": meta, **{name: json.loads(f.to_json(orient="split", index=False, double_precision=15))
                              for name, f in frames.items()}}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), key: json.dumps(extra).encode()})
    return atomic_write(path, lambda p: pq.write_table(table, p, compression="zstd"))


def load_parquet(path, key: bytes, origin: str, what: str, hint: str):
    """(df, meta, frames) of a file save_parquet wrote under `key`; a ScenarioError naming
    `origin` for a file that is not Parquet or holds no `what` (`hint` says what it may be)."""
    import pandas as pd
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as e:
        raise ScenarioError(f"{origin}({str(path)!r}): not a Parquet file: {e}") from None
    md = table.schema.metadata or {}
    if key not in md:
        raise ScenarioError(f"{origin}({str(path)!r}): not a cowbench {what} (no {key.decode()} metadata); {hint}")
    extra = json.loads(md[key])
    frames = {k: pd.DataFrame(v["data"], columns=v["columns"]) for k, v in extra.items() if k != "meta"}
    return table.to_pandas(), extra["meta"], frames
