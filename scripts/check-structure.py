#!/usr/bin/env python3
"""check-structure: which source file uses which, layer by layer; cycles
between files; files too long to read.

  scripts/check-structure.py [--build DIR] [--dot] [--max-lines N]
  scripts/check-structure.py --objects OBJECT.o...   (one graph, no size rule)

1. Dependencies. A -> B when A's object file references a global symbol
   that B's defines (nm: undefined in A, defined in B): a call or a use of
   B's data. Within each directory (src, src/shared, src/http, tools) the
   files are printed layer by layer, lowest first: a file uses only files
   of lower layers. Files that use each other, directly or through others,
   form a CYCLE. The directories get the same treatment (tools -> src/shared
   is fine; src/shared -> tools would be a cycle).
   Not seen: static inline functions and macros of a header, and calls
   through function pointers (a callback is not a dependency).
2. Size. A .c or .h file of src/, tools/, include/ or examples/ over
   --max-lines (600) lines must say why near its top (first 80 lines), in
   words containing "over 600 lines", e.g.
   /* This file is over 600 lines: the parser's states read best together. */

DIR is a CMake build directory with compile_commands.json (scripts/lint.sh
passes build-lint); by default build-structure, configured and built here
when needed. Exit status: 0 clean, 1 a cycle or an unexplained long file,
2 usage or build error. Needs nm (binutils).
"""
import argparse
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIRS = ("src", "src/shared", "src/http", "tools")
SIZE_DIRS = ("src", "tools", "include", "examples")
REASON = re.compile(r"over %d lines")


def symbols(obj):
    """(defined, undefined) global symbols of an object file."""
    out = subprocess.run(["nm", "-P", obj], check=True, capture_output=True, text=True).stdout
    defined, undefined = set(), set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        name, kind = parts[0], parts[1]
        if kind == "U":
            undefined.add(name)
        elif kind in "TDBRGSVWC":
            defined.add(name)
    return defined, undefined


def graph_of(nodes):
    """nodes: {name: object path} -> {name: set of names it uses}."""
    owner, refs = {}, {}
    for n, obj in nodes.items():
        d, u = symbols(obj)
        refs[n] = u
        for s in d:
            owner.setdefault(s, n)
    return {n: {owner[s] for s in u if s in owner and owner[s] != n} for n, u in refs.items()}


def sccs(graph):
    """Strongly connected components (Tarjan, iterative)."""
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                out.append(sorted(comp))
    return out


def layers(graph):
    """[(layer, [files])] on the graph with each cycle collapsed: a file's
    layer is one more than the highest layer it uses outside its cycle."""
    comp_of = {}
    for c in sccs(graph):
        for v in c:
            comp_of[v] = tuple(c)
    memo = {}

    def depth(c):
        if c not in memo:
            memo[c] = 0  # guards the recursion; the condensation has no cycle
            uses = {comp_of[w] for v in c for w in graph[v]} - {c}
            memo[c] = 1 + max((depth(u) for u in uses), default=-1)
        return memo[c]

    by = {}
    for c in set(comp_of.values()):
        by.setdefault(depth(c), []).extend(c)
    return [(lv, sorted(by[lv])) for lv in sorted(by)]


def report(title, graph, short=lambda n: n, what="files"):
    """Prints the layers and cycles of one graph; returns the cycles."""
    cycles = [c for c in sccs(graph) if len(c) > 1]
    print("== %s: %d %s, %s" % (title, len(graph), what,
                                   "%d cycle(s)" % len(cycles) if cycles else "no cycle"))
    for lv, files in layers(graph):
        print("  layer %d: %s" % (lv, "  ".join(
            "%s (-> %s)" % (short(f), ", ".join(short(g) for g in sorted(graph[f])))
            if graph[f] else short(f) for f in files)))
    for c in cycles:
        inner = {v: sorted(graph[v] & set(c)) for v in c}
        print("  CYCLE: %s" % "; ".join("%s -> %s" % (short(v), ", ".join(short(w) for w in inner[v]))
                                        for v in c))
    return cycles


def dot(graph):
    print("digraph deps {")
    for a in sorted(graph):
        for b in sorted(graph[a]):
            print('  "%s" -> "%s";' % (a, b))
    print("}")


def objects_from_build(build):
    """{source path relative to ROOT: object path} from compile_commands.json,
    for the sources of DIRS (one object each; tests and fuzz targets that
    compile a source again are skipped)."""
    cc = os.path.join(build, "compile_commands.json")
    with open(cc) as f:
        entries = json.load(f)
    out = {}
    for e in entries:
        src = os.path.relpath(os.path.join(e["directory"], e["file"]), ROOT)
        if os.path.dirname(src) not in DIRS or src in out:
            continue
        obj = e.get("output")
        if not obj:
            m = re.search(r"\s-o\s+(\S+)", e.get("command", ""))
            obj = m.group(1) if m else None
        if not obj:
            continue
        obj = os.path.join(e["directory"], obj)
        if "/tests/" in obj or "/fuzz/" in obj:
            continue
        out[src] = obj
    return out


def ensure_build(build):
    cc = os.path.join(build, "compile_commands.json")
    if not os.path.exists(cc):
        r = subprocess.run(["cmake", "-S", ROOT, "-B", build, "-G", "Ninja",
                            "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON", "-DBUILD_TESTING=OFF"],
                           stdout=subprocess.DEVNULL)
        if r.returncode:
            sys.exit(2)
    if subprocess.run(["cmake", "--build", build], stdout=subprocess.DEVNULL).returncode:
        sys.exit(2)


def long_files(max_lines):
    """[(path, lines)] of files over max_lines without a stated reason."""
    bad = []
    reason = re.compile(REASON.pattern % max_lines)
    for d in SIZE_DIRS:
        for dirpath, _, files in os.walk(os.path.join(ROOT, d)):
            for f in sorted(files):
                if not f.endswith((".c", ".h")):
                    continue
                path = os.path.join(dirpath, f)
                with open(path, errors="replace") as fh:
                    lines = fh.read().splitlines()
                if len(lines) > max_lines and not any(reason.search(ln) for ln in lines[:80]):
                    bad.append((os.path.relpath(path, ROOT), len(lines)))
    return sorted(bad, key=lambda x: -x[1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--build", default=os.path.join(ROOT, "build-structure"))
    ap.add_argument("--objects", nargs="+", help="check these object files as one graph")
    ap.add_argument("--dot", action="store_true", help="print the file graph for graphviz")
    ap.add_argument("--max-lines", type=int, default=600)
    a = ap.parse_args()

    if a.objects:
        def base(o):
            b = os.path.basename(o)
            for suffix in (".c.o", ".o"):
                if b.endswith(suffix):
                    return b[:-len(suffix)]
            return b

        def where(o):  # build/src/shared/CMakeFiles/x.dir/notify.c.o -> "shared"
            parts = os.path.dirname(os.path.abspath(o)).split(os.sep)
            return parts[parts.index("CMakeFiles") - 1] if "CMakeFiles" in parts else parts[-1]

        bases = [base(o) for o in a.objects]
        names = {}
        for o, b in zip(a.objects, bases):
            # two files of one name (src/notify.c, src/shared/notify.c): "shared/notify"
            names[where(o) + "/" + b if bases.count(b) > 1 else b] = o
        g = graph_of(names)
        if a.dot:
            dot(g)
            return 0
        return 1 if report("objects", g) else 0

    ensure_build(a.build)
    objs = objects_from_build(a.build)
    if not objs:
        print("check-structure: no object files for %s in %s" % (", ".join(DIRS), a.build))
        return 2
    nodes = {src[:-2]: obj for src, obj in objs.items()}  # "src/http/conn"
    g = graph_of(nodes)
    if a.dot:
        dot(g)
        return 0
    problems = 0
    for d in DIRS:
        sub = {n: {w for w in g[n] if os.path.dirname(w) == d} for n in g if os.path.dirname(n) == d}
        if sub:
            problems += len(report(d + "/", sub, short=os.path.basename))
    dirs = {}
    for n, uses in g.items():
        dirs.setdefault(os.path.dirname(n), set()).update(
            os.path.dirname(w) for w in uses if os.path.dirname(w) != os.path.dirname(n))
    dcycles = report("directories", dirs, what="directories")
    for c in dcycles:  # the file edges that make a directory cycle
        print("    by: %s" % ", ".join(
            "%s -> %s" % (n, w) for n in sorted(g) for w in sorted(g[n])
            if os.path.dirname(n) in c and os.path.dirname(w) in c
            and os.path.dirname(n) != os.path.dirname(w)))
    problems += len(dcycles)
    long = long_files(a.max_lines)
    print("== file sizes: %d file(s) over %d lines without a reason at the top"
          % (len(long), a.max_lines))
    for path, n in long:
        print("  LONG: %s: %d lines" % (path, n))
    problems += len(long)
    print("check-structure: %s" % ("clean" if not problems else "%d problem(s)" % problems))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
