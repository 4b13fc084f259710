/* "Hello, World!" over HTTP/1.1, with a health check and one slow path
 * answered from a timer. SIGHUP restarts the binary with no failed
 * request; SIGTERM answers 503 on /healthz for 5 s, then drains. */
#include <handoff/http.h>
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
    handoff_http_serve_options so = HANDOFF_HTTP_SERVE_OPTIONS_INIT;
    handoff_http_site site = {.options = &o, .listen = &l, .num_listen = 1};

    o.handler = handler;
    o.health_path = "/healthz";
    so.lame_duck_usec = 5 * HANDOFF_USEC_PER_SEC;
    /* Start-up failures are logged (to stderr) by handoff_http_serve(). */
    return handoff_http_serve(&so, &site, 1) == 0 ? 0 : 1;
}
