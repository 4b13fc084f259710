/*
 * exe.c - can a preload library work in this program?
 *
 * `handoff run --preload` checks the command before every start, so that
 * a server the shim cannot reach fails with a sentence instead of binding
 * a fresh socket (EADDRINUSE, or worse, silently nothing):
 *
 *  - a statically linked program (static or static-pie) never runs the
 *    dynamic loader, which is what reads LD_PRELOAD;
 *  - a Go program makes its socket system calls itself, not through libc
 *    (Go's net package), even when it is dynamically linked for cgo;
 *  - a program for another libc (musl) or architecture cannot load a
 *    glibc library built for this one;
 *  - a set-user-ID or set-group-ID program, or one with file capabilities,
 *    runs in secure-execution mode (AT_SECURE), where ld.so ignores
 *    LD_PRELOAD entries that contain a slash (ld.so(8)).
 *
 * Scripts are followed to their interpreter ("#!", and "/usr/bin/env NAME"
 * through PATH). A wrapper script that execs a static or Go program cannot
 * be seen through: docs/guide-unmodified-servers.md says what then happens.
 *
 * pl_elf_inspect() parses a file the supervisor does not trust (any path
 * the user gives), so it reads through a callback, bounds every count and
 * size, and is fuzzed (fuzz/fuzz-preload-elf.c).
 */
#include "preload.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#define MAX_PHNUM 256
#define MAX_SHNUM 4096
#define MAX_NOTE 4096
#define MAX_NOTES 16
#define MAX_SHSTR 16384

struct hdr {
    int cls;
    uint16_t type, machine, phentsize, phnum, shentsize, shnum, shstrndx;
    uint64_t phoff, shoff;
};

struct seg {
    uint32_t type;
    uint64_t off, filesz;
};

static bool read_exact(pl_read_fn rd, void *ctx, uint64_t size, uint64_t off, void *buf, size_t len)
{
    if (off > size || len > size - off)
        return false;
    return rd(ctx, off, buf, len) == (long)len;
}

static int read_hdr(pl_read_fn rd, void *ctx, uint64_t size, struct hdr *h)
{
    unsigned char id[EI_NIDENT];
    static const unsigned char native = 
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        ELFDATA2LSB;
#else
        ELFDATA2MSB;
#endif

    if (!read_exact(rd, ctx, size, 0, id, sizeof id) || memcmp(id, ELFMAG, SELFMAG) != 0)
        return -ENOEXEC;
    if (id[EI_DATA] != native || (id[EI_CLASS] != ELFCLASS32 && id[EI_CLASS] != ELFCLASS64))
        return -ENOEXEC;
    h->cls = id[EI_CLASS];
    if (h->cls == ELFCLASS64) {
        Elf64_Ehdr e;
        if (!read_exact(rd, ctx, size, 0, &e, sizeof e))
            return -ENOEXEC;
        *h = (struct hdr){ELFCLASS64, e.e_type, e.e_machine, e.e_phentsize, e.e_phnum,
                          e.e_shentsize, e.e_shnum, e.e_shstrndx, e.e_phoff, e.e_shoff};
    } else {
        Elf32_Ehdr e;
        if (!read_exact(rd, ctx, size, 0, &e, sizeof e))
            return -ENOEXEC;
        *h = (struct hdr){ELFCLASS32, e.e_type, e.e_machine, e.e_phentsize, e.e_phnum,
                          e.e_shentsize, e.e_shnum, e.e_shstrndx, e.e_phoff, e.e_shoff};
    }
    return 0;
}

static bool read_seg(pl_read_fn rd, void *ctx, uint64_t size, const struct hdr *h, unsigned i, struct seg *s)
{
    if (h->cls == ELFCLASS64) {
        Elf64_Phdr p;
        if (h->phentsize != sizeof p || !read_exact(rd, ctx, size, h->phoff + (uint64_t)i * sizeof p, &p, sizeof p))
            return false;
        *s = (struct seg){p.p_type, p.p_offset, p.p_filesz};
    } else {
        Elf32_Phdr p;
        if (h->phentsize != sizeof p || !read_exact(rd, ctx, size, h->phoff + (uint64_t)i * sizeof p, &p, sizeof p))
            return false;
        *s = (struct seg){p.p_type, p.p_offset, p.p_filesz};
    }
    return true;
}

static bool read_sect(pl_read_fn rd, void *ctx, uint64_t size, const struct hdr *h, unsigned i, uint32_t *name,
                      uint64_t *off, uint64_t *sz)
{
    if (h->cls == ELFCLASS64) {
        Elf64_Shdr s;
        if (h->shentsize != sizeof s || !read_exact(rd, ctx, size, h->shoff + (uint64_t)i * sizeof s, &s, sizeof s))
            return false;
        *name = s.sh_name;
        *off = s.sh_offset;
        *sz = s.sh_size;
    } else {
        Elf32_Shdr s;
        if (h->shentsize != sizeof s || !read_exact(rd, ctx, size, h->shoff + (uint64_t)i * sizeof s, &s, sizeof s))
            return false;
        *name = s.sh_name;
        *off = s.sh_offset;
        *sz = s.sh_size;
    }
    return true;
}

/* A note segment: a "Go" note of type 4 is the Go build ID that the Go
 * linker writes (cmd/link: ELF_NOTE_GOBUILDID_TAG). */
static bool notes_say_go(const uint8_t *p, size_t n)
{
    size_t off = 0;

    for (int k = 0; k < 64 && off + 12 <= n; k++) {
        uint32_t namesz, descsz, type;
        memcpy(&namesz, p + off, 4);
        memcpy(&descsz, p + off + 4, 4);
        memcpy(&type, p + off + 8, 4);
        off += 12;
        if (namesz > n - off)
            return false;
        if (namesz == 3 && memcmp(p + off, "Go\0", 3) == 0 && type == 4)
            return true;
        off += ((size_t)namesz + 3) & ~(size_t)3;
        if (off > n || descsz > n - off)
            return false;
        off += ((size_t)descsz + 3) & ~(size_t)3;
    }
    return false;
}

int pl_elf_inspect(pl_read_fn rd, void *ctx, uint64_t size, struct pl_elf_info *info)
{
    struct hdr h;
    unsigned notes = 0;
    int r;

    memset(info, 0, sizeof *info);
    if ((r = read_hdr(rd, ctx, size, &h)) < 0)
        return r;
    info->elf_class = h.cls;
    info->machine = h.machine;
    info->type = h.type;
    if (h.phnum > MAX_PHNUM)
        return -ENOEXEC;
    for (unsigned i = 0; i < h.phnum; i++) {
        struct seg s;
        if (!read_seg(rd, ctx, size, &h, i, &s))
            return -ENOEXEC;
        if (s.type == PT_INTERP) {
            size_t n = s.filesz < sizeof info->interp - 1 ? (size_t)s.filesz : sizeof info->interp - 1;
            if (!read_exact(rd, ctx, size, s.off, info->interp, n))
                return -ENOEXEC;
            info->interp[n] = '\0';
            info->has_interp = true;
        } else if (s.type == PT_NOTE && notes < MAX_NOTES && !info->go) {
            uint8_t buf[MAX_NOTE];
            size_t n = s.filesz < sizeof buf ? (size_t)s.filesz : sizeof buf;
            notes++;
            if (read_exact(rd, ctx, size, s.off, buf, n))
                info->go = notes_say_go(buf, n);
        }
    }
    /* Section names: a Go binary whose notes were stripped still has its
     * .go.buildinfo (the runtime reads it). Absent section headers are
     * normal; broken ones are ignored (they do not matter to the loader). */
    if (!info->go && h.shoff && h.shnum && h.shnum <= MAX_SHNUM && h.shstrndx < h.shnum) {
        uint32_t nm;
        uint64_t stroff, strsz;
        char strtab[MAX_SHSTR];
        if (read_sect(rd, ctx, size, &h, h.shstrndx, &nm, &stroff, &strsz) && strsz > 0) {
            size_t n = strsz < sizeof strtab ? (size_t)strsz : sizeof strtab;
            if (read_exact(rd, ctx, size, stroff, strtab, n)) {
                for (unsigned i = 0; i < h.shnum && !info->go; i++) {
                    uint64_t o, z;
                    if (!read_sect(rd, ctx, size, &h, i, &nm, &o, &z) || nm >= n)
                        continue;
                    const char *name = strtab + nm;
                    size_t left = n - nm;
                    static const char bi[] = ".go.buildinfo", id[] = ".note.go.buildid";
                    if ((left >= sizeof bi && memcmp(name, bi, sizeof bi) == 0) ||
                        (left >= sizeof id && memcmp(name, id, sizeof id) == 0))
                        info->go = true;
                }
            }
        }
    }
    return 0;
}

int pl_shebang_parse(const char *line, size_t len, char *interp, size_t ilen, char *arg, size_t alen)
{
    size_t i = 0, s, e;

    /* The line ends at a newline or at len; blanks are spaces and tabs. */
    for (size_t k = 0; k < len; k++)
        if (line[k] == '\n' || line[k] == '\0') {
            len = k;
            break;
        }
    while (i < len && (line[i] == ' ' || line[i] == '\t'))
        i++;
    s = i;
    while (i < len && line[i] != ' ' && line[i] != '\t')
        i++;
    if (i == s || i - s >= ilen)
        return -ENOEXEC;
    memcpy(interp, line + s, i - s);
    interp[i - s] = '\0';
    while (i < len && (line[i] == ' ' || line[i] == '\t'))
        i++;
    e = len;
    while (e > i && (line[e - 1] == ' ' || line[e - 1] == '\t'))
        e--;
    if (alen == 0)
        return 0;
    if (e - i >= alen)
        e = i + alen - 1;
    memcpy(arg, line + i, e - i);
    arg[e - i] = '\0';
    return 0;
}

struct fdreader {
    int fd;
};

static long fd_read(void *ctx, uint64_t off, void *buf, size_t len)
{
    const struct fdreader *f = ctx;
    size_t got = 0;

    while (got < len) {
        ssize_t n = pread(f->fd, (char *)buf + got, len - got, (off_t)(off + got));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        got += (size_t)n;
    }
    return (long)got;
}

/* NAME through PATH, as /usr/bin/env would find it. */
static int path_lookup(const char *name, char *out, size_t len)
{
    const char *path = getenv("PATH");

    if (strchr(name, '/')) {
        (void)snprintf(out, len, "%s", name);
        return 0;
    }
    if (!path || !*path)
        path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        const char *end = strchr(path, ':');
        size_t n = end ? (size_t)(end - path) : strlen(path);
        int w = snprintf(out, len, "%.*s%s%s", (int)n, path, n ? "/" : "./", name);
        struct stat st;
        if (w > 0 && (size_t)w < len && stat(out, &st) == 0 && S_ISREG(st.st_mode) && access(out, X_OK) == 0)
            return 0;
        path = end ? end + 1 : path + n;
    }
    return -ENOENT;
}

static bool same_arch(const struct pl_elf_info *a, const struct pl_elf_info *self)
{
    return a->elf_class == self->elf_class && a->machine == self->machine;
}

static int check(const char *path, const struct pl_elf_info *self, int level, char *why, size_t wl)
{
    struct stat st;
    struct statvfs vfs;
    struct pl_elf_info info;
    struct fdreader f;
    char head[258];
    ssize_t n;
    bool nosuid;
    int r;

    if (level > 4) {
        (void)snprintf(why, wl, "%s: too many levels of \"#!\" interpreters", path);
        return -1;
    }
    f.fd = open(path, O_RDONLY | O_CLOEXEC);
    if (f.fd < 0 || fstat(f.fd, &st) < 0) {
        (void)snprintf(why, wl, "%s: %s", path, strerror(errno));
        if (f.fd >= 0)
            (void)close(f.fd);
        return -1;
    }
    nosuid = fstatvfs(f.fd, &vfs) == 0 && (vfs.f_flag & ST_NOSUID);
    if (!nosuid && (((st.st_mode & S_ISUID) && st.st_uid != geteuid()) ||
                    ((st.st_mode & S_ISGID) && st.st_gid != getegid()))) {
        (void)snprintf(why, wl,
                       "%s is set-%s-ID: it runs in secure-execution mode, where the dynamic loader ignores "
                       "LD_PRELOAD",
                       path, (st.st_mode & S_ISUID) && st.st_uid != geteuid() ? "user" : "group");
        (void)close(f.fd);
        return -1;
    }
    if (!nosuid && geteuid() != 0 && fgetxattr(f.fd, "security.capability", NULL, 0) > 0) {
        (void)snprintf(why, wl,
                       "%s has file capabilities (setcap): it runs in secure-execution mode, where the "
                       "dynamic loader ignores LD_PRELOAD",
                       path);
        (void)close(f.fd);
        return -1;
    }
    n = pread(f.fd, head, sizeof head - 1, 0);
    if (n >= 2 && head[0] == '#' && head[1] == '!') {
        char interp[256], arg[256], found[4096];
        head[n] = '\0';
        (void)close(f.fd);
        if (pl_shebang_parse(head + 2, (size_t)n - 2, interp, sizeof interp, arg, sizeof arg) < 0) {
            (void)snprintf(why, wl, "%s: a \"#!\" line without an interpreter", path);
            return -1;
        }
        r = check(interp, self, level + 1, why, wl);
        if (r < 0)
            return r;
        /* "#!/usr/bin/env [-S] NAME ...": the program env runs. */
        const char *base = strrchr(interp, '/');
        if (strcmp(base ? base + 1 : interp, "env") == 0 && arg[0]) {
            char *save = NULL, *w;
            for (w = strtok_r(arg, " \t", &save); w && w[0] == '-'; w = strtok_r(NULL, " \t", &save)) {
            }
            if (w && !strchr(w, '=')) {
                if (path_lookup(w, found, sizeof found) < 0) {
                    (void)snprintf(why, wl, "%s: %s (from \"#!%s\") is not in PATH", path, w, interp);
                    return -1;
                }
                return check(found, self, level + 1, why, wl);
            }
        }
        return 0;
    }
    r = pl_elf_inspect(fd_read, &f, (uint64_t)st.st_size, &info);
    (void)close(f.fd);
    if (r < 0)
        return 0; /* not ELF: binfmt_misc or unknown; nothing to tell */
    if (self && !same_arch(&info, self)) {
        (void)snprintf(why, wl, "%s is a %d-bit program for machine %d; the preload library is %d-bit for machine %d",
                       path, info.elf_class == ELFCLASS64 ? 64 : 32, info.machine,
                       self->elf_class == ELFCLASS64 ? 64 : 32, self->machine);
        return -1;
    }
    if (info.go) {
        (void)snprintf(why, wl,
                       "%s is a Go program: Go makes its socket system calls itself, not through libc, so no "
                       "preload library sees its bind()",
                       path);
        return -1;
    }
    if (!info.has_interp) {
        (void)snprintf(why, wl,
                       "%s is statically linked: no dynamic loader runs for it, and only the dynamic loader "
                       "reads LD_PRELOAD",
                       path);
        return -1;
    }
    if (strstr(info.interp, "ld-musl")) {
        (void)snprintf(why, wl, "%s uses musl's dynamic loader (%s); the preload library is built for glibc",
                       path, info.interp);
        return -1;
    }
    return 0;
}

int pl_exe_check(const char *path, char *why, size_t whylen)
{
    struct pl_elf_info self;
    struct fdreader f;
    struct stat st;
    bool have_self = false;

    /* This process is built for the same ABI as the shim. */
    f.fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    if (f.fd >= 0) {
        have_self = fstat(f.fd, &st) == 0 && pl_elf_inspect(fd_read, &f, (uint64_t)st.st_size, &self) == 0;
        (void)close(f.fd);
    }
    if (whylen)
        why[0] = '\0';
    return check(path, have_self ? &self : NULL, 0, why, whylen) < 0 ? -1 : 0;
}

int pl_lib_check(const char *path, char *why, size_t whylen)
{
    struct pl_elf_info info, self;
    struct fdreader f;
    struct stat st;
    int r;

    if (!path || path[0] != '/' || strpbrk(path, " :\t\n")) {
        (void)snprintf(why, whylen, "%s: LD_PRELOAD needs an absolute path without blanks or colons",
                       path ? path : "(none)");
        return -1;
    }
    f.fd = open(path, O_RDONLY | O_CLOEXEC);
    if (f.fd < 0 || fstat(f.fd, &st) < 0) {
        (void)snprintf(why, whylen, "%s: %s", path, strerror(errno));
        if (f.fd >= 0)
            (void)close(f.fd);
        return -1;
    }
    r = S_ISREG(st.st_mode) ? pl_elf_inspect(fd_read, &f, (uint64_t)st.st_size, &info) : -ENOEXEC;
    (void)close(f.fd);
    /* A position-independent executable is ET_DYN too, but it names its
     * loader (PT_INTERP); this library does not. */
    if (r < 0 || info.type != ET_DYN || info.has_interp) {
        (void)snprintf(why, whylen, "%s: not a shared library", path);
        return -1;
    }
    f.fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    if (f.fd >= 0) {
        bool ok = fstat(f.fd, &st) == 0 && pl_elf_inspect(fd_read, &f, (uint64_t)st.st_size, &self) == 0;
        (void)close(f.fd);
        if (ok && !same_arch(&info, &self)) {
            (void)snprintf(why, whylen, "%s: built for another architecture", path);
            return -1;
        }
    }
    return 0;
}
