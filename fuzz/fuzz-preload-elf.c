/* libFuzzer harness: the checks `handoff run --preload` makes on the
 * command it runs (src/preload/exe.c), over any file a user may name.
 * The first byte picks:
 *  0: the input is an ELF file (pl_elf_inspect): no read outside it (the
 *     reader asserts it), the interpreter string terminated;
 *  1: the input is a "#!" line (pl_shebang_parse): outputs terminated and
 *     within their buffers, the interpreter without blanks. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "preload.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct mem {
    const uint8_t *p;
    size_t n;
};

static long mem_read(void *ctx, uint64_t off, void *buf, size_t len)
{
    const struct mem *m = ctx;
    if (off > m->n || len > m->n - off)
        abort(); /* pl_elf_inspect bounds every read by the size */
    memcpy(buf, m->p + off, len);
    return (long)len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *p;
    size_t n;

    if (size < 1)
        return 0;
    n = size - 1;
    p = malloc(n ? n : 1);
    if (!p)
        return 0;
    memcpy(p, data + 1, n);
    if (data[0] & 1) {
        char interp[64], arg[64];
        if (pl_shebang_parse((const char *)p, n, interp, sizeof interp, arg, sizeof arg) == 0) {
            if (!memchr(interp, '\0', sizeof interp) || !memchr(arg, '\0', sizeof arg) || !interp[0] ||
                strpbrk(interp, " \t\n"))
                abort();
        }
    } else {
        struct mem m = {p, n};
        struct pl_elf_info info;
        if (pl_elf_inspect(mem_read, &m, n, &info) == 0 && !memchr(info.interp, '\0', sizeof info.interp))
            abort();
    }
    free(p);
    return 0;
}
