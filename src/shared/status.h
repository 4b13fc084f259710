/*
 * shared/status.h - signal names and the one wording of a wait status, so
 * that the library and the handoff command describe a process's end the
 * same way ("exited with status 1", "was killed by SIGSEGV (core dumped)").
 */
#ifndef HANDOFF_SHARED_STATUS_H
#define HANDOFF_SHARED_STATUS_H

#include <stddef.h>

/* The name of signo without "SIG" ("TERM" for 15, "RTMIN+2" for a
 * real-time signal), or NULL if it has none. Static storage.
 * Thread-safe and async-signal-safe: yes. */
const char *handoff__signal_abbrev(int signo);

/* "SIGTERM" for 15, "signal 70" for an unnamed number, into buf; returns
 * buf. Thread-safe: yes. */
const char *handoff__signal_name(int signo, char *buf, size_t len);

/* Parses "TERM", "SIGTERM", "term", "RTMIN+2" or "15"; -1 if unknown, out
 * of 1..64, or one of glibc's reserved 32 and 33. Thread-safe: yes. */
int handoff__signal_parse(const char *s);

/* Describes a waitpid() status: "exited with status N", "was killed by
 * SIGNAME[ (core dumped)]", "ended with status 0xN". Returns buf.
 * Thread-safe: yes. */
const char *handoff__wait_status(int status, char *buf, size_t len);

#endif
