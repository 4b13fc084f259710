/*
 * shared/trace.h - measurement-only timestamps of an upgrade's steps.
 *
 * Built with `cmake -DHANDOFF_TRACE=ON` (never in a release), each
 * handoff__trace("step") appends "pid step ns" (CLOCK_MONOTONIC) to the
 * file named by $HFTRACE_FILE, if set; bench/upgrade-latency.py
 * --breakdown reads them. Without the option the calls compile to nothing.
 * Not async-signal-safe: never call it between fork and exec.
 */
#ifndef HANDOFF_SHARED_TRACE_H
#define HANDOFF_SHARED_TRACE_H

#ifdef HANDOFF_TRACE
void handoff__trace(const char *step);
#else
#define handoff__trace(step) ((void)0)
#endif

#endif
