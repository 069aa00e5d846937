/*
 * The control socket (control.h).  Connections are served from the
 * event loop without ever blocking, so that a slow or silent client
 * delays nobody: at most CTL_CLIENTS at once, a request of at most
 * CTL_REQUEST_MAX bytes (a longer line is read to its end and answered
 * with an error), and CTL_TIMEOUT seconds for the whole exchange.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ev.h>

#include "control.h"
#include "log.h"
#include "util.h"

#define CTL_CLIENTS		16
#define CTL_REQUEST_MAX		256
#define CTL_TIMEOUT		10.0

/* A connection: a request line in, an answer out, then close. */
struct ctl_client {
	int		 fd;		/* -1: free */
	ev_io		 io;
	ev_timer	 timeout;
	char		 req[CTL_REQUEST_MAX];
	size_t		 req_len;
	int		 too_long;	/* the line is being skipped */
	struct buf	 out;
	size_t		 out_off;
};

static struct {
	struct ev_loop		*loop;
	control_handler		*handler;
	char			*path;
	int			 fd;
	ev_io			 io;
	struct ctl_client	 clients[CTL_CLIENTS];
} C = { .fd = -1 };

static void
ctl_close(struct ctl_client *cl)
{
	ev_io_stop(C.loop, &cl->io);
	ev_timer_stop(C.loop, &cl->timeout);
	close(cl->fd);
	cl->fd = -1;
	buf_free(&cl->out);
}

static void
ctl_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct ctl_client *cl = w->data;
	ssize_t n;

	while (cl->out_off < cl->out.len) {
		n = write(cl->fd, cl->out.data + cl->out_off,
		    cl->out.len - cl->out_off);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n <= 0)
			break;
		cl->out_off += (size_t)n;
	}
	ctl_close(cl);
}

static void
ctl_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct ctl_client *cl = w->data;
	char *nl;
	ssize_t n;

	n = read(cl->fd, cl->req + cl->req_len,
	    sizeof(cl->req) - 1 - cl->req_len);
	if (n == -1 && (errno == EINTR || errno == EAGAIN ||
	    errno == EWOULDBLOCK))
		return;
	if (n == -1 || (n == 0 && cl->req_len == 0 && !cl->too_long)) {
		ctl_close(cl);
		return;
	}
	cl->req_len += (size_t)n;
	cl->req[cl->req_len] = '\0';
	if ((nl = strpbrk(cl->req, "\r\n")) != NULL)
		*nl = '\0';
	else if (n > 0) {
		/*
		 * The rest of the line is still to come.  A line longer than
		 * any request is read to its end and thrown away, so that the
		 * client can read the answer.
		 */
		if (cl->req_len == sizeof(cl->req) - 1) {
			cl->too_long = 1;
			cl->req_len = 0;
		}
		return;
	}
	/* A line, or the end of the input. */
	cl->out_off = 0;
	if (cl->too_long)
		buf_addstr(&cl->out, "error: request too long\n");
	else
		C.handler(cl->req, &cl->out);
	ev_io_stop(loop, &cl->io);
	ev_io_init(&cl->io, ctl_write_cb, cl->fd, EV_WRITE);
	cl->io.data = cl;
	ev_io_start(loop, &cl->io);
	/*
	 * Most answers fit in the socket at once; this one may also be the
	 * last thing the loop does (a drain with nothing left to wait for).
	 */
	ctl_write_cb(loop, &cl->io, EV_WRITE);
}

static void
ctl_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	ctl_close(w->data);
}

static void
ctl_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct ctl_client *cl;
	int fd, i;

	while ((fd = accept4(C.fd, NULL, NULL, SOCK_CLOEXEC |
	    SOCK_NONBLOCK)) != -1) {
		for (i = 0; i < CTL_CLIENTS && C.clients[i].fd != -1; i++)
			;
		if (i == CTL_CLIENTS) {
			log_warnx("control socket: %d clients already; "
			    "refusing another", CTL_CLIENTS);
			close(fd);
			continue;
		}
		cl = &C.clients[i];
		cl->fd = fd;
		cl->req_len = 0;
		cl->too_long = 0;
		buf_init(&cl->out);
		ev_io_init(&cl->io, ctl_read_cb, fd, EV_READ);
		cl->io.data = cl;
		ev_io_start(loop, &cl->io);
		ev_timer_init(&cl->timeout, ctl_timeout_cb, CTL_TIMEOUT, 0);
		cl->timeout.data = cl;
		ev_timer_start(loop, &cl->timeout);
	}
}

int
control_listen(const char *path, mode_t mode)
{
	struct sockaddr_un sa;
	char *dir;
	int fd, i;

	dir = xstrdup(path);
	if (strrchr(dir, '/') != NULL) {
		*strrchr(dir, '/') = '\0';
		if (dir[0] != '\0' && mkdir_p(dir, 0750) == -1)
			log_warn("mkdir %s", dir);
	}
	free(dir);
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC |
	    SOCK_NONBLOCK, 0)) == -1)
		return -1;
	/* A socket file left by a process that died is in the way. */
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
		close(fd);
		errno = EADDRINUSE;
		return -1;
	}
	unlink(path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1 ||
	    chmod(path, mode) == -1 || listen(fd, 16) == -1) {
		close(fd);
		return -1;
	}
	C.fd = fd;
	C.path = xstrdup(path);
	for (i = 0; i < CTL_CLIENTS; i++)
		C.clients[i].fd = -1;
	return 0;
}

void
control_start(struct ev_loop *loop, control_handler *handler)
{
	C.loop = loop;
	C.handler = handler;
	ev_io_init(&C.io, ctl_accept_cb, C.fd, EV_READ);
	ev_io_start(loop, &C.io);
}

void
control_stop(void)
{
	int i;

	if (C.fd == -1)
		return;
	for (i = 0; i < CTL_CLIENTS; i++)
		if (C.clients[i].fd != -1)
			ctl_close(&C.clients[i]);
	if (C.loop != NULL)
		ev_io_stop(C.loop, &C.io);
	close(C.fd);
	C.fd = -1;
	unlink(C.path);
	free(C.path);
	C.path = NULL;
}

/*
 * In a child just forked: closes the socket and the connections without
 * touching the loop or the socket file, which stay the parent's.  A
 * child must not keep a client's connection open after the answer, nor
 * see requests.
 */
void
control_forget(void)
{
	int i;

	if (C.fd == -1)
		return;
	for (i = 0; i < CTL_CLIENTS; i++)
		if (C.clients[i].fd != -1)
			close(C.clients[i].fd);
	close(C.fd);
}
