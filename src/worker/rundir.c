/*
 * A run directory made ahead, while the worker is idle.
 *
 * A run's directory (workspaces/<ws>/runs/<id>) holds logs/ with the
 * event log, input/, output/ and tmp/.  Making them costs five new
 * directories and a new file, and on a worker that has slept these are
 * the slowest steps between the claim and the engine's start: the
 * kernel's caches went cold with the CPU.  So an idle worker makes the
 * tree ahead under workspaces/.spare/, named after the worker, and the
 * run it claims next takes it with one rename(2).  Busy workers make
 * their run directories on the way, as before: the cost is the same
 * either way, and there only the wait for the next run would hide it.
 *
 * The parts a kind of run does not use (a dry run none, a validation
 * only tmp/) are removed as soon as the claim is read (rundir_trim), so
 * that a finished run's directory looks the same however it was made;
 * one that failed before its engine may keep empty parts.  A run that
 * finds its directory already there (another attempt) makes what it
 * needs on the way and leaves the tree for the next run.  A tree whose
 * worker died is removed by the next worker of its host to start
 * (rundir_sweep); it first renames the tree out of the way, so that a
 * worker it took for dead can only find its tree gone, and then makes
 * its directories on the way.
 */
#include <sys/stat.h>
#include <sys/types.h>

#include <fcntl.h>

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "log.h"
#include "priv.h"
#include "rundir.h"
#include "util.h"
#include "worker.h"

static const struct {
	int		 part;
	const char	*name;
	mode_t		 mode;	/* for the engine user's group */
} parts[] = {
	{ RUNDIR_INPUT, "input", 02750 },
	{ RUNDIR_OUTPUT, "output", 02770 },
	{ RUNDIR_TMP, "tmp", 02770 },
};

/* workspaces/.spare, where the trees wait. */
static void
spare_root(const struct worker *w, char *out, size_t len)
{
	snprintf(out, len, "%s/workspaces/.spare", w->conf->data_dir);
}

/*
 * The worker's name as a file name: its id (host:pid) with anything but
 * a plain character made '_'.
 */
static void
spare_name(const char *id, char *out, size_t len)
{
	size_t i;

	snprintf(out, len, "%s", id);
	for (i = 0; out[i] != '\0'; i++)
		if (!(out[i] >= 'a' && out[i] <= 'z') &&
		    !(out[i] >= 'A' && out[i] <= 'Z') &&
		    !(out[i] >= '0' && out[i] <= '9') &&
		    strchr(".-_:", out[i]) == NULL)
			out[i] = '_';
}

static void
spare_path(const struct worker *w, char *out, size_t len)
{
	char root[PATH_MAX], name[sizeof(w->id)];

	spare_root(w, root, sizeof(root));
	spare_name(w->id, name, sizeof(name));
	snprintf(out, len, "%s/%s", root, name);
}

/* Whether pid is a process of this host that is gone. */
static int
gone(long pid)
{
	return pid > 0 && pid != (long)getpid() && kill((pid_t)pid, 0) == -1 &&
	    errno == ESRCH;
}

/*
 * Removes the trees of this host's workers that are gone: host:pid, or
 * host:pid.gone.sweeper when a sweep that renamed it did not finish.
 * Those of other hosts (a shared data directory) are theirs to remove.
 */
void
rundir_sweep(struct worker *w)
{
	char root[PATH_MAX], path[PATH_MAX], away[PATH_MAX];
	char host[sizeof(w->id)], *end;
	struct dirent *de;
	size_t hlen;
	long pid, sweeper;
	DIR *d;

	spare_root(w, root, sizeof(root));
	spare_name(w->id, host, sizeof(host));
	if ((end = strrchr(host, ':')) == NULL)
		return;
	end[1] = '\0';
	hlen = strlen(host);
	if ((d = opendir(root)) == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		if (strncmp(de->d_name, host, hlen) != 0 ||
		    strchr(de->d_name + hlen, ':') != NULL)
			continue;
		errno = 0;
		pid = strtol(de->d_name + hlen, &end, 10);
		if (errno != 0 || end == de->d_name + hlen)
			continue;
		snprintf(path, sizeof(path), "%s/%s", root, de->d_name);
		if (strncmp(end, ".gone.", 6) == 0) {
			/* Out of every worker's way already. */
			sweeper = strtol(end + 6, &end, 10);
			if (*end == '\0' && gone(sweeper) && rm_rf(path) == -1)
				log_warn("remove %s", path);
			continue;
		}
		if (*end != '\0' || !gone(pid))
			continue;
		/* Its own once renamed: a live owner's take then fails. */
		snprintf(away, sizeof(away), "%s.gone.%ld", path,
		    (long)getpid());
		if (rename(path, away) == 0 && rm_rf(away) == -1)
			log_warn("remove %s", away);
	}
	closedir(d);
}

/* Makes the tree at path; -1 with errno set. */
static int
make_tree(const char *path)
{
	char sub[PATH_MAX];
	size_t i;
	int fd;

	if (mkdir(path, 0750) == -1 || priv_engine_share(path, 0750) == -1)
		return -1;
	snprintf(sub, sizeof(sub), "%s/logs", path);
	if (mkdir(sub, 0750) == -1)
		return -1;
	snprintf(sub, sizeof(sub), "%s/logs/events.ndjson", path);
	if ((fd = open(sub, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC |
	    O_NOFOLLOW, 0640)) == -1)
		return -1;
	close(fd);
	for (i = 0; i < NELEM(parts); i++) {
		snprintf(sub, sizeof(sub), "%s/%s", path, parts[i].name);
		if (mkdir(sub, 0750) == -1 ||
		    priv_engine_share(sub, parts[i].mode) == -1)
			return -1;
	}
	return 0;
}

/* Makes the worker's tree ahead, unless it has one. */
void
rundir_make(struct worker *w)
{
	static int warned;
	char root[PATH_MAX], path[PATH_MAX];

	if (w->spare)
		return;
	spare_root(w, root, sizeof(root));
	spare_path(w, path, sizeof(path));
	/* What an interrupted attempt left goes first. */
	if (mkdir_p(root, 0750) == -1 || rm_rf(path) == -1 ||
	    make_tree(path) == -1) {
		/* Runs make their directories on the way instead. */
		if (!warned++)
			log_warn("cannot make a run directory ahead in %s",
			    root);
		(void)rm_rf(path);
		return;
	}
	w->spare = 1;
}

/*
 * Gives the worker's tree to the run whose directory is run_dir: 1 when
 * it did, 0 when the run must make its directory itself (there is none,
 * or the run's directory is already there).
 */
int
rundir_take(struct worker *w, const char *run_dir)
{
	char path[PATH_MAX], parent[PATH_MAX];

	if (!w->spare)
		return 0;
	spare_path(w, path, sizeof(path));
	if (rename(path, run_dir) == -1) {
		/* The workspace's first run: its runs/ is not there yet. */
		snprintf(parent, sizeof(parent), "%s", run_dir);
		if (errno != ENOENT || strrchr(parent, '/') == NULL)
			goto kept;
		*strrchr(parent, '/') = '\0';
		if (mkdir_p(parent, 0750) == -1 || rename(path, run_dir) == -1)
			goto kept;
	}
	w->spare = 0;
	/* Its time is the run's, for GC, not the idle worker's. */
	if (utimensat(AT_FDCWD, run_dir, NULL, AT_SYMLINK_NOFOLLOW) == -1)
		log_warn("utimensat %s", run_dir);
	return 1;
kept:
	/* Kept for the next run, if it is still there. */
	w->spare = is_dir(path);
	return 0;
}

/* Removes the parts of a tree made ahead that its run will not use. */
void
rundir_trim(const char *run_dir, int used)
{
	char sub[PATH_MAX];
	size_t i;

	for (i = 0; i < NELEM(parts); i++) {
		if (used & parts[i].part)
			continue;
		snprintf(sub, sizeof(sub), "%s/%s", run_dir, parts[i].name);
		if (rmdir(sub) == -1 && errno != ENOENT)
			log_warn("rmdir %s", sub);
	}
}

/* Removes the worker's tree, as it exits. */
void
rundir_drop(struct worker *w)
{
	char path[PATH_MAX];

	if (!w->spare)
		return;
	spare_path(w, path, sizeof(path));
	if (rm_rf(path) == -1)
		log_warn("remove %s", path);
	w->spare = 0;
}
