/*
 * h2.h - HTTP/2 on a connection (internal to libhandoff-http; RFC 9113,
 * through libnghttp2): a protocol (struct hs_proto) like HTTP/1.1's.
 *
 * Every connection starts as HTTP/1.1 (h1.c), which hands it over here
 * (hs_h2_start()) when the TLS handshake negotiated "h2" by ALPN, or on an
 * h2c listener when the client opened with the HTTP/2 preface. From then
 * on its handle's callbacks are hs_h2_proto's. Everything runs on the
 * connection's worker thread; responses reach it as for HTTP/1.1
 * (response.c), with hs_proto.changed_locked naming the stream.
 */
#ifndef HANDOFF_HTTP_H2_H
#define HANDOFF_HTTP_H2_H

#include <stddef.h>

struct hs_conn;
struct hs_worker;

/* The client preface (RFC 9113 section 3.4). */
#define HS_H2_PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define HS_H2_PREFACE_LEN 24

/* The HTTP/2 protocol. */
extern const struct hs_proto hs_h2_proto;

/* Turns the open connection c into an HTTP/2 one and feeds it the len
 * bytes already read (the preface and what followed on an h2c listener;
 * none after ALPN), which may be in the old protocol's buffer: they are
 * copied before that protocol's state is released (hs_proto.release).
 * Returns 0, or -1 when c has been closed (out of memory, a bad
 * preface). */
int hs_h2_start(struct hs_conn *c, const char *pre, size_t len);

/* The worker starts draining: each of its HTTP/2 connections sends the
 * GOAWAY notice and a PING (RFC 9113 6.8), then the final GOAWAY. */
void hs_h2_drain_worker(struct hs_worker *w);

/* Frees w's HTTP/2 state (after its connections are destroyed). */
void hs_h2_worker_free(struct hs_worker *w);

#endif
