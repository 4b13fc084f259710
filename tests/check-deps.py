#!/usr/bin/env python3
"""Shows which source file calls which, from the object files, and fails
if two files depend on each other, directly or through others (a cycle).

  check-deps.py [--dot] OBJECT.o...

An edge A -> B means A.o references a global symbol that B.o defines
(nm: undefined in A, defined in B). Files are named by their object's
basename without ".c.o"/".o". Prints the files layer by layer, lowest
first (a file uses only files of lower layers), then any cycle.
Exit 0 without cycles, 1 with. Needs nm (binutils).
"""
import os
import subprocess
import sys


def symbols(obj):
    out = subprocess.run(["nm", "-P", obj], check=True, capture_output=True, text=True).stdout
    defined, undefined = set(), set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        name, kind = parts[0], parts[1]
        if kind == "U":
            undefined.add(name)
        elif kind in "TDBRGSVW" and kind.isupper():
            defined.add(name)
    return defined, undefined


def name_of(obj):
    base = os.path.basename(obj)
    for suffix in (".c.o", ".o"):
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base


def sccs(graph):
    """Tarjan's strongly connected components."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main():
    args = sys.argv[1:]
    dot = "--dot" in args
    objs = [a for a in args if a != "--dot"]
    if not objs:
        print(__doc__)
        return 2
    owner, refs = {}, {}
    names = [name_of(o) for o in objs]
    for o in objs:
        d, u = symbols(o)
        n = name_of(o)
        if names.count(n) > 1:
            # Two files of that name (src/notify.c, src/shared/notify.c):
            # prefix the directory, "shared/notify".
            parts = os.path.dirname(os.path.abspath(o)).split(os.sep)
            tgt = [p for p in parts if p.endswith(".dir")]
            src = parts[parts.index("CMakeFiles") - 1] if "CMakeFiles" in parts else (
                tgt[-1][:-4] if tgt else os.path.basename(os.path.dirname(o)))
            n = "%s/%s" % (src, n)
        refs[n] = u
        for s in d:
            owner[s] = n
    graph = {n: set() for n in refs}
    for n, u in refs.items():
        for s in u:
            if s in owner and owner[s] != n:
                graph[n].add(owner[s])
    if dot:
        print("digraph deps {")
        for a in sorted(graph):
            for b in sorted(graph[a]):
                print('  "%s" -> "%s";' % (a, b))
        print("}")
        return 0
    cycles = [c for c in sccs(graph) if len(c) > 1]
    # Layers: a file's layer is one more than the highest layer it uses.
    layer = {}

    def depth(v, seen=()):
        if v in layer:
            return layer[v]
        if v in seen:
            return 0
        layer[v] = 1 + max((depth(w, seen + (v,)) for w in graph[v]), default=-1)
        return layer[v]

    for v in graph:
        depth(v)
    for lv in range(max(layer.values(), default=-1) + 1):
        files = sorted(v for v in graph if layer[v] == lv)
        print("layer %d: %s" % (lv, " ".join(
            "%s(-> %s)" % (f, ",".join(sorted(graph[f]))) if graph[f] else f for f in files)))
    for c in cycles:
        print("CYCLE: %s" % " <-> ".join(c))
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main())
