"""The case runner of the integration scripts (tests/it-*.py).

A script declares each case once, as a function named case_<name> (an
underscore in <name> becomes a dash), taking no argument or the case's
fresh temporary directory. Per-case ctest properties that differ from the
script's defaults are given with a decorator:

    @T.case(timeout=600, serial=True, root=True)
    def case_big_load(tmp): ...

and the script ends with

    if __name__ == "__main__":
        T.main(globals(), paths=["echo"], timeout=300)

`SCRIPT --list` prints one line per case: its name, then its ctest
properties as CMake arguments (TIMEOUT n, SKIP_RETURN_CODE 77, RUN_SERIAL
ON, LABELS script). tests/CMakeLists.txt (handoff_py_tests) reads that at
configure time, so adding a case is one edit: the function.

`SCRIPT --PATH-OPTION ... CASE [CASE ...]` runs cases (`all`: every case).
For each case the runner makes a fresh directory (the script's TMP global,
and the argument of a case that takes one), arms an alarm shortly before
the ctest timeout, runs the case, then the cleanups registered with
at_exit() (processes the helpers started), fails the case on a sanitizer
report in any *.log under the directory, prints the logs' tails on
failure, and removes the directory. The parsed options are the script's
ARGS global (and ctx.args). Exit status: 0 pass, 1 fail, 77 skip.
"""
import argparse
import inspect
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback

from . import proc

SKIP = 77
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                   "WARNING: ThreadSanitizer", "runtime error:")


class Fail(AssertionError):
    """A case failed: the message says what was seen."""


class Skip(Exception):
    """A case cannot run here (a tool or a privilege is missing)."""


class Context:
    """The running case: parsed options, its directory, its cleanups."""

    def __init__(self):
        self.args = None
        self.tmp = None
        self.case = None
        self.cleanups = []


ctx = Context()


def log(*a):
    print("[%s]" % time.strftime("%H:%M:%S"), *a, flush=True)


def fail(msg):
    raise Fail(msg)


def check(cond, msg):
    if not cond:
        raise Fail(msg)
    return cond


def skip(why):
    raise Skip(why)


def need_root(why="needs root"):
    if os.geteuid() != 0:
        skip(why)


def need_tools(*tools, package=None):
    """Skips the case unless every tool is on PATH."""
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        skip("%s not installed%s" % (", ".join(missing),
                                     " (Debian package %s)" % package if package else ""))


def wait_until(pred, timeout, what, interval=0.01):
    """pred()'s first true value within `timeout` seconds, else the case
    fails naming `what`."""
    v = proc.poll_until(pred, timeout, interval)
    if not v:
        fail("timed out after %.1fs waiting for %s" % (timeout, what))
    return v


def at_exit(fn):
    """Runs fn() when the current case ends, whatever happened (last
    registered, first run). Returns fn."""
    ctx.cleanups.append(fn)
    return fn


def case(name=None, timeout=None, serial=None, root=False):
    """Per-case properties: `timeout` (seconds, ctest TIMEOUT), `serial`
    (alone on the machine: ctest RUN_SERIAL), `root` (skipped, visibly,
    unless run as root), `name` (instead of the function's)."""
    def mark(fn):
        fn.handoff_case = {"name": name, "timeout": timeout, "serial": serial, "root": root}
        return fn
    return mark


def cases_of(g):
    """{name: function} of the case_* functions in a script's globals, in
    definition order."""
    out = {}
    for k, fn in list(g.items()):
        if k.startswith("case_") and callable(fn):
            props = getattr(fn, "handoff_case", {})
            out[props.get("name") or k[5:].replace("_", "-")] = fn
    return out


def _props(fn, timeout, serial, label):
    p = getattr(fn, "handoff_case", {})
    t = p.get("timeout") or timeout
    s = p.get("serial") if p.get("serial") is not None else serial
    out = ["TIMEOUT", str(t), "SKIP_RETURN_CODE", str(SKIP), "LABELS", label]
    if s:
        out += ["RUN_SERIAL", "ON"]
    return out, t


def _scan_logs(tmp, failed):
    """Sanitizer reports in tmp's *.log fail the case; on failure the logs'
    tails are printed. Returns True if a report was found."""
    found = False
    logs = []
    for d, _, files in os.walk(tmp):
        logs += [os.path.join(d, f) for f in sorted(files) if f.endswith(".log")]
    for path in logs:
        try:
            with open(path, "rb") as f:
                text = f.read().decode(errors="replace")
        except OSError:
            continue
        for mark in SANITIZER_MARKS:
            if mark in text:
                i = text.index(mark)
                log("FAIL: %s in %s:\n%s" % (mark, os.path.relpath(path, tmp),
                                             text[max(0, i - 200):i + 3000]))
                found = True
        if (failed or found) and text:
            log("---- %s (tail)\n%s" % (os.path.relpath(path, tmp), text[-3000:]))
    return found


def _alarm(*_):
    raise Fail("case timed out (the runner's alarm, before ctest's timeout)")


def run_case(g, name, fn, timeout, stem):
    """Runs one case; returns 0, 1 or SKIP."""
    ctx.case = name
    ctx.tmp = tempfile.mkdtemp(prefix="%s-%s-" % (stem, name))
    ctx.cleanups = []
    if "TMP" in g:
        g["TMP"] = ctx.tmp
    t0 = time.monotonic()
    rc = 0
    why = None
    log("== %s" % name)
    # Leave ctest's own timeout a margin for the cleanups below.
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(max(10, timeout - max(20, timeout // 10)))
    try:
        if getattr(fn, "handoff_case", {}).get("root"):
            need_root("needs root (run the suite as root to include it)")
        r = fn(ctx.tmp) if inspect.signature(fn).parameters else fn()
        rc = SKIP if r == SKIP else 0
    except Skip as e:
        why = str(e)
        rc = SKIP
    except SystemExit as e:
        # A case may still sys.exit(77) to skip.
        rc = SKIP if e.code == SKIP else (0 if e.code in (0, None) else 1)
    except AssertionError as e:
        log("FAIL %s: %s" % (name, e))
        rc = 1
    except Exception as e:  # noqa: BLE001 - an unexpected error fails the case
        traceback.print_exc()
        log("FAIL %s: %s: %s" % (name, type(e).__name__, e))
        rc = 1
    finally:
        signal.alarm(0)
    for fn_ in reversed(ctx.cleanups):
        try:
            fn_()
        except AssertionError as e:
            log("FAIL %s (cleanup): %s" % (name, e))
            rc = 1
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            log("FAIL %s (cleanup): %s: %s" % (name, type(e).__name__, e))
            rc = 1
    ctx.cleanups = []
    if _scan_logs(ctx.tmp, rc == 1):
        rc = 1
    shutil.rmtree(ctx.tmp, ignore_errors=True)
    if rc == 0:
        log("PASS %s (%.1fs)" % (name, time.monotonic() - t0))
    elif rc == SKIP:
        log("SKIP %s%s" % (name, ": " + why if why else ""))
    return rc


def main(g, paths=(), optional_paths=(), timeout=300, serial=False, setup=None, add_args=None):
    """A script's entry point. g: the script's globals(). paths: options
    naming files (--NAME PATH, made absolute; required, or not when listed
    in optional_paths). timeout/serial: the script's default ctest TIMEOUT
    and RUN_SERIAL. setup(args): called once before the cases.
    add_args(parser): further options."""
    cases = cases_of(g)
    script = os.path.basename(g.get("__file__") or sys.argv[0])
    stem = script[:-3] if script.endswith(".py") else script
    if sys.argv[1:] == ["--list"]:
        for name, fn in cases.items():
            print(" ".join([name] + _props(fn, timeout, serial, stem)[0]))
        sys.exit(0)
    ap = argparse.ArgumentParser(description=(g.get("__doc__") or "").split("\n\n")[0])
    for p in paths:
        ap.add_argument("--" + p, required=True)
    for p in optional_paths:
        ap.add_argument("--" + p)
    if add_args:
        add_args(ap)
    ap.add_argument("--list", action="store_true", help="print the cases and their ctest properties")
    ap.add_argument("case", nargs="+", choices=list(cases) + ["all"])
    args = ap.parse_args()
    for p in list(paths) + list(optional_paths):
        v = getattr(args, p)
        if v:
            setattr(args, p, os.path.abspath(v))
    ctx.args = args
    if "ARGS" in g:
        g["ARGS"] = args
    if setup:
        setup(args)
    names = list(cases) if "all" in args.case else args.case
    results = [run_case(g, n, cases[n], _props(cases[n], timeout, serial, stem)[1], stem)
               for n in names]
    if any(r == 1 for r in results):
        sys.exit(1)
    sys.exit(SKIP if results and all(r == SKIP for r in results) else 0)
