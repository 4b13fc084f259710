/*
 * tls.h - TLS for libhandoff-http with OpenSSL 3 (internal): one SSL_CTX
 * per TLS listener, one SSL per connection, all non-blocking.
 *
 * OpenSSL's error queue is per thread and SSL_get_error() looks at it, so
 * every failure path empties it: an error on one connection must never
 * leak into the result of another on the same worker.
 */
#ifndef HANDOFF_HTTP_TLS_H
#define HANDOFF_HTTP_TLS_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>

/* A server context for the PEM certificate chain and key (read now).
 * Returns 0 with *out set, or -ENOENT/-EACCES (a file cannot be read),
 * -EINVAL (a file does not load, or they do not match), -ENOMEM; errbuf
 * receives the reason. ALPN offers "h2" before "http/1.1" when http2 is
 * set; a client that offers neither gets no_application_protocol. TLS 1.2
 * is limited to forward-secret AEAD suites. */
int hs_tls_ctx_new(const char *cert_file, const char *key_file, bool http2, SSL_CTX **out,
                   char *errbuf, size_t errlen);

/* Whether ALPN chose "h2" on ssl (after the handshake). */
bool hs_tls_alpn_h2(const SSL *ssl);

/* A server-side SSL for the socket fd, or NULL (out of memory). */
SSL *hs_tls_new(SSL_CTX *ctx, int fd);

/* One step of the handshake. Returns 1 when done, 0 to wait for the
 * socket (*want_write: for writability), -1 on failure. */
int hs_tls_handshake(SSL *ssl, bool *want_write);

/* Returns bytes read, 0 to wait (*want_write: an SSL_read that needs the
 * socket writable), -1 at the end of input, -2 on error. */
long hs_tls_read(SSL *ssl, char *buf, size_t len, bool *want_write);

/* Returns bytes written, 0 to wait, -1 on error. */
long hs_tls_write(SSL *ssl, const char *buf, size_t len);

/* Sends close_notify (best effort; the socket is shut right after). */
void hs_tls_shutdown(SSL *ssl);

#endif
