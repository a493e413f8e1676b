"""Forking a server with many open descriptors: fork latency against open files, measured here and simulated.

fork() copies the descriptor table (dup_fd: the table itself, and a reference taken
on every open file description), so a server holding thousands of sockets forks
more slowly than the same process with none. Each point measures, on this host, the
fork latency of a minimal Python + NumPy process (the process `cowbench calibrate`
times) holding 0, 1,000, 2,500 and 5,000 extra descriptors (each its own open file
description, as a server's sockets are) and the point's own count; it calibrates
fork_base_ns and fork_fd_ns on the first four alone (least squares on relative
error, as calibrate fits them; a negative slope, noise outweighing the descriptors,
is 0 and `fork_fd_ns_clamped` says so) and then simulates a process with the point's
count of descriptors forking once, priced with that calibrated model: past 5,000
descriptors the prediction is out of sample. The built-in cost model's price is
shown beside it. Times are the CPU time of the forking thread (what calibrate
measures; a busy machine stretches the wall clock, shown too).

The descriptor count is capped below RLIMIT_NOFILE's hard limit (20,000 on the
development VM; its soft limit is raised to it). The points run one at a time:
they time real forks.
"""
import numpy as np

import cowbench as cb
from cowbench.experiment import grid, main, versus
from cowbench.plot import lines

CALIBRATION = (1_000, 2_500, 5_000)          # with 0: the counts the model is fitted on
QUICK = grid(fds=[2_500, 10_000])
FULL = grid(fds=[1_000, 2_500, 5_000, 10_000, 15_000, 19_000])
SERIAL = True


def unavailable():
    import os

    return "" if hasattr(os, "fork") else "needs os.fork"


def _fit(counts, ns):
    """fork = base + slope * fds, least squares on relative error (calibrate's _wls); a
    negative slope (the host's noise larger than the descriptors' cost over the
    calibration counts) is 0, as calibrate makes it, with base refitted alone.
    Returns (base, slope, clamped)."""
    from cowbench.real.calibrate import _wls

    y = np.asarray(ns, float)
    (base, slope), _, _, _ = _wls(np.asarray(counts, float), y)
    if slope >= 0:
        return base, slope, False
    return float(np.sum(1 / y) / np.sum(1 / y ** 2)), 0.0, True      # argmin sum(((y - b) / y)^2)


def _simulated_fork_ns(fds, costs):
    sc = cb.Scenario(phys_mem="64MiB")
    server = sc.spawn("server")
    sockets = sc.file("socket")
    for _ in range(fds):
        server.open(sockets, "r+")
    worker = server.fork("worker")
    worker.exit()
    kid = cb.simulate(sc, costs=costs).processes.iloc[1]
    return float(kid.fork_ns), int(kid.fork_fds_copied)


def point(fds=10_000, repeats=7):
    from dataclasses import replace

    from cowbench.real.calibrate import measure_fds

    m = measure_fds(sorted(set(CALIBRATION) | {fds}), repeats=repeats).set_index("fds")
    measured_fds = int(m.index.max()) if fds >= max(m.index) else fds        # capped by RLIMIT_NOFILE
    cal = m.loc[[0, *CALIBRATION]]
    base, per_fd, clamped = _fit(cal.index, cal.fork_cpu_ns)
    default = cb.CostModel.default()
    calibrated = replace(default, fork_base_ns=base, fork_fd_ns=per_fd,
                         source=f"fork_fds: fork_base_ns and fork_fd_ns fitted on 0-{max(CALIBRATION)} descriptors")
    predicted, copied = _simulated_fork_ns(measured_fds, calibrated)
    default_ns, _ = _simulated_fork_ns(measured_fds, default)
    measured = float(m.loc[measured_fds, "fork_cpu_ns"])
    return {
        "fds_measured": measured_fds,
        "fork_fds_copied": copied,
        "measured_fork_us": measured / 1e3,
        "measured_wall_us": float(m.loc[measured_fds, "fork_ns"]) / 1e3,
        "measured_base_us": float(m.loc[0, "fork_cpu_ns"]) / 1e3,
        "predicted_fork_us": predicted / 1e3,
        "default_model_fork_us": default_ns / 1e3,
        "err_pct": 100 * (predicted / measured - 1),
        "fitted_fork_fd_ns": per_fd,
        "fork_fd_ns_clamped": clamped,
        "in_sample": measured_fds <= max(CALIBRATION),
    }


def compare(df):
    out = df[~df.in_sample]
    row = (out if len(out) else df).sort_values("fds_measured").iloc[-1 if len(out) < 2 else
                                                                      int(np.argmin(abs(out.fds_measured - 10_000)))]
    return [
        versus(f"fork latency with {row.fds_measured:,} open descriptors",
               f"{row.measured_fork_us:,.0f} us measured here (CPU time; {row.measured_base_us:,.0f} us with none)",
               f"{row.predicted_fork_us:,.0f} us ({row.err_pct:+.0f} %)",
               "this host, os.fork of calibrate's minimal process",
               f"target: within 30 %; model calibrated on 0-{max(CALIBRATION):,} descriptors "
               f"(fork_fd_ns {row.fitted_fork_fd_ns:.0f}{', a negative fit made 0' if row.fork_fd_ns_clamped else ''}); "
               f"the built-in model says {row.default_model_fork_us:,.0f} us"),
        versus("fork's cost per open descriptor",
               f"{(row.measured_fork_us - row.measured_base_us) * 1e3 / row.fds_measured:.0f} ns "
               f"(measured: ({row.measured_fork_us:,.0f} - {row.measured_base_us:,.0f}) us / {row.fds_measured:,})",
               f"{row.fitted_fork_fd_ns:.0f} ns fitted; built-in fork_fd_ns {cb.CostModel.default().fork_fd_ns:.0f}",
               "this host", "dup_fd: copy the table, get_file on each description"),
    ]


def summary(df):
    cols = ["fds_measured", "measured_fork_us", "predicted_fork_us", "err_pct", "default_model_fork_us",
            "fitted_fork_fd_ns"]
    return df.sort_values("fds_measured")[cols].round(1)


def plot(df, png):
    d = df.sort_values("fds_measured")
    long = d.melt(id_vars=["fds_measured"], value_vars=["measured_fork_us", "predicted_fork_us",
                                                        "default_model_fork_us"],
                  var_name="series", value_name="fork_us")
    long["series"] = long.series.map({"measured_fork_us": "measured (this host)",
                                      "predicted_fork_us": "simulated, calibrated here",
                                      "default_model_fork_us": "simulated, built-in model"})
    return [lines(long, "fds_measured", "fork_us", png("latency"), hue="series",
                  title="fork latency against open descriptors", xlabel="open descriptors",
                  ylabel="fork (us, CPU time)",
                  note=f"Calibrated on 0-{max(CALIBRATION):,} descriptors; beyond that the simulation predicts.")]


if __name__ == "__main__":
    main(__name__)
