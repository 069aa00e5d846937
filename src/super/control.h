/*
 * The supervisor's control socket, server side: a Unix stream socket on
 * which each connection sends one request line and reads one answer.
 * What a request does is the supervisor's business (the handler); this
 * part owns the socket, its clients and their limits.
 */
#ifndef ADE_CONTROL_H
#define ADE_CONTROL_H

#include <sys/types.h>

struct buf;
struct ev_loop;

/* Answers one request line (without its newline) into out. */
typedef void	control_handler(const char *req, struct buf *out);

/*
 * Creates the socket at path with the given mode, and its directory if
 * missing.  -1 with errno on failure; EADDRINUSE when a live process
 * already answers on it (a file that nobody answers on is replaced).
 */
int	control_listen(const char *path, mode_t mode);
/* Serves the socket from loop, answering with handler. */
void	control_start(struct ev_loop *loop, control_handler *handler);
/* Closes every connection and the socket, and removes its file. */
void	control_stop(void);
/* In a child after fork: closes the descriptors, leaves the rest. */
void	control_forget(void);

#endif
