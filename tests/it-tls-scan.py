#!/usr/bin/env python3
"""A TLS scanner run against hello's HTTPS listener with HTTP/2 (ALPN) on.

Issue 13's acceptance: the TLS side adds no finding to a TLS scanner run.
sslscan (Debian package sslscan, installed by scripts/deps.sh) scans
127.0.0.1 and writes XML; the case fails on any finding: SSLv2, SSLv3,
TLS 1.0 or 1.1 accepted; a cipher under 128 bits or a NULL, export, RC4,
DES/3DES or anonymous one; renegotiation supported (secure or not);
compression; Heartbleed. It also fails when the scan saw nothing (no
TLS 1.2, no cipher), so that a scan that could not connect never passes.
Without sslscan the case skips (77), saying so.

Usage: it-tls-scan.py --hello PATH [--against PORT] scan
  --against PORT  scan 127.0.0.1:PORT (a server you started) instead of
                  hello: how to see that the checks can fail, e.g. against
                  `openssl s_server -tls1_1 -cipher ALL:@SECLEVEL=0 ...`.
"""
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import handofftest as T  # noqa: E402
import handofftest.http  # noqa: E402,F401 (T.http.Server)
from handofftest import check, log  # noqa: E402
from handofftest.h2 import cert  # noqa: E402

ARGS = None  # --hello, --against (set by the runner)

OLD_PROTOCOLS = {("ssl", "2"), ("ssl", "3"), ("tls", "1.0"), ("tls", "1.1")}
# sslscan's own verdicts that are findings ("acceptable" and "strong" are not).
WEAK_STRENGTH = {"null", "anonymous", "weak", "medium"}
WEAK_NAME = re.compile(r"NULL|EXP|RC4|DES|ADH|AECDH|anon", re.I)


def scan(port):
    """sslscan's XML report of 127.0.0.1:port, parsed."""
    out = os.path.join(T.ctx.tmp, "sslscan-%d.xml" % port)
    r = subprocess.run(["sslscan", "--no-colour", "--xml=" + out, "127.0.0.1:%d" % port],
                       capture_output=True, text=True, timeout=60)
    with open(os.path.join(T.ctx.tmp, "sslscan-%d.log" % port), "w") as f:
        f.write(r.stdout + r.stderr)
    check(r.returncode == 0 and os.path.exists(out),
          "sslscan failed (%d):\n%s" % (r.returncode, (r.stdout + r.stderr)[-2000:]))
    return ET.parse(out).getroot()


def findings(doc):
    """The scan's findings (a list of sentences) and a one-line summary."""
    test = doc.find("ssltest")
    if test is None:
        return ["no <ssltest> in the report: the scan did not reach the server"], ""
    bad = []
    protos = {(p.get("type"), p.get("version")): p.get("enabled") == "1"
              for p in test.findall("protocol")}
    for key in sorted(OLD_PROTOCOLS):
        if key not in protos:
            bad.append("%s %s not tested" % key)
        elif protos[key]:
            bad.append("%s %s accepted" % key)
    if not protos.get(("tls", "1.2")):
        bad.append("TLS 1.2 not seen: the scan did not reach the server")
    ciphers = test.findall("cipher")
    if not ciphers:
        bad.append("no cipher accepted: the scan did not reach the server")
    for c in ciphers:
        name, bits, strength = c.get("cipher", ""), int(c.get("bits", "0")), c.get("strength", "")
        if bits < 128 or strength in WEAK_STRENGTH or WEAK_NAME.search(name):
            bad.append("weak cipher accepted: %s %s (%d bits, %s)"
                       % (c.get("sslversion"), name, bits, strength))
    reneg = test.find("renegotiation")
    if reneg is None:
        bad.append("renegotiation not tested")
    elif reneg.get("supported") == "1":
        bad.append("%s renegotiation supported"
                   % ("secure" if reneg.get("secure") == "1" else "insecure"))
    comp = test.find("compression")
    if comp is not None and comp.get("supported") == "1":
        bad.append("compression supported")
    hb = test.findall("heartbleed")
    if not hb:
        bad.append("Heartbleed not tested")
    bad += ["vulnerable to Heartbleed over %s" % h.get("sslversion")
            for h in hb if h.get("vulnerable") == "1"]
    summary = "protocols %s; %d ciphers (%s); renegotiation %s; compression %s; heartbleed %s" % (
        " ".join("%s%s" % (t, v) for (t, v), on in sorted(protos.items()) if on),
        len(ciphers), ", ".join(sorted({c.get("cipher") for c in ciphers})[:12]),
        "-" if reneg is None else "supported=%s secure=%s" % (reneg.get("supported"),
                                                               reneg.get("secure")),
        # Debian's sslscan links an OpenSSL without zlib: it cannot offer
        # compression and reports nothing (hello sets SSL_OP_NO_COMPRESSION).
        "not testable by this sslscan" if comp is None else "supported=%s" % comp.get("supported"),
        ",".join("%s=%s" % (h.get("sslversion"), h.get("vulnerable")) for h in hb))
    return bad, summary


def case_scan():
    """hello --tls-cert/--tls-key --http2, with an RSA and then an EC
    certificate: sslscan finds nothing."""
    T.need_tools("sslscan", package="sslscan")
    if ARGS.against:
        targets = [("--against", ARGS.against)]
    else:
        targets = []
        for kind in ("rsa", "ec"):
            crt, key = cert(kind)
            srv = T.http.Server(binary=ARGS.hello, tls=(crt, key), extra=["--http2", "--threads", "1"])
            targets.append((kind, srv.port))
    failed = []
    for what, port in targets:
        bad, summary = findings(scan(port))
        log("%s: %s" % (what, summary))
        for b in bad:
            log("%s: FINDING: %s" % (what, b))
        failed += ["%s: %s" % (what, b) for b in bad]
    check(not failed, "sslscan findings:\n  " + "\n  ".join(failed))


def add_args(ap):
    ap.add_argument("--against", type=int, help="scan 127.0.0.1:PORT instead of hello")


if __name__ == "__main__":
    T.main(globals(), paths=["hello"], timeout=60, add_args=add_args)
