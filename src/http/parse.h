/*
 * parse.h - HTTP/1.1 request parser and chunked-body decoder (internal).
 *
 * Shaped after picohttpparser: it parses from (buf, len), allocates nothing,
 * and every output points into the caller's buffer. Strict RFC 9110/9112:
 * it rejects what a request smuggler could exploit (conflicting
 * Content-Length / Transfer-Encoding, duplicate Content-Length with
 * different values, obs-fold, bare CR, invalid token/field characters,
 * whitespace before the colon).
 */
#ifndef HANDOFF_HTTP_PARSE_H
#define HANDOFF_HTTP_PARSE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct hh_str {
    const char *p;
    size_t len;
} hh_str;

typedef struct hh_header {
    hh_str name;   /* as sent (case preserved); compare case-insensitively */
    hh_str value;  /* leading/trailing OWS removed */
} hh_header;

/* Body framing determined from the headers. */
enum hh_body_kind {
    HH_BODY_NONE = 0,     /* no body (no CL/TE, or Content-Length: 0) */
    HH_BODY_LENGTH = 1,   /* Content-Length bytes follow */
    HH_BODY_CHUNKED = 2   /* Transfer-Encoding: chunked */
};

typedef struct hh_request {
    hh_str method;
    hh_str target;        /* request-target as sent */
    hh_str path;          /* origin-form: target up to the first '?';
                             absolute-form: the path after the authority,
                             up to '?' (len 0 if empty: treat as "/");
                             asterisk-form (OPTIONS *): "*";
                             authority-form (CONNECT): len 0 */
    hh_str query;         /* after the first '?', without it; len 0 if none */
    int minor_version;    /* 0 or 1 (HTTP/1.x only) */
    hh_header *headers;   /* caller's array */
    size_t num_headers;
    /* Derived from the headers: */
    int body_kind;        /* enum hh_body_kind */
    uint64_t content_length;
    int keep_alive;       /* 1 unless "Connection: close" or HTTP/1.0 without keep-alive */
    int expect_continue;  /* 1 if "Expect: 100-continue" in HTTP/1.1 (an
                             HTTP/1.0 100-continue is ignored, RFC 9110
                             section 10.1.1) */
    int upgrade;          /* 1 if HTTP/1.1, Connection: upgrade and an
                             Upgrade header */
    hh_str host;          /* Host header value (len 0 if absent); for an
                             absolute-form target, the target's authority
                             instead (RFC 9112 section 3.2.2) */
    int expect_other;     /* 1 if Expect has any value other than
                             100-continue: the server may answer 417 */
} hh_request;

/* Error results (negative). The status hint is what a server should answer. */
enum hh_result {
    HH_INCOMPLETE = -1,        /* need more bytes */
    HH_ERR_BAD_REQUEST = -400, /* malformed: 400 */
    HH_ERR_URI_TOO_LONG = -414,/* request-target longer than max_target: 414 */
    HH_ERR_HEADERS_TOO_LARGE = -431, /* header section > max_header_bytes or
                                        more headers than the array holds: 431 */
    HH_ERR_NOT_IMPLEMENTED = -501,   /* unknown Transfer-Encoding coding: 501 */
    HH_ERR_VERSION = -505      /* HTTP/2.0, HTTP/3, HTTP/1.2+ etc.: 505 */
};

typedef struct hh_limits {
    size_t max_header_bytes; /* whole request head incl. request line; 0 = 8192 */
    size_t max_target;       /* request-target length; 0 = 8192 */
} hh_limits;

/* Parses one request head from buf[0..len). headers/max_headers is the
 * caller's array. On success returns the number of bytes of the head
 * (request line + headers + the empty line), > 0, and fills *req; bytes
 * after it (a body, a pipelined request) are not looked at.
 * Returns HH_INCOMPLETE if the head is not complete yet and no limit is
 * exceeded (a head that already exceeds max_header_bytes or a target that
 * already exceeds max_target fails early, without waiting for the end).
 * Returns one of the HH_ERR_* values otherwise; *req is then unspecified.
 * limits may be NULL (defaults); limits above 2^30 are clamped to 2^30.
 *
 * Errors are decided in byte order: the first byte that breaks the
 * grammar or crosses a limit decides, so a prefix of the input returns
 * either HH_INCOMPLETE or the same result as the whole input. The checks
 * on field values (Content-Length, Transfer-Encoding, Host) run when the
 * head is complete. A request-target longer than max_target, or one that
 * runs past max_header_bytes, is HH_ERR_URI_TOO_LONG; any other part of
 * the head running past max_header_bytes is HH_ERR_HEADERS_TOO_LARGE.
 *
 * Strictness (each is HH_ERR_BAD_REQUEST unless stated):
 *  - Every line ends in CRLF. A bare LF is rejected rather than accepted
 *    as a line end (RFC 9112 section 2.2 allows either; accepting it is a
 *    known request-smuggling vector). A bare CR anywhere is rejected.
 *  - Leading empty lines (CRLF) before the request line are skipped, as
 *    RFC 9112 section 2.2 allows; they count in the returned length and
 *    against max_header_bytes.
 *  - request-line = token SP request-target SP HTTP-version, single SPs.
 *    The target is 0x21-0x7E without '#'; origin-form, absolute-form
 *    ("scheme://authority...", no userinfo), authority-form for CONNECT
 *    only and asterisk-form for OPTIONS only. "HTTP/1.0" and "HTTP/1.1"
 *    are accepted; any other "HTTP/" DIGIT ["." DIGIT] is HH_ERR_VERSION.
 *  - field-name is a token followed directly by ':'; obs-fold, CTLs and
 *    NUL in values are rejected; more than max_headers fields is
 *    HH_ERR_HEADERS_TOO_LARGE.
 *  - Content-Length: a list of identical 1*DIGIT values up to INT64_MAX.
 *  - Transfer-Encoding (all field lines, in order): a list of tokens, no
 *    empty elements, no parameters; "chunked" exactly once and last, else
 *    400; any other coding with a final chunked is HH_ERR_NOT_IMPLEMENTED.
 *    Rejected with Content-Length or in HTTP/1.0.
 *  - Host: required in HTTP/1.1, at most one, characters of uri-host and
 *    port only. */
int hh_parse_request(const char *buf, size_t len, hh_request *req,
                     hh_header *headers, size_t max_headers,
                     const hh_limits *limits);

/* Incremental decoder for a chunked body. Zero-initialise before use. */
typedef struct hh_chunked {
    int state;          /* private */
    uint64_t remaining; /* private: bytes left in the current chunk */
    size_t trailer_bytes; /* private */
    uint64_t total;     /* decoded body bytes so far */
} hh_chunked;

/* Decodes chunked data: consumes input from in[0..inlen) and writes the
 * payload to out, which needs room for inlen bytes and may be the same
 * buffer as in (the decoder never writes ahead of what it has read). The
 * input may be split anywhere between calls. *out_len receives the payload bytes
 * written, *consumed the input bytes consumed.
 * Returns 1 when the last chunk and the trailer section are complete (input
 * after *consumed belongs to the next request), 0 when all input was
 * consumed and more is needed, HH_ERR_BAD_REQUEST for a bad chunk-size line
 * (non-hex, overflow, too long, bad extension), a missing CRLF after chunk
 * data, or a bad/oversized trailer section (trailers are discarded), and
 * -413 if the decoded total would exceed max_body (0 = unlimited). */
/* Grammar (stricter than RFC 9112 section 7.1 where parsers disagree):
 * chunk-size is 1*HEXDIG with no whitespace around it, at most 2^62;
 * chunk-ext is *( ";" BWS token [ BWS "=" BWS ( token / quoted-string ) ]
 * BWS ) with no whitespace before the first ';' or before the CRLF; a
 * chunk-size line is at most 4096 bytes; trailer field lines follow the
 * header field rules and the trailer section with its final CRLF is at
 * most 8192 bytes. Errors are sticky: later calls return the same value.
 * After 1 was returned, later calls return 1 and consume nothing. */
int hh_decode_chunked(hh_chunked *dec, const char *in, size_t inlen,
                      char *out, size_t *out_len, size_t *consumed,
                      uint64_t max_body);

/* Case-insensitive header lookup in a parsed request; returns the first
 * match or NULL. */
const hh_header *hh_find_header(const hh_request *req, const char *name);

/* Writes the IMF-fixdate for t into out (29 chars + NUL, out >= 30).
 * Example: "Sun, 06 Nov 1994 08:49:37 GMT". */
void hh_format_date(int64_t t, char out[30]);

#endif
