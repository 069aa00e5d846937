/*
 * The supervisor: a libev loop that forks the workers and the
 * maintenance process, restarts what dies, turns signals into drain,
 * reload, log reopening and scaling, and serves the control socket.  It
 * never touches the database.
 *
 * super_run() takes over the configuration it is given: a reload frees
 * it and puts a new one in its place, and super_run() frees whichever is
 * current when it returns.  Once it is ready it writes a NUL byte and
 * "0" to *ready_fd (unless that is -1), closes it and sets it to -1;
 * until then, errors are logged to standard error (or *ready_fd) too.
 */
#ifndef ADE_SUPER_H
#define ADE_SUPER_H

struct conf;

int	super_run(struct conf *, const char *conf_path, int exit_when_idle,
	    int *ready_fd, const char *pidfile);

#endif
