/*
 * tls.c - TLS with OpenSSL 3 (see tls.h): the certificate and key are
 * read when a listener is added, so a restart picks up rotated files.
 * Idle connections keep no record buffers (SSL_MODE_RELEASE_BUFFERS).
 */
#include "tls.h"

#include <errno.h>
#include <limits.h>
#include <openssl/err.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Our protocols in order of preference (ALPN wire format). */
static const unsigned char alpn_h2[] = "\x02h2\x08http/1.1";
static const unsigned char alpn_http11[] = "\x08http/1.1";

/* arg is NULL, or alpn_h2 when the server speaks HTTP/2. */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen,
                       /* cppcheck-suppress constParameter ; OpenSSL's callback type */
                       void *arg)
{
    (void)ssl;
    bool h2 = arg != NULL;
    const unsigned char *ours = h2 ? alpn_h2 : alpn_http11;
    unsigned ourlen = h2 ? sizeof alpn_h2 - 1 : sizeof alpn_http11 - 1;
    unsigned char *sel = NULL;
    /* The first of ours that the client offers (server preference). */
    if (SSL_select_next_proto(&sel, outlen, ours, ourlen, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL; /* no_application_protocol, RFC 7301 3.2 */
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

int hs_tls_ctx_new(const char *cert_file, const char *key_file, bool http2, SSL_CTX **out,
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
    /* TLS 1.2: forward-secret AEAD suites only (RFC 9113 9.2.2 forbids the
     * others for HTTP/2; TLS scanners flag CBC). TLS 1.3 suites are all
     * AEAD. */
    (void)SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20");
    static const unsigned char sid[] = "handoff-http";
    (void)SSL_CTX_set_session_id_context(ctx, sid, sizeof sid - 1);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1)
        return tls_fail(ctx, -EINVAL, "bad certificate", cert_file, errbuf, errlen);
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1)
        return tls_fail(ctx, -EINVAL, "bad private key", key_file, errbuf, errlen);
    if (SSL_CTX_check_private_key(ctx) != 1)
        return tls_fail(ctx, -EINVAL, "key does not match certificate", key_file, errbuf,
                        errlen);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, http2 ? (void *)alpn_h2 : NULL);
    ERR_clear_error();
    *out = ctx;
    return 0;
}

bool hs_tls_alpn_h2(const SSL *ssl)
{
    const unsigned char *p = NULL;
    unsigned len = 0;
    SSL_get0_alpn_selected(ssl, &p, &len);
    return len == 2 && memcmp(p, "h2", 2) == 0;
}

SSL *hs_tls_new(SSL_CTX *ctx, int fd)
{
    SSL *ssl = SSL_new(ctx);
    if (!ssl || SSL_set_fd(ssl, fd) != 1) {
        SSL_free(ssl);
        ERR_clear_error();
        return NULL;
    }
    SSL_set_accept_state(ssl);
    return ssl;
}

int hs_tls_handshake(SSL *ssl, bool *want_write)
{
    *want_write = false;
    int r = SSL_do_handshake(ssl);
    if (r == 1)
        return 1;
    switch (SSL_get_error(ssl, r)) {
    case SSL_ERROR_WANT_READ:
        return 0;
    case SSL_ERROR_WANT_WRITE:
        *want_write = true;
        return 0;
    default:
        ERR_clear_error();
        return -1;
    }
}

long hs_tls_read(SSL *ssl, char *buf, size_t len, bool *want_write)
{
    *want_write = false;
    int n = SSL_read(ssl, buf, len > INT_MAX ? INT_MAX : (int)len);
    if (n > 0)
        return n;
    switch (SSL_get_error(ssl, n)) {
    case SSL_ERROR_WANT_READ:
        return 0;
    case SSL_ERROR_WANT_WRITE:
        *want_write = true;
        return 0;
    case SSL_ERROR_ZERO_RETURN:
        return -1;
    default:
        ERR_clear_error();
        return -2;
    }
}

long hs_tls_write(SSL *ssl, const char *buf, size_t len)
{
    int n = SSL_write(ssl, buf, len > INT_MAX ? INT_MAX : (int)len);
    if (n > 0)
        return n;
    switch (SSL_get_error(ssl, n)) {
    case SSL_ERROR_WANT_WRITE:
    case SSL_ERROR_WANT_READ:
        return 0;
    default:
        ERR_clear_error();
        return -1;
    }
}

void hs_tls_shutdown(SSL *ssl)
{
    (void)SSL_shutdown(ssl);
    ERR_clear_error();
}
