/*
 * shared/status.c - signal names and wait statuses in words.
 */
#include "shared/status.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>

static const struct {
    int signo;
    const char *name;
} signames[] = {
    {SIGHUP, "HUP"},       {SIGINT, "INT"},     {SIGQUIT, "QUIT"},     {SIGILL, "ILL"},
    {SIGTRAP, "TRAP"},     {SIGABRT, "ABRT"},   {SIGBUS, "BUS"},       {SIGFPE, "FPE"},
    {SIGKILL, "KILL"},     {SIGUSR1, "USR1"},   {SIGSEGV, "SEGV"},     {SIGUSR2, "USR2"},
    {SIGPIPE, "PIPE"},     {SIGALRM, "ALRM"},   {SIGTERM, "TERM"},     {SIGSTKFLT, "STKFLT"},
    {SIGCHLD, "CHLD"},     {SIGCONT, "CONT"},   {SIGSTOP, "STOP"},     {SIGTSTP, "TSTP"},
    {SIGTTIN, "TTIN"},     {SIGTTOU, "TTOU"},   {SIGURG, "URG"},       {SIGXCPU, "XCPU"},
    {SIGXFSZ, "XFSZ"},     {SIGVTALRM, "VTALRM"}, {SIGPROF, "PROF"},   {SIGWINCH, "WINCH"},
    {SIGIO, "IO"},         {SIGPWR, "PWR"},     {SIGSYS, "SYS"},
};

/* "RTMIN", "RTMIN+1" ... "RTMIN+30" by the kernel's numbering (34..64);
 * glibc reserves the first two, so SIGRTMIN there is 34 + 2. The kernel's
 * numbering is the one a status carries. */
static const char *const rtnames[] = {
    "RTMIN",    "RTMIN+1",  "RTMIN+2",  "RTMIN+3",  "RTMIN+4",  "RTMIN+5",  "RTMIN+6",
    "RTMIN+7",  "RTMIN+8",  "RTMIN+9",  "RTMIN+10", "RTMIN+11", "RTMIN+12", "RTMIN+13",
    "RTMIN+14", "RTMIN+15", "RTMAX-14", "RTMAX-13", "RTMAX-12", "RTMAX-11", "RTMAX-10",
    "RTMAX-9",  "RTMAX-8",  "RTMAX-7",  "RTMAX-6",  "RTMAX-5",  "RTMAX-4",  "RTMAX-3",
    "RTMAX-2",  "RTMAX-1",  "RTMAX",
};
#define HF_KERNEL_RTMIN 34

const char *handoff__signal_abbrev(int signo)
{
    for (size_t i = 0; i < sizeof signames / sizeof signames[0]; i++)
        if (signames[i].signo == signo)
            return signames[i].name;
    if (signo >= HF_KERNEL_RTMIN && signo < HF_KERNEL_RTMIN + (int)(sizeof rtnames / sizeof rtnames[0]))
        return rtnames[signo - HF_KERNEL_RTMIN];
    return NULL;
}

const char *handoff__signal_name(int signo, char *buf, size_t len)
{
    const char *n = handoff__signal_abbrev(signo);

    if (n)
        (void)snprintf(buf, len, "SIG%s", n);
    else
        (void)snprintf(buf, len, "signal %d", signo);
    return buf;
}

int handoff__signal_parse(const char *s)
{
    char *end;
    long v;

    if (!s || !*s)
        return -1;
    if (strncasecmp(s, "SIG", 3) == 0)
        s += 3;
    for (int signo = 1; signo <= 64; signo++) {
        const char *n = handoff__signal_abbrev(signo);
        if (n && strcasecmp(s, n) == 0)
            return signo;
    }
    if (*s < '0' || *s > '9')
        return -1;
    v = strtol(s, &end, 10);
    /* 32 and 33 have no name: glibc's threads use them internally (thread
     * cancellation, setxid), so no program can wait for them as a stop
     * or forwarded signal. */
    if (*end || v < 1 || v > 64 || !handoff__signal_abbrev((int)v))
        return -1;
    return (int)v;
}

const char *handoff__wait_status(int status, char *buf, size_t len)
{
    char name[24];

    if (WIFEXITED(status))
        (void)snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        (void)snprintf(buf, len, "was killed by %s%s",
                       handoff__signal_name(WTERMSIG(status), name, sizeof name),
                       WCOREDUMP(status) ? " (core dumped)" : "");
    else
        (void)snprintf(buf, len, "ended with status 0x%x", (unsigned)status);
    return buf;
}
