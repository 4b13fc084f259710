/*
 * inherit.h - reading the inheritance protocol at start-up (inherit.c).
 */
#ifndef HANDOFF_INHERIT_H
#define HANDOFF_INHERIT_H

#include "handle.h"

#include <stddef.h>
#include <sys/types.h>

struct hf_listen_env {
    int nfds;          /* fds 3..3+nfds-1 */
    char **names;      /* nfds entries or NULL */
};

/* LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES as sd_listen_fds(3) reads them.
 * Returns the fd count (>= 0), -EINVAL/-ESRCH (ignored: err says why) or
 * -ENOMEM. A pure function (fuzz/fuzz-listen-env.c). */
int handoff__parse_listen_env(const char *pid, const char *fds, const char *names, pid_t self,
                              struct hf_listen_env *out, char *err, size_t errlen);
void handoff__listen_env_done(struct hf_listen_env *e);

/* SERVER_STARTER_PORT ("127.0.0.1:80=3;/tmp/sock=4"): up to max entries. */
struct hf_starter_entry {
    char key[128];
    int fd;
};
int handoff__parse_starter_port(const char *v, struct hf_starter_entry *out, size_t max,
                                char *err, size_t errlen);

/* Adopts what the environment passed (fds, handshake, generation,
 * NOTIFY_SOCKET) into h and removes the variables. 0 or -ENOMEM. */
int handoff__inherit(handoff_t *h);
/* At handoff_ready(): closes the inherited fds nobody claimed. */
void handoff__close_unclaimed(handoff_t *h);

#endif
