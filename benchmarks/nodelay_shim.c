/* For benchmarks/global_router_stream.sh: preloaded into Dynamo's frontend, accept4() as libc's, then
 * TCP_NODELAY on the accepted socket (Dynamo 1.6.1's HTTP server sets none). A diagnostic, not a fix.
 *   cc -shared -fPIC -O2 -o nodelay_shim.so nodelay_shim.c -ldl */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

typedef int (*accept4_fn)(int, struct sockaddr *, socklen_t *, int);

int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
    static accept4_fn real;
    if (!real) real = (accept4_fn)dlsym(RTLD_NEXT, "accept4");
    int client = real(fd, addr, len, flags), one = 1;
    if (client >= 0) setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return client;
}
