/* "Hello, World!" over HTTP/1.1, with a health check and one slow path
 * answered from a timer. SIGHUP restarts the binary with no failed
 * request; SIGTERM answers 503 on /healthz for 5 s, then drains. */
#include <handoff/http.h>
#include <stdio.h>
#include <string.h>

static void later(handoff_http_response *res, void *arg)
{
    (void)arg;
    handoff_http_response_send(res, 200, "text/plain", "slow\n", 5);
}

static void handler(const handoff_http_request *req,
                    handoff_http_response *res, void *userdata)
{
    const char *ua;
    size_t ualen;

    (void)userdata;
    if (req->path.len == 5 && memcmp(req->path.p, "/slow", 5) == 0) {
        /* Never block a worker: finish from a timer instead. */
        if (handoff_http_response_defer(res, 2 * HANDOFF_USEC_PER_SEC,
                                        later, NULL) < 0)
            handoff_http_response_send(res, 500, NULL, NULL, 0);
        return;
    }
    ua = handoff_http_request_header(req, "User-Agent", &ualen);
    handoff_http_response_status(res, 200);
    handoff_http_response_header(res, "Content-Type", "text/plain");
    handoff_http_response_body(res, "Hello, ", 7);
    if (ua)
        handoff_http_response_body(res, ua, ualen);
    else
        handoff_http_response_body(res, "World", 5);
    handoff_http_response_body(res, "!\n", 2);
    handoff_http_response_end(res);
}

int main(void)
{
    handoff_http_listen_spec l = {.addr = "127.0.0.1:8080"};
    handoff_http_options o = HANDOFF_HTTP_OPTIONS_INIT;
    char err[256];
    int r;

    o.handler = handler;
    o.listen = &l;
    o.num_listen = 1;
    o.health_path = "/healthz";
    o.lame_duck_usec = 5 * HANDOFF_USEC_PER_SEC;
    r = handoff_http_serve(NULL, &o, 1, err, sizeof err);
    if (r < 0 && err[0])
        fprintf(stderr, "hello: %s\n", err);
    return r == 0 ? 0 : 1;
}
