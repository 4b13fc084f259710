"""The old side of connection migration written independently, from
docs/protocol.md section 9: it starts a binary as the successor of this
process (the handshake variables, the SEQPACKET channel), reads its READY,
hands it connections in batches with any state blobs, and reads the
acknowledgements. For the tests of a successor's handling of what it is
given (tests/it-migrate.py for echo, tests/it-http-migrate.py for the HTTP
module), without a second generation of the real thing.
"""
import array
import os
import socket
import struct
import subprocess

from .runner import at_exit, fail


def batch(seq, states):
    """A batch message (docs/protocol.md 9.2) for len(states) fds."""
    body = b"".join(struct.pack("<I", len(st)) + st for st in states)
    return b"HMIG" + bytes([1, 1, 0, 0]) + struct.pack("<II", seq, len(states)) + body


class FakePredecessor:
    """Starts argv (a server taking LISTEN_FDS=1) as the generation after
    this process, on the listening socket `listener`, with migration
    negotiated (HANDOFF_CAPS ... migrate-1). log: a file object for its
    output. After start(), send() hands it connections and ack() reads the
    acknowledgement of a batch."""

    def __init__(self, argv, listener, log, env=None):
        self.me, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.me.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        os.dup2(listener.fileno(), 100)
        os.dup2(child.fileno(), 101)
        e = dict(os.environ if env is None else env, LISTEN_FDS="1", HANDOFF_READY_FD="4",
                 HANDOFF_GENERATION="2", HANDOFF_PARENT_PID=str(os.getpid()),
                 HANDOFF_CAPS="%d,ready-lines,migrate-1" % os.getpid())
        # bash places the fds at 3 and 4 and sets LISTEN_PID to its own
        # pid, which the server keeps (exec); its parent is this process.
        self.p = subprocess.Popen(["bash", "-c", 'exec 3<&100 4<&101 100<&- 101<&-; '
                                   'LISTEN_PID=$$ exec "$0" "$@"'] + list(argv),
                                  env=e, pass_fds=(100, 101), stdout=log, stderr=log)
        os.close(100)
        os.close(101)
        child.close()
        at_exit(self.kill)
        self.me.settimeout(20)

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()

    def ready(self):
        """Reads the successor's READY message; returns (message, the
        kernel-verified pids that sent it)."""
        msg, anc, _, _ = self.me.recvmsg(256, socket.CMSG_SPACE(12))
        pids = [struct.unpack("<iII", d)[0] for lvl, typ, d in anc
                if lvl == socket.SOL_SOCKET and typ == socket.SCM_CREDENTIALS]
        if msg != b"READY=1\nADOPT=1" or pids != [self.p.pid]:
            fail("unexpected handshake %r from %s" % (msg, pids))
        return msg, pids

    def send(self, seq, states, fds):
        """Hands fds (one state blob each) over in one batch."""
        self.me.sendmsg([batch(seq, states)],
                        [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])

    def ack(self):
        """(seq, count, received, adopted bitmap) of the next
        acknowledgement, or None when the channel closed."""
        data, _, _, _ = self.me.recvmsg(256, socket.CMSG_SPACE(12))
        if not data:
            return None
        seq, count = struct.unpack("<II", data[8:16])
        received = struct.unpack("<I", data[16:20])[0]
        return seq, count, received, data[20:]
