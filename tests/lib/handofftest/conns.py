"""Many idle connections asked at once: one message on each, every answer
read back through one selector. What the migration tests and
bench/soak-migrate.py check after each hand-over: the connection is still
open, nothing was waiting on it before the message (a duplicate), and the
answer is right."""
import re
import selectors
import time


def ask_each(conns, message, answer, timeout=30):
    """Sends message(i) on conns[i] (non-blocking sockets) and reads until
    answer(i, bytes so far) decides: None while incomplete, "" when right,
    else the problem. Returns [(index, problem)]; a connection with bytes
    waiting before the message, at EOF or silent until the timeout is a
    problem too."""
    sel = selectors.DefaultSelector()
    want, bad = {}, []
    for i, s in enumerate(conns):
        try:
            early = s.recv(1)
            bad.append((i, "closed by the server" if early == b"" else "unexpected %r" % early))
            continue
        except BlockingIOError:
            pass
        except OSError as e:
            bad.append((i, "error %s" % e))
            continue
        try:
            s.sendall(message(i))
        except OSError as e:
            bad.append((i, "send: %s" % e))
            continue
        want[s] = [i, b""]
        sel.register(s, selectors.EVENT_READ)
    end = time.monotonic() + timeout
    while want and time.monotonic() < end:
        for key, _ in sel.select(0.2):
            s = key.fileobj
            i, got = want[s]
            try:
                b = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError as e:
                b = None
                bad.append((i, "recv: %s" % e))
            if b:
                got += b
                want[s][1] = got
                verdict = answer(i, got)
                if verdict is None:
                    continue
                if verdict:
                    bad.append((i, verdict))
            elif b is not None:
                bad.append((i, "closed by the server"))
            sel.unregister(s)
            del want[s]
    for i, got in want.values():
        bad.append((i, "no answer (got %r)" % got[:80]))
    sel.close()
    return bad


def echo_answer(message):
    """An answer() for an echo server: the message itself, byte for byte."""
    def answer(i, got):
        msg = message(i)
        if len(got) < len(msg):
            return None
        return "" if got == msg else "echo %r != %r" % (got[:80], msg)
    return answer


def http_response(got):
    """(head in lower case, body) once got holds a whole HTTP response with
    a Content-Length, else None."""
    hend = got.find(b"\r\n\r\n")
    if hend < 0:
        return None
    head = got[:hend].lower()
    m = re.search(rb"content-length: *(\d+)", head)
    if not m or len(got) < hend + 4 + int(m.group(1)):
        return None
    return head, got[hend + 4:]
