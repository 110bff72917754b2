/* ic-freeport: print N distinct free TCP ports on 127.0.0.1, one per line.
 *
 * The kernel picks each (bind to port 0); all are held open until every one
 * is chosen, so they are distinct, then released for the test to use. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 1;
  if (n < 1 || n > 64) {
    fprintf(stderr, "usage: ic-freeport [N (1..64)]\n");
    return 2;
  }
  int fds[64];
  for (int i = 0; i < n; i++) {
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    fds[i] = socket(AF_INET, SOCK_STREAM, 0);
    if (fds[i] < 0 || bind(fds[i], (struct sockaddr *)&sa, sizeof sa) != 0 ||
        getsockname(fds[i], (struct sockaddr *)&sa, &len) != 0) {
      perror("ic-freeport");
      return 1;
    }
    printf("%d\n", ntohs(sa.sin_port));
  }
  for (int i = 0; i < n; i++) close(fds[i]);
  return 0;
}
