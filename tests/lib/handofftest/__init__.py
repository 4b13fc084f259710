"""handofftest: the one copy of the helpers of handoff's integration
scripts (tests/it-*.py), scripts/soak.py and bench/.

    import os, sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
    import handofftest as T

Modules: proc (processes, pid files, ports; no test failures), runner
(cases, assertions, the per-case directory and cleanups, `--list` for
CMake), echo (examples/echo and its clients), http (HTTP servers and a
byte-exact client), supervisor (`handoff run`), wrk (the load generator),
load (a probe, slow requests and wrk in the background, for servers the
tests do not control: `from handofftest.load import Probe`), servers
(unmodified Debian servers configured for tests/it-preload-servers.py and
bench/preload-servers.py: `from handofftest import servers`), conns (one
message on each of many idle connections at once, answers checked: the
migration tests and bench/soak-migrate.py). A script
imports the helpers; no script imports another script.
"""
from . import wrk  # T.wrk.run, T.wrk.start, T.wrk.parse
from .proc import (alive, children, children_states, descendants, fd_count, fd_targets,
                   free_port, kill_pids, poll_until, port_free, port_open, private_bytes,
                   proc_stat, proc_state, raise_nofile, read_pid, rss_kb, sanitizer_of, zombies_under)
from .runner import (SKIP, Fail, Skip, at_exit, case, check, ctx, fail, log, main,
                     need_root, need_tools, skip, wait_until)

__all__ = [
    "wrk",
    "alive", "children", "children_states", "descendants", "fd_count", "fd_targets",
    "free_port", "kill_pids", "poll_until", "port_free", "port_open", "private_bytes",
    "proc_stat",
    "proc_state", "raise_nofile", "read_pid", "rss_kb", "sanitizer_of", "zombies_under",
    "SKIP", "Fail", "Skip", "at_exit", "case", "check", "ctx", "fail", "log", "main",
    "need_root", "need_tools", "skip", "wait_until",
]
