/*
 * Giving up root, and the pidfile.  Shared by ade-superd (which must
 * never run workers as root) and ade-ctl (which, run as root, acts as the
 * service user so that the files it writes belong to it).
 */
#include <sys/types.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "log.h"
#include "priv.h"

/* Writes the pid through a temporary file, so readers never see half. */
int
pidfile_write(const char *path)
{
	char tmp[PATH_MAX], pid[32];
	int fd, n;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
	    0644)) == -1)
		return -1;
	if (write(fd, pid, (size_t)n) != n || close(fd) == -1 ||
	    rename(tmp, path) == -1) {
		unlink(tmp);
		return -1;
	}
	return 0;
}

/*
 * Switches to the configured user and group.  Workers run engines that
 * execute untrusted configuration code, so root never runs them.
 */
int
priv_drop(const struct conf *c, int required)
{
	struct passwd *pw;
	struct group *gr;
	gid_t gid;

	if (geteuid() != 0)
		return 0;
	if (c->user[0] == '\0' || strcmp(c->user, "root") == 0) {
		if (!required)
			return 0;
		log_error("refusing to run workers as root: set [supervisor] "
		    "user (and group) in the configuration");
		return -1;
	}
	if ((pw = getpwnam(c->user)) == NULL) {
		log_error("user %s does not exist", c->user);
		return -1;
	}
	gid = pw->pw_gid;
	if (c->group[0] != '\0') {
		if ((gr = getgrnam(c->group)) == NULL) {
			log_error("group %s does not exist", c->group);
			return -1;
		}
		gid = gr->gr_gid;
	}
	if (pw->pw_uid == 0) {
		log_error("user %s is root; refusing to run workers as root",
		    c->user);
		return -1;
	}
	if (setgroups(0, NULL) == -1 || setgid(gid) == -1 ||
	    initgroups(pw->pw_name, gid) == -1 || setuid(pw->pw_uid) == -1) {
		log_error("cannot switch to user %s: %s", c->user,
		    strerror(errno));
		return -1;
	}
	if (setuid(0) != -1) {
		log_error("could regain root after dropping it; stopping");
		return -1;
	}
	/* What the engines and pip see as their home is the user's own. */
	setenv("HOME", pw->pw_dir, 1);
	setenv("USER", pw->pw_name, 1);
	setenv("LOGNAME", pw->pw_name, 1);
	log_debug("running as user %s", c->user);
	return 0;
}

