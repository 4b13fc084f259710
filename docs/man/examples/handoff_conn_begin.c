/* The drain waits for work done on other threads. A connection is
 * accepted (and counted) on the main thread and served by a worker
 * thread that ends it a second later; the shutdown requested meanwhile
 * completes only then. The program is its own client. */
#include <handoff.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

static handoff_t *h;

static void *serve(void *arg)
{
    int fd = *(int *)arg;

    sleep(1);                            /* a slow request */
    (void)!write(fd, "hello\n", 6);
    close(fd);
    handoff_conn_end(h);                 /* thread-safe */
    return NULL;
}

int main(int argc, char **argv)
{
    handoff_options o = HANDOFF_OPTIONS_INIT;
    struct sockaddr_storage ss = {0};
    socklen_t len = sizeof ss;
    handoff_event ev;
    pthread_t t;
    char reply[16] = "";
    int lfd, cfd, fd;

    (void)argc;
    o.argv = argv;
    if (handoff_new(&o, &h) < 0)         /* before any thread */
        return 1;
    lfd = handoff_listen(h, "web", "127.0.0.1:0", NULL);
    if (lfd < 0 || getsockname(lfd, (struct sockaddr *)&ss, &len) < 0)
        return 1;
    cfd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (cfd < 0 || connect(cfd, (struct sockaddr *)&ss, len) < 0)
        return 1;
    handoff_ready(h);

    fd = handoff_accept(h, lfd, 0);      /* counted: handoff_conn_begin() */
    if (fd < 0 || pthread_create(&t, NULL, serve, &fd))
        return 1;
    handoff_shutdown(h, 0);              /* as SIGTERM would */
    while (handoff_wait_event(h, &ev, HANDOFF_NO_TIMEOUT) > 0) {
        printf("%s: %s (%lu open)\n", handoff_event_name(ev.type),
               ev.message, handoff_conn_count(h));
        if (ev.type == HANDOFF_EVENT_STOP)
            break;
    }
    pthread_join(t, NULL);
    if (read(cfd, reply, sizeof reply - 1) > 0)
        printf("client got: %s", reply);
    close(cfd);
    handoff_free(h);
    return 0;
}
