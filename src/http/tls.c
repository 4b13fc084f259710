/*
 * tls.c - TLS for the HTTP server with OpenSSL 3: one SSL_CTX per TLS
 * listener (certificate and key read when the listener is added, so a
 * restart picks up rotated files), one SSL per connection, non-blocking
 * handshake, reads and writes driven by the worker's epoll.
 *
 * OpenSSL's error queue is per thread and SSL_get_error() looks at it, so
 * every failure path empties it: an error on one connection must never
 * leak into the result of another on the same worker.
 */
#include "server.h"

#include <errno.h>
#include <limits.h>
#include <openssl/err.h>
#include <stdio.h>
#include <unistd.h>

static const unsigned char alpn_http11[] = "\x08http/1.1";

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    unsigned char *sel = NULL;
    if (SSL_select_next_proto(&sel, outlen, alpn_http11, sizeof alpn_http11 - 1, in,
                              inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK; /* no overlap: carry on without ALPN */
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

static int tls_fail(SSL_CTX *ctx, int r, const char *what, const char *path,
                    char *errbuf, size_t errlen)
{
    if (errbuf && errlen) {
        char reason[256] = "";
        unsigned long e = ERR_peek_last_error();
        if (e)
            ERR_error_string_n(e, reason, sizeof reason);
        snprintf(errbuf, errlen, "%s %s: %s", what, path ? path : "",
                 e ? reason : "failed");
    }
    ERR_clear_error();
    SSL_CTX_free(ctx);
    return r;
}

int hs_tls_ctx_new(const char *cert_file, const char *key_file, SSL_CTX **out,
                   char *errbuf, size_t errlen)
{
    if (access(cert_file, R_OK) < 0) {
        int r = -errno;
        return tls_fail(NULL, r, "cannot read certificate", cert_file, errbuf, errlen);
    }
    if (access(key_file, R_OK) < 0) {
        int r = -errno;
        return tls_fail(NULL, r, "cannot read key", key_file, errbuf, errlen);
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx)
        return tls_fail(NULL, -ENOMEM, "SSL_CTX_new", NULL, errbuf, errlen);
    (void)SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF |
                                 SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
    static const unsigned char sid[] = "handoff-http";
    (void)SSL_CTX_set_session_id_context(ctx, sid, sizeof sid - 1);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1)
        return tls_fail(ctx, -EINVAL, "bad certificate", cert_file, errbuf, errlen);
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1)
        return tls_fail(ctx, -EINVAL, "bad private key", key_file, errbuf, errlen);
    if (SSL_CTX_check_private_key(ctx) != 1)
        return tls_fail(ctx, -EINVAL, "key does not match certificate", key_file, errbuf,
                        errlen);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    ERR_clear_error();
    *out = ctx;
    return 0;
}

int hs_tls_conn_new(struct hs_conn *c, SSL_CTX *ctx)
{
    c->ssl = SSL_new(ctx);
    if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) {
        ERR_clear_error();
        return -ENOMEM;
    }
    SSL_set_accept_state(c->ssl);
    return 0;
}

/* Returns 1 when done, 0 to wait for the socket, -1 on failure. */
int hs_tls_handshake(struct hs_conn *c)
{
    c->tls_want_write = false;
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        c->read_more = true; /* the first request may have come with it */
        return 1;
    }
    switch (SSL_get_error(c->ssl, r)) {
    case SSL_ERROR_WANT_READ:
        return 0;
    case SSL_ERROR_WANT_WRITE:
        c->tls_want_write = true;
        return 0;
    default:
        ERR_clear_error();
        return -1;
    }
}

/* Returns bytes read, 0 to wait, -1 at the end of input, -2 on error. */
long hs_tls_read(struct hs_conn *c, char *buf, size_t len)
{
    c->tls_want_write = false;
    int n = SSL_read(c->ssl, buf, len > INT_MAX ? INT_MAX : (int)len);
    if (n > 0)
        return n;
    switch (SSL_get_error(c->ssl, n)) {
    case SSL_ERROR_WANT_READ:
        return 0;
    case SSL_ERROR_WANT_WRITE:
        c->tls_want_write = true;
        return 0;
    case SSL_ERROR_ZERO_RETURN:
        return -1;
    default:
        ERR_clear_error();
        return -2;
    }
}

/* Returns bytes written, 0 to wait, -1 on error. */
long hs_tls_write(struct hs_conn *c, const char *buf, size_t len)
{
    int n = SSL_write(c->ssl, buf, len > INT_MAX ? INT_MAX : (int)len);
    if (n > 0)
        return n;
    switch (SSL_get_error(c->ssl, n)) {
    case SSL_ERROR_WANT_WRITE:
    case SSL_ERROR_WANT_READ:
        return 0;
    default:
        ERR_clear_error();
        return -1;
    }
}

/* Sends close_notify (best effort; the socket is shut right after). */
void hs_tls_shutdown(struct hs_conn *c)
{
    (void)SSL_shutdown(c->ssl);
    ERR_clear_error();
}
