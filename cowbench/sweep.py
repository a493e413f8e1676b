"""The sweep runner: a grid of parameters run through a point function, in parallel, resumably.

    from cowbench.sweep import grid, run_sweep

    def point(size_mib=64, policy="cow"):          # a module-level function
        ...                                        # scenario -> simulate -> rows
        return [{"fork_ms": ..., "peak_mib": ...}]

    df = run_sweep(point, grid(size_mib=[64, 256, 1024], policy=["eager", "cow"]), "out/points")

Each point is one call `point(**params)`; it returns a dict (one row), a list of
dicts or a DataFrame. The runner adds the parameters as columns (unless the
rows already have them) and a `point` column: a stable hash of the parameters.

The output directory is a Parquet dataset: one file per point,
`part-<hash>.parquet`, written atomically (a reader, or a run killed halfway,
never sees half a file), so `pd.read_parquet(out)` reads every point. A rerun
over the same directory computes only the points whose file is missing: grow a
grid, or resume an interrupted run, and nothing is computed twice. A point that
raises is reported at the end (SweepError) after every other point has been
written, so a rerun retries just the failures. Delete the directory, or pass
fresh=True, to compute everything again (for example after changing the point
function: the runner cannot tell that its results went stale).

Where points run:
- workers=1: in this process, one after the other (easiest to debug).
- default: a pool of `workers` local processes (default os.cpu_count()); on
  Linux they are forked, so they start with cowbench and its compiled kernels
  already loaded, and the point function need not be importable by name.
- scheduler="tcp://host:8786" (or a dask.distributed Client or Cluster): on a
  Dask distributed cluster. Workers need cowbench installed; point functions
  from files that are not importable on the workers (experiment scripts) are
  shipped by value. Results travel back to this process, which writes every
  file: the workers need no shared filesystem.
"""
from __future__ import annotations

import hashlib
import inspect
import itertools
import json
import math
import multiprocessing
import os
import sys
import traceback
import uuid
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .fileio import atomic_write

__all__ = ["grid", "point_id", "run_sweep", "load_sweep", "part_path", "SweepError"]

MANIFEST = "_sweep.json"          # pyarrow datasets skip names starting with '_' or '.'
_SCALARS = (str, int, float, bool, type(None))


class SweepError(RuntimeError):
    """A sweep that could not run, or points that raised (the rest were written)."""

    def __init__(self, message: str, failures: list | None = None):
        super().__init__(message)
        self.failures = failures or []


def grid(**axes: Iterable) -> list[dict]:
    """The cartesian product of the axes, as a list of parameter dicts, in order:
    grid(a=[1, 2], b=["x", "y"]) -> [{a:1,b:x}, {a:1,b:y}, {a:2,b:x}, {a:2,b:y}].
    Concatenate several grids (lists) for a grid that is not a full product."""
    names = list(axes)
    values = []
    for k in names:
        v = axes[k]
        if isinstance(v, (str, bytes)) or not isinstance(v, Iterable):
            v = [v]
        values.append(list(v))
    return [dict(zip(names, combo)) for combo in itertools.product(*values)]


def _plain(value, where: str):
    """A JSON-able Python value from a parameter (NumPy scalars become Python ones)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v, where) for v in value]
    if not isinstance(value, _SCALARS):
        raise SweepError(f"{where}: parameter values must be str, int, float, bool, None or lists of them; "
                         f"got {value!r} ({type(value).__name__})")
    if isinstance(value, float) and not math.isfinite(value):
        raise SweepError(f"{where}: parameter values must be finite; got {value!r}")
    return value


def _normalise(params: Mapping, where: str = "run_sweep") -> dict:
    if not isinstance(params, Mapping):
        raise SweepError(f"{where}: every grid point must be a dict of parameters; got {params!r}")
    out = {}
    for k, v in params.items():
        if not isinstance(k, str) or not k.isidentifier():
            raise SweepError(f"{where}: parameter names must be identifiers (they become keyword arguments "
                             f"and columns); got {k!r}")
        out[k] = _plain(v, f"{where}: parameter {k!r}")
    return out


def point_id(params: Mapping) -> str:
    """A stable 16-hex-digit name for a parameter dict: the same parameters give the
    same id in every process, on every machine, whatever the order of the keys."""
    canon = json.dumps(_normalise(params, "point_id"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()[:16]


def part_path(out, params: Mapping) -> Path:
    """Where run_sweep keeps the rows of one point."""
    return Path(out) / f"part-{point_id(params)}.parquet"


def _rows(result, params: dict) -> pd.DataFrame:
    """The tidy rows of one point: what the point function returned, plus its parameters."""
    if isinstance(result, pd.DataFrame):
        df = result.reset_index(drop=True).copy()
    elif isinstance(result, Mapping):
        df = pd.DataFrame([dict(result)])
    elif isinstance(result, (list, tuple)) and all(isinstance(r, Mapping) for r in result):
        df = pd.DataFrame([dict(r) for r in result])
    else:
        raise TypeError(f"a point function must return a dict, a list of dicts or a DataFrame; "
                        f"got {type(result).__name__}")
    front = []
    for k, v in params.items():
        if k not in df.columns:
            df[k] = json.dumps(v) if isinstance(v, list) else v
            front.append(k)
    df["point"] = point_id(params)
    return df[front + [c for c in df.columns if c not in front]]


def _run_point(fn: Callable, params: dict) -> pd.DataFrame:
    """Run one point (in whatever process or Dask worker it lands in)."""
    return _rows(fn(**params), params)


def _name_of(fn: Callable) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


def _check_manifest(out: Path, name: str) -> None:
    path = out / MANIFEST
    if path.exists():
        try:
            have = json.loads(path.read_text()).get("name")
        except (OSError, ValueError):
            have = None
        if have is not None and have != name:
            raise SweepError(f"run_sweep: {out} holds the points of sweep {have!r}, not {name!r}; "
                             f"use another directory (or fresh=True to start over there)")
        return
    atomic_write(path, lambda p: Path(p).write_text(json.dumps({"name": name}, indent=1) + "\n"))


def load_sweep(out, params: Iterable[Mapping] | None = None) -> pd.DataFrame:
    """Rows of a sweep directory: of the given points in their order (each must be
    there), or of every part file in it."""
    out = Path(out)
    if params is None:
        paths = sorted(out.glob("part-*.parquet"))
    else:
        paths = [part_path(out, p) for p in params]
    frames = [pd.read_parquet(p) for p in paths]
    frames = [f for f in frames if len(f.columns)]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def _check_signature(point_fn: Callable, points: list[dict]) -> None:
    """Refuse, before any point runs, a parameter point_fn does not take."""
    try:
        sig = inspect.signature(point_fn)
    except (TypeError, ValueError):         # a builtin or C function: it will say so itself
        return
    for p in points:
        try:
            sig.bind(**p)
        except TypeError as e:
            raise SweepError(f"run_sweep: {_name_of(point_fn)}{sig} cannot take the point {p!r}: {e}") from None


def run_sweep(point_fn: Callable, points: Iterable[Mapping] | Mapping, out, *, scheduler: Any = None,
              workers: int | None = None, progress: bool = True, name: str | None = None,
              fresh: bool = False) -> pd.DataFrame:
    """Run point_fn(**params) for every point of the grid and return all rows, in grid order.

    points: a list of parameter dicts (see `grid`), or a dict of axes (its product).
    out: the dataset directory; one Parquet file per point, named by point_id.
    scheduler: None (local processes), a Dask scheduler address, Client or Cluster.
    workers: local processes (default os.cpu_count(); 1 runs in this process).
    progress: a tqdm bar over points (on stderr).
    name: what the directory holds (default: the function's name); a directory
        that holds another sweep is refused rather than mixed.
    fresh: delete this sweep's existing part files first and compute everything.
    """
    if not callable(point_fn):
        raise SweepError(f"run_sweep: point_fn must be callable; got {point_fn!r}")
    if isinstance(points, Mapping):
        points = grid(**points)
    points = [_normalise(p) for p in points]
    ids = [point_id(p) for p in points]
    if len(set(ids)) != len(ids):
        dup = next(p for p, i in zip(points, ids) if ids.count(i) > 1)
        raise SweepError(f"run_sweep: the grid holds the point {dup!r} more than once")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise SweepError(f"run_sweep: workers must be a positive integer; got {workers!r}")
    _check_signature(point_fn, points)
    out = Path(out)
    name = name or _name_of(point_fn)
    out.mkdir(parents=True, exist_ok=True)
    if fresh:
        for p in out.glob("part-*.parquet"):
            p.unlink()
        (out / MANIFEST).unlink(missing_ok=True)
    _check_manifest(out, name)

    todo = [p for p, i in zip(points, ids) if not (out / f"part-{i}.parquet").exists()]
    failures: list[tuple[dict, str]] = []

    def store(params: dict, df: pd.DataFrame) -> None:
        atomic_write(part_path(out, params), lambda tmp: df.to_parquet(tmp, index=False))

    if todo:
        if scheduler is not None:
            runner = _run_dask
        elif (workers or os.cpu_count() or 1) == 1 or len(todo) == 1:
            runner = _run_inline
        else:
            runner = _run_pool
        runner(point_fn, todo, store, failures, scheduler=scheduler,
               workers=min(workers or os.cpu_count() or 1, len(todo)),
               bar=dict(total=len(points), initial=len(points) - len(todo), desc=name, unit="point",
                        disable=not progress, leave=False, dynamic_ncols=True))
    if failures:
        lines = "\n".join(f"  {p!r}: {err.strip().splitlines()[-1]}" for p, err in failures)
        raise SweepError(f"run_sweep: {len(failures)} of {len(points)} points raised (the other points are "
                         f"saved in {out}; a rerun computes only the missing ones):\n{lines}\n\n"
                         f"first traceback:\n{failures[0][1]}", failures)
    return load_sweep(out, points)


# --- runners: each calls store(params, df) for every point that succeeds -----------------------

def _run_inline(fn, todo, store, failures, *, bar, **_):
    with tqdm(**bar) as pbar:
        for params in todo:
            try:
                store(params, _run_point(fn, params))
            except Exception:
                failures.append((params, traceback.format_exc()))
            pbar.update(1)


def _pool_context():
    # Forked workers inherit the loaded modules (cowbench, its compiled kernels, and the
    # experiment script that defines the point function); elsewhere use the platform default.
    if sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return None


def _one_thread_each() -> None:
    """A pool worker's setup when the pool takes every core: simulate() would mark pages
    ahead on a second thread that only contends with the other workers for a core."""
    from . import simulator

    simulator.PREMARK = False


def _run_pool(fn, todo, store, failures, *, workers, bar, **_):
    # Submit everything before the progress bar exists: fork before any helper thread starts.
    crowded = workers * 2 > len(os.sched_getaffinity(0))
    with ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context(),
                             initializer=_one_thread_each if crowded else None) as ex:
        futures = {ex.submit(_run_point, fn, params): params for params in todo}
        try:
            with tqdm(**bar) as pbar:
                for f in as_completed(futures):
                    params = futures[f]
                    try:
                        store(params, f.result())
                    except Exception:
                        failures.append((params, _format_remote(f)))
                    pbar.update(1)
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def _format_remote(future) -> str:
    exc = future.exception()
    if exc is None:                       # the error came from store(), in this process
        return traceback.format_exc()
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    cause = getattr(exc, "__cause__", None)      # ProcessPoolExecutor keeps the remote traceback here
    return (str(cause) + "\n" if cause is not None else "") + tb


def _importable(module_name: str) -> bool:
    """Whether a fresh interpreter could import this module by name (else ship it by value)."""
    if module_name == "__main__":
        return False
    top = module_name.split(".")[0]
    if top in sys.builtin_module_names:
        return True
    for finder in sys.meta_path:
        find = getattr(finder, "find_spec", None)
        try:
            if find is not None and find(top, None) is not None:
                return True
        except Exception:          # a third-party finder that cannot answer: assume not
            continue
    return False


def _ship(fn: Callable) -> bytes:
    """The point function as bytes a Dask worker can load: by reference when its module
    is importable there, else by value (an experiment script loaded from a file, or
    __main__). Dask itself would pickle such a function by reference and fail."""
    import cloudpickle

    module = sys.modules.get(getattr(fn, "__module__", None) or "")
    by_value = module is not None and module.__name__ != "__main__" and not _importable(module.__name__)
    if by_value:
        cloudpickle.register_pickle_by_value(module)
    try:
        return cloudpickle.dumps(fn)
    finally:
        if by_value:
            cloudpickle.unregister_pickle_by_value(module)


def _run_shipped(payload: bytes, params: dict) -> pd.DataFrame:
    import pickle

    return _run_point(pickle.loads(payload), params)


def _dask_client(scheduler):
    try:
        from dask.distributed import Client
    except ImportError:
        raise SweepError("run_sweep: a scheduler was given but dask.distributed is not installed; "
                         "pip install 'cowbench[dask]'") from None
    if isinstance(scheduler, Client):
        return scheduler, False
    return Client(scheduler, set_as_default=False), True


def _run_dask(fn, todo, store, failures, *, scheduler, bar, **_):
    from dask.distributed import as_completed as dask_completed

    payload = _ship(fn)
    client, own = _dask_client(scheduler)
    try:
        run = uuid.uuid4().hex[:8]
        futures = {client.submit(_run_shipped, payload, params, key=f"cowbench-point-{point_id(params)}-{run}",
                                 pure=False): params for params in todo}
        with tqdm(**bar) as pbar:
            for f in dask_completed(list(futures), loop=client.loop):
                params = futures[f]
                try:
                    store(params, f.result())
                except Exception:
                    failures.append((params, traceback.format_exc()))
                pbar.update(1)
                f.release()
    finally:
        if own:
            client.close()
