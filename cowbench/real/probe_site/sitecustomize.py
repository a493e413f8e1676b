"""Started by `cowbench trace --probe AFTER -- python3 ...`: fork a probe (cowbench.real.probe)
AFTER seconds after the interpreter starts, from a daemon timer thread. Nothing happens unless
COWBENCH_PROBE_AFTER is set. probe.py is loaded by path: the traced program imports nothing of
cowbench (nor NumPy nor Numba) and needs none of it installed."""
import os

_after = os.environ.get("COWBENCH_PROBE_AFTER")
if _after:
    import importlib.util
    import threading

    _path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "probe.py")
    _spec = importlib.util.spec_from_file_location("_cowbench_probe", _path)
    _probe = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_probe)
    _t = threading.Timer(float(_after), _probe.probe_fork)
    _t.daemon = True
    _t.start()
