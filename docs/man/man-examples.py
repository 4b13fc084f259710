#!/usr/bin/env python3
"""Keeps the EXAMPLE section of each man page equal to its C file.

The EXAMPLE of docs/man/man3/PAGE.3 is the first .EX/.EE block after
".SH EXAMPLE"; its source of truth is docs/man/examples/PAGE.c, which CI
compiles (docs/man/CMakeLists.txt). The block holds the file escaped for
roff: backslash as \\e, '-' as \\-, quotes and accents as \\(aq \\(ga
\\(ha \\(ti, and \\& before a leading '.'.

  man-examples.py check  [--headers H...]   exit 1 on any mismatch
  man-examples.py update                    rewrite the blocks from the .c files

check also verifies the .so links (each names an existing page, and every
name in a page's NAME section has a page or a link) and, with --headers,
that every function a header exports (HANDOFF_EXPORT) has a page or link.
Python 3 standard library only.
"""
import argparse
import difflib
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
MAN3 = os.path.join(HERE, "man3")
EXAMPLES = os.path.join(HERE, "examples")

ESC = {"\\": "\\e", "-": "\\-", "'": "\\(aq", "`": "\\(ga", "^": "\\(ha", "~": "\\(ti"}
UNESC = re.compile(r"\\(e|-|&|\(aq|\(ga|\(ha|\(ti)")
UNESC_MAP = {"e": "\\", "-": "-", "&": "", "(aq": "'", "(ga": "`", "(ha": "^", "(ti": "~"}


def encode(src):
    out = []
    for line in src.rstrip("\n").split("\n"):
        enc = "".join(ESC.get(ch, ch) for ch in line)
        if enc.startswith("."):
            enc = "\\&" + enc
        out.append(enc)
    return out


def decode(lines):
    return "\n".join(UNESC.sub(lambda m: UNESC_MAP[m.group(1)], l) for l in lines) + "\n"


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def example_block(text):
    """Returns (start, end) line indexes of the EXAMPLE's .EX body."""
    lines = text.split("\n")
    in_example = False
    start = None
    for i, l in enumerate(lines):
        if l.startswith(".SH"):
            if in_example and start is None:
                break
            in_example = l.split(None, 1)[1:] == ["EXAMPLE"]
        elif in_example and l == ".EX" and start is None:
            start = i + 1
        elif start is not None and l == ".EE":
            return lines, start, i
    return lines, None, None


def pages():
    out = []
    for name in sorted(os.listdir(MAN3)):
        if name.endswith(".3"):
            text = read(os.path.join(MAN3, name))
            if not text.startswith(".so "):
                out.append((name[:-2], text))
    return out


def names_of(text):
    """The names in a page's NAME section (before the \\- )."""
    m = re.search(r"^\.SH NAME\n(.*?)^\.SH", text, re.M | re.S)
    if not m:
        return []
    head = m.group(1).replace("\n", " ").split("\\-")[0]
    return [n.strip().replace("\\", "") for n in head.split(",") if n.strip()]


def check(headers):
    bad = []
    for page, text in pages():
        src_path = os.path.join(EXAMPLES, page + ".c")
        lines, a, b = example_block(text)
        if a is None:
            bad.append("%s.3: no .SH EXAMPLE with an .EX/.EE block" % page)
            continue
        if not os.path.exists(src_path):
            bad.append("%s.3: its example file %s is missing" % (page, src_path))
            continue
        got, want = decode(lines[a:b]), read(src_path)
        if got != want:
            diff = "".join(difflib.unified_diff(want.splitlines(True), got.splitlines(True),
                                                src_path, page + ".3 EXAMPLE"))
            bad.append("%s.3: EXAMPLE differs from %s (run man-examples.py update):\n%s"
                       % (page, src_path, diff))
        for n in names_of(text):
            if not os.path.exists(os.path.join(MAN3, n + ".3")):
                bad.append("%s.3: NAME lists %s, which has no page or .so link" % (page, n))
    for name in sorted(os.listdir(MAN3)):
        if not name.endswith(".3"):
            continue
        text = read(os.path.join(MAN3, name))
        if text.startswith(".so "):
            target = text.split()[1]
            tpath = os.path.join(HERE, target)
            if not os.path.exists(tpath) or read(tpath).startswith(".so "):
                bad.append("%s: .so target %s is not a page" % (name, target))
            elif name[:-2] not in names_of(read(tpath)):
                bad.append("%s: %s does not list %s in NAME" % (name, target, name[:-2]))
    for hdr in headers:
        for fn in re.findall(r"HANDOFF_EXPORT[^;{]*?\b(handoff_\w+)\s*\(", read(hdr), re.S):
            if not os.path.exists(os.path.join(MAN3, fn + ".3")):
                bad.append("%s: %s() has no man page or .so link" % (hdr, fn))
    for b in bad:
        print(b)
    print("man-examples: %d pages checked, %d problems" % (len(pages()), len(bad)))
    return 1 if bad else 0


def update():
    for page, text in pages():
        src_path = os.path.join(EXAMPLES, page + ".c")
        lines, a, b = example_block(text)
        if a is None or not os.path.exists(src_path):
            print("skipped %s.3 (no EXAMPLE block or no %s)" % (page, src_path))
            continue
        new = lines[:a] + encode(read(src_path)) + lines[b:]
        if new != lines:
            with open(os.path.join(MAN3, page + ".3"), "w", encoding="utf-8") as f:
                f.write("\n".join(new))
            print("updated %s.3" % page)
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["check", "update"])
    ap.add_argument("--headers", nargs="*", default=[])
    a = ap.parse_args()
    return check(a.headers) if a.mode == "check" else update()


if __name__ == "__main__":
    sys.exit(main())
