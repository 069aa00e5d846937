/*
 * Confinement of the children that run untrusted code: the engine runs a
 * configuration package a workspace uploaded, and a build step runs its
 * setup code.  Landlock lets an unprivileged process give up file-system
 * access for itself and its descendants, so the worker builds a ruleset
 * for each child (the system's read-only part plus the directories of
 * that one run or build) and the child enters it between fork and exec.
 *
 * What a child may read: the system directories a Python program needs
 * (/usr, /lib*, /bin, /sbin, /etc), the base interpreter's prefix, the
 * few devices in dev_paths, and what its caller adds.  Everything of the
 * daemon's own (its configuration file, the password file, the SQLite
 * database, the data directory) is cut out of those trees, however they
 * nest.  What it may write: only what its caller adds.  From Landlock ABI
 * 6 on, the child can also neither signal processes outside its domain
 * (its worker) nor reach their abstract Unix sockets.
 *
 * Whether the kernel offers Landlock depends on its build and its boot-
 * time list of security modules, so the ABI is probed at run time; the
 * engine_sandbox setting says what to do without it.
 */
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>

#include <linux/landlock.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "log.h"
#include "sandbox.h"
#include "util.h"

/* Rights and fields newer than Debian 12's kernel headers. */
#define LL_FS_TRUNCATE		(1ULL << 14)	/* ABI 3 */
#define LL_FS_IOCTL_DEV		(1ULL << 15)	/* ABI 5 */
#define LL_SCOPE_ABSTRACT_UNIX	(1ULL << 0)	/* ABI 6 */
#define LL_SCOPE_SIGNAL		(1ULL << 1)	/* ABI 6 */

/* The ruleset attributes as the newest ABI has them; older kernels are
   given the prefix they know. */
struct ll_ruleset_attr {
	uint64_t	fs;
	uint64_t	net;
	uint64_t	scoped;
};

#define LL_READ		(LANDLOCK_ACCESS_FS_EXECUTE | \
	LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR)
#define LL_FILE		(LANDLOCK_ACCESS_FS_EXECUTE | \
	LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_READ_FILE | \
	LL_FS_TRUNCATE | LL_FS_IOCTL_DEV)

#define SECRETS_MAX	8
#define SPLIT_DEPTH	16

static const char *const system_paths[] = {
	"/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin",
	"/etc", NULL
};

/* Devices a program may open; /dev/null also for writing. */
static const char *const dev_paths[] = {
	"/dev/zero", "/dev/urandom", "/dev/random", NULL
};

static int	 ll_abi = -1;
static int	 confine;		/* children enter a ruleset */
static char	*secrets[SECRETS_MAX];
static size_t	 nsecrets;
static char	 python_prefix[PATH_MAX];
static char	 described[64];

/*
 * The system's part of every ruleset, worked out once and kept: a rule
 * is an open O_PATH descriptor and its rights, so that each child's
 * ruleset costs one call a rule, not a walk of the trees (a tree that
 * holds one of the daemon's files, as /etc holds worker.conf, is
 * granted entry by entry).  The directories so split are kept with
 * their identity and time of change: when an entry of one is added,
 * removed or replaced, the part is worked out again.
 */
struct sys_rule {
	int		 fd;
	uint64_t	 access;
};

struct sys_split {
	char		*path;
	struct stat	 st;
};

static struct sys_rule	*sys_rules;
static size_t		 nsys_rules, sys_rules_cap;
static struct sys_split	*sys_splits;
static size_t		 nsys_splits, sys_splits_cap;
static int		 sys_ready;

static void	sys_forget(void);

/* The Landlock ABI this kernel offers, 0 when it offers none. */
int
sandbox_abi(void)
{
	long v;

	if (ll_abi < 0) {
		v = syscall(SYS_landlock_create_ruleset, NULL, 0,
		    LANDLOCK_CREATE_RULESET_VERSION);
		ll_abi = v < 0 ? 0 : (int)v;
	}
	return ll_abi;
}

/* The file-system rights this ABI lets a ruleset handle. */
static uint64_t
handled_fs(void)
{
	uint64_t fs = LANDLOCK_ACCESS_FS_EXECUTE |
	    LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_READ_FILE |
	    LANDLOCK_ACCESS_FS_READ_DIR | LANDLOCK_ACCESS_FS_REMOVE_DIR |
	    LANDLOCK_ACCESS_FS_REMOVE_FILE | LANDLOCK_ACCESS_FS_MAKE_CHAR |
	    LANDLOCK_ACCESS_FS_MAKE_DIR | LANDLOCK_ACCESS_FS_MAKE_REG |
	    LANDLOCK_ACCESS_FS_MAKE_SOCK | LANDLOCK_ACCESS_FS_MAKE_FIFO |
	    LANDLOCK_ACCESS_FS_MAKE_BLOCK | LANDLOCK_ACCESS_FS_MAKE_SYM;

	if (ll_abi >= 2)
		fs |= LANDLOCK_ACCESS_FS_REFER;
	if (ll_abi >= 3)
		fs |= LL_FS_TRUNCATE;
	if (ll_abi >= 5)
		fs |= LL_FS_IOCTL_DEV;
	return fs;
}

/*
 * The configuration check shared by -n and a real start: a sandbox that
 * is required where the kernel has none is a configuration error.
 */
int
sandbox_check(const struct conf *c, char *err, size_t len)
{
	if (strcmp(c->engine_sandbox, "required") == 0 &&
	    sandbox_abi() == 0) {
		snprintf(err, len, "required, but this kernel offers no "
		    "Landlock (it needs Linux 5.13 or later with landlock in "
		    "its lsm= list)");
		return -1;
	}
	return 0;
}

/* Keeps the real path of one of the daemon's files, if it exists. */
static void
add_secret(const char *path)
{
	char real[PATH_MAX];

	if (path == NULL || path[0] == '\0' || nsecrets == SECRETS_MAX ||
	    realpath(path, real) == NULL)
		return;
	secrets[nsecrets++] = xstrdup(real);
}

/*
 * Decides, once per worker, whether children are confined and what of
 * the daemon's must stay out of their reach.  Returns 1 when they are.
 */
int
sandbox_setup(const struct conf *c)
{
	char real[PATH_MAX], *slash;
	size_t i;

	for (i = 0; i < nsecrets; i++)
		free(secrets[i]);
	nsecrets = 0;
	sys_forget();
	confine = strcmp(c->engine_sandbox, "off") != 0 && sandbox_abi() > 0;
	add_secret(c->path);
	add_secret(c->db_password_file);
	add_secret(c->db_sqlite_path);
	add_secret(c->data_dir);
	add_secret(c->venvs_root);
	python_prefix[0] = '\0';
	if (realpath(c->python, real) != NULL &&
	    (slash = strrchr(real, '/')) != NULL) {
		*slash = '\0';			/* .../bin */
		if ((slash = strrchr(real, '/')) != NULL && slash != real) {
			*slash = '\0';		/* the prefix */
			snprintf(python_prefix, sizeof(python_prefix), "%s",
			    real);
		}
	}
	if (confine)
		snprintf(described, sizeof(described), "Landlock ABI %d",
		    ll_abi);
	else
		snprintf(described, sizeof(described), "%s",
		    sandbox_abi() > 0 ? "off" : "unavailable");
	return confine;
}

/* "Landlock ABI N", "off" or "unavailable", for logs and status. */
const char *
sandbox_describe(void)
{
	return described[0] != '\0' ? described : "off";
}

/* Whether path is dir or lies beneath it. */
static int
path_within(const char *path, const char *dir)
{
	size_t n = strlen(dir);

	if (strcmp(dir, "/") == 0)
		return 1;
	return strncmp(path, dir, n) == 0 &&
	    (path[n] == '\0' || path[n] == '/');
}

/*
 * The descriptor and rights of one path-beneath rule; rights are cut to
 * what a file can have.  0, or -1 with errno set.
 */
static int
open_rule(const char *path, int how, struct sys_rule *r)
{
	struct stat st;
	int saved;

	if ((r->fd = open(path, O_PATH | O_CLOEXEC)) == -1)
		return -1;
	if (fstat(r->fd, &st) == -1) {
		saved = errno;
		close(r->fd);
		errno = saved;
		return -1;
	}
	r->access = (how == SANDBOX_WRITE ? handled_fs() : LL_READ) &
	    handled_fs();
	if (!S_ISDIR(st.st_mode))
		r->access &= LL_FILE;
	return 0;
}

static int
put_rule(int ruleset, const struct sys_rule *r)
{
	struct landlock_path_beneath_attr pb;

	memset(&pb, 0, sizeof(pb));
	pb.parent_fd = r->fd;
	pb.allowed_access = r->access;
	return (int)syscall(SYS_landlock_add_rule, ruleset,
	    LANDLOCK_RULE_PATH_BENEATH, &pb, 0);
}

/* Keeps a rule of the system's part; 0, or -1 with errno set. */
static int
keep_rule(const char *path, int how)
{
	struct sys_rule r;

	if (open_rule(path, how, &r) == -1)
		return -1;
	if (nsys_rules == sys_rules_cap) {
		sys_rules_cap = sys_rules_cap ? sys_rules_cap * 2 : 32;
		sys_rules = xrealloc(sys_rules, sys_rules_cap *
		    sizeof(*sys_rules));
	}
	sys_rules[nsys_rules++] = r;
	return 0;
}

/* Keeps a directory that was split, as it is now. */
static void
keep_split(const char *path, const struct stat *st)
{
	if (nsys_splits == sys_splits_cap) {
		sys_splits_cap = sys_splits_cap ? sys_splits_cap * 2 : 8;
		sys_splits = xrealloc(sys_splits, sys_splits_cap *
		    sizeof(*sys_splits));
	}
	sys_splits[nsys_splits].path = xstrdup(path);
	sys_splits[nsys_splits++].st = *st;
}

static void
sys_forget(void)
{
	size_t i;

	for (i = 0; i < nsys_rules; i++)
		close(sys_rules[i].fd);
	for (i = 0; i < nsys_splits; i++)
		free(sys_splits[i].path);
	nsys_rules = nsys_splits = 0;
	sys_ready = 0;
}

/* Whether every split directory is as it was when the part was made. */
static int
sys_fresh(void)
{
	struct stat st;
	size_t i;

	if (!sys_ready)
		return 0;
	for (i = 0; i < nsys_splits; i++) {
		const struct stat *was = &sys_splits[i].st;

		if (stat(sys_splits[i].path, &st) == -1 ||
		    st.st_dev != was->st_dev || st.st_ino != was->st_ino ||
		    st.st_mtim.tv_sec != was->st_mtim.tv_sec ||
		    st.st_mtim.tv_nsec != was->st_mtim.tv_nsec ||
		    st.st_ctim.tv_sec != was->st_ctim.tv_sec ||
		    st.st_ctim.tv_nsec != was->st_ctim.tv_nsec)
			return 0;
	}
	return 1;
}

/*
 * Grants a system tree for reading, less the daemon's own files: a tree
 * that holds one of them is granted entry by entry, down the path to it,
 * and the file itself (or its directory) is left out.
 */
static void
allow_system(const char *path, int depth)
{
	char real[PATH_MAX], child[PATH_MAX];
	struct dirent *de;
	struct stat st;
	size_t i;
	int split = 0;
	DIR *d;

	if (realpath(path, real) == NULL)
		return;
	for (i = 0; i < nsecrets; i++) {
		if (path_within(real, secrets[i]))
			return;
		if (path_within(secrets[i], real))
			split = 1;
	}
	if (!split) {
		if (keep_rule(real, SANDBOX_READ) == -1 &&
		    errno != ENOENT && errno != EACCES)
			log_warn("sandbox: %s", real);
		return;
	}
	if (depth >= SPLIT_DEPTH || stat(real, &st) == -1 ||
	    (d = opendir(real)) == NULL)
		return;
	keep_split(real, &st);
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0)
			continue;
		if ((size_t)snprintf(child, sizeof(child), "%s/%s",
		    strcmp(real, "/") == 0 ? "" : real, de->d_name) >=
		    sizeof(child))
			continue;
		allow_system(child, depth + 1);
	}
	closedir(d);
}

/*
 * Works out the system's part of the rulesets: the system trees, the
 * interpreter's prefix, the devices.  -1 when /dev/null cannot be had.
 */
static int
sys_make(void)
{
	int i;

	sys_forget();
	for (i = 0; system_paths[i] != NULL; i++)
		allow_system(system_paths[i], 0);
	if (python_prefix[0] != '\0')
		allow_system(python_prefix, 0);
	for (i = 0; dev_paths[i] != NULL; i++)
		(void)keep_rule(dev_paths[i], SANDBOX_READ);
	if (keep_rule("/dev/null", SANDBOX_WRITE) == -1)
		return -1;
	sys_ready = 1;
	return 0;
}

/* The next child's ruleset, made ahead by sandbox_prepare, or -1. */
static int next_fd = -1;

/* A new ruleset with the system's read-only part, in *fd. */
static int
ruleset_new(int *fd)
{
	struct ll_ruleset_attr attr;
	size_t size, i;

	memset(&attr, 0, sizeof(attr));
	attr.fs = handled_fs();
	size = sizeof(attr.fs);
	if (ll_abi >= 6) {
		attr.scoped = LL_SCOPE_ABSTRACT_UNIX | LL_SCOPE_SIGNAL;
		size = sizeof(attr);
	}
	if (!sys_fresh() && sys_make() == -1)
		return -1;
	*fd = (int)syscall(SYS_landlock_create_ruleset, &attr, size, 0);
	if (*fd == -1)
		return -1;
	for (i = 0; i < nsys_rules; i++)
		if (put_rule(*fd, &sys_rules[i]) == -1) {
			/* A kept descriptor went bad: start afresh. */
			sys_forget();
			close(*fd);
			*fd = -1;
			return -1;
		}
	return 0;
}

/*
 * Makes the next child's ruleset ahead, while the worker has nothing
 * else to do: the dozen or so calls that put the system's part in are
 * then not on the way from a claim to its engine's start.
 */
void
sandbox_prepare(void)
{
	static int failed;

	/* One that failed is left to sandbox_begin, which reports it. */
	if (confine && next_fd == -1 && !failed &&
	    ruleset_new(&next_fd) == -1) {
		next_fd = -1;
		failed = 1;
	}
}

/*
 * Starts the ruleset of one child with the system's read-only part.
 * Unconfined (sb->fd is -1) when the sandbox is off or the kernel has
 * none.  Returns -1 when a ruleset cannot be made.
 */
int
sandbox_begin(struct sandbox *sb)
{
	sb->fd = -1;
	if (!confine)
		return 0;
	if (next_fd != -1) {
		/* Made ahead: still good if the system's part is. */
		if (sys_fresh()) {
			sb->fd = next_fd;
			next_fd = -1;
			return 0;
		}
		close(next_fd);
		next_fd = -1;
	}
	return ruleset_new(&sb->fd);
}

/*
 * Where an open descriptor really is: the name the kernel keeps for it,
 * in one call where realpath(3) reads each component's link.  Falls back
 * to realpath of path when /proc is not there.
 */
static int
real_path_of(int fd, const char *path, char real[PATH_MAX])
{
	char proc[40];
	ssize_t n;

	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	n = readlink(proc, real, PATH_MAX - 1);
	if (n > 0 && n < PATH_MAX - 1 && real[0] == '/') {
		real[n] = '\0';
		return 0;
	}
	return realpath(path, real) != NULL ? 0 : -1;
}

/* Lets the child read (and with SANDBOX_WRITE, change) path. */
int
sandbox_allow(struct sandbox *sb, const char *path, int how)
{
	char real[PATH_MAX];
	struct sys_rule r;
	size_t i;
	int rc = -1, saved;

	if (sb->fd == -1)
		return 0;
	if (open_rule(path, how, &r) == -1)
		return -1;
	if (real_path_of(r.fd, path, real) == -1)
		goto out;
	/* A grant may lie beneath the data directory, never around it. */
	for (i = 0; i < nsecrets; i++)
		if (path_within(secrets[i], real)) {
			errno = EPERM;
			goto out;
		}
	rc = put_rule(sb->fd, &r);
out:
	saved = errno;
	close(r.fd);
	errno = saved;
	return rc;
}

void
sandbox_end(struct sandbox *sb)
{
	if (sb->fd != -1)
		close(sb->fd);
	sb->fd = -1;
}

/*
 * In the child, just before exec: no new privileges (Landlock's
 * condition for an unprivileged process), then the ruleset.
 */
int
sandbox_enter(int fd)
{
	if (fd == -1)
		return 0;
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1 ||
	    syscall(SYS_landlock_restrict_self, fd, 0) == -1)
		return -1;
	close(fd);
	return 0;
}
