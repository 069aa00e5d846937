/*
 * Giving up root, and the pidfile.  Shared by ade-superd (which must
 * never run workers as root) and ade-ctl (which, run as root, acts as the
 * service user so that the files it writes belong to it).
 */
#include <sys/capability.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/sched.h>
#include <linux/seccomp.h>

#include <dirent.h>
#include <endian.h>
#include <stddef.h>
#include <stdint.h>

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
#include "util.h"

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
 * With [worker] engine_user, engines and build steps run as a user of
 * their own, which reaches none of the daemon's files by its permissions
 * alone.  Switching to it needs privilege, so the daemon keeps exactly
 * two capabilities, CAP_SETUID and CAP_SETGID, and a seccomp filter
 * (below) narrows what they can do to the two users: the daemon can take
 * the engine user's ids (for good in a child about to run engine code,
 * or for a moment to signal the engine's processes and to tidy the files
 * they left), never root's or anyone else's.
 *
 * Files pass between the two through the engine user's group: the
 * daemon is a member of it (its only supplementary group), and the
 * directories an engine or a build writes are the daemon's, of that
 * group, mode 2770, so that what the engine creates there stays
 * readable and removable by the daemon.
 */
static struct {
	int	on;
	uid_t	uid, svc_uid;
	gid_t	gid, svc_gid;
} eng;

#if defined(__x86_64__)
#define SECCOMP_ARCH	AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define SECCOMP_ARCH	AUDIT_ARCH_AARCH64
#endif

#ifdef SECCOMP_ARCH
#if __BYTE_ORDER == __LITTLE_ENDIAN
#define ARG_LOW(i)	(offsetof(struct seccomp_data, args[i]))
#else
#define ARG_LOW(i)	(offsetof(struct seccomp_data, args[i]) + 4)
#endif

struct bpf {
	struct sock_filter	f[160];
	unsigned short		n;
};

static void
bpf_op(struct bpf *p, unsigned short code, uint32_t k, unsigned char jt,
    unsigned char jf)
{
	struct sock_filter op = BPF_JUMP(code, k, jt, jf);

	if (p->n < NELEM(p->f))
		p->f[p->n] = op;
	p->n++;
}

/*
 * The syscall nr passes only when each of its first nargs arguments (an
 * id, 32 bits) is one of ids.  libseccomp cannot say this: it allows one
 * comparison per argument in a rule.
 */
static void
bpf_ids_only(struct bpf *p, int nr, int nargs, const uint32_t *ids,
    int nids)
{
	int a, i;

	bpf_op(p, BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)nr, 0,
	    (unsigned char)(nargs * (nids + 2) + 1));
	for (a = 0; a < nargs; a++) {
		bpf_op(p, BPF_LD | BPF_W | BPF_ABS, ARG_LOW(a), 0, 0);
		for (i = 0; i < nids; i++)
			bpf_op(p, BPF_JMP | BPF_JEQ | BPF_K, ids[i],
			    (unsigned char)(nids - i), 0);
		bpf_op(p, BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM, 0, 0);
	}
	bpf_op(p, BPF_RET | BPF_K, SECCOMP_RET_ALLOW, 0, 0);
}

static void
bpf_refuse(struct bpf *p, int nr, int err)
{
	bpf_op(p, BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)nr, 0, 1);
	bpf_op(p, BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (uint32_t)err, 0, 0);
}

/* nr passes unless its first argument has CLONE_NEWUSER. */
static void
bpf_no_userns(struct bpf *p, int nr)
{
	bpf_op(p, BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)nr, 0, 4);
	bpf_op(p, BPF_LD | BPF_W | BPF_ABS, ARG_LOW(0), 0, 0);
	bpf_op(p, BPF_JMP | BPF_JSET | BPF_K, CLONE_NEWUSER, 0, 1);
	bpf_op(p, BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM, 0, 0);
	bpf_op(p, BPF_RET | BPF_K, SECCOMP_RET_ALLOW, 0, 0);
}

/*
 * What the two capabilities may still do.  setuid and setresuid take
 * only the service user's and the engine user's ids (or -1, "keep"), the
 * gid calls only their groups; the other id calls are refused outright
 * (setgroups too: the groups were set while root).  A new user namespace
 * is refused, because CAP_SETUID would let its id map name root; clone3
 * passes its flags in memory, where a filter cannot look, so it answers
 * "not implemented" and the C library falls back to clone.  A foreign
 * system call ABI (32-bit calls on a 64-bit kernel) is fatal.  Every
 * process below the daemon inherits the filter, engines included.
 */
static int
setid_filter(void)
{
	const uint32_t uids[] = { eng.svc_uid, eng.uid, (uint32_t)-1 };
	const uint32_t gids[] = { eng.svc_gid, eng.gid, (uint32_t)-1 };
	struct sock_fprog prog;
	struct bpf p;

	p.n = 0;
	bpf_op(&p, BPF_LD | BPF_W | BPF_ABS,
	    offsetof(struct seccomp_data, arch), 0, 0);
	bpf_op(&p, BPF_JMP | BPF_JEQ | BPF_K, SECCOMP_ARCH, 1, 0);
	bpf_op(&p, BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS, 0, 0);
	bpf_op(&p, BPF_LD | BPF_W | BPF_ABS,
	    offsetof(struct seccomp_data, nr), 0, 0);
#ifdef __x86_64__
	/* The x32 ABI shares the architecture, with bit 30 set. */
	bpf_op(&p, BPF_JMP | BPF_JGE | BPF_K, 0x40000000, 0, 1);
	bpf_op(&p, BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS, 0, 0);
#endif
	bpf_ids_only(&p, SYS_setuid, 1, uids, 3);
	bpf_ids_only(&p, SYS_setresuid, 3, uids, 3);
	bpf_ids_only(&p, SYS_setgid, 1, gids, 3);
	bpf_ids_only(&p, SYS_setresgid, 3, gids, 3);
	bpf_refuse(&p, SYS_setreuid, EPERM);
	bpf_refuse(&p, SYS_setregid, EPERM);
	bpf_refuse(&p, SYS_setfsuid, EPERM);
	bpf_refuse(&p, SYS_setfsgid, EPERM);
	bpf_refuse(&p, SYS_setgroups, EPERM);
	bpf_refuse(&p, SYS_clone3, ENOSYS);
	bpf_no_userns(&p, SYS_unshare);
	bpf_no_userns(&p, SYS_clone);
	bpf_op(&p, BPF_RET | BPF_K, SECCOMP_RET_ALLOW, 0, 0);
	if (p.n > NELEM(p.f)) {
		errno = E2BIG;
		return -1;
	}
	prog.len = p.n;
	prog.filter = p.f;
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1)
		return -1;
	return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog);
}
#else
static int
setid_filter(void)
{
	errno = ENOTSUP;
	return -1;
}
#endif

/*
 * Switches from root to the service user as priv_drop does, keeping
 * CAP_SETUID and CAP_SETGID under the filter, with the engine user's
 * group as the only supplementary group.
 */
static int
drop_keeping_setid(const struct passwd *pw, gid_t gid, const char *name)
{
	const cap_value_t keep[] = { CAP_SETUID, CAP_SETGID };
	const struct passwd *ep;
	uid_t uid = pw->pw_uid;
	char *svc = xstrdup(pw->pw_name);
	cap_t caps;
	int c, rc;

	/* pw lives in the same static buffer as ep: keep what it said. */
	ep = getpwnam(name);
	pw = NULL;
	if (ep == NULL) {
		free(svc);
		log_error("engine_user %s does not exist", name);
		return -1;
	}
	eng.uid = ep->pw_uid;
	eng.gid = ep->pw_gid;
	eng.svc_uid = uid;
	eng.svc_gid = gid;
	/* Nothing the daemon or its children run can gain more. */
	for (c = 0; prctl(PR_CAPBSET_READ, c, 0, 0, 0) >= 0; c++)
		if (c != CAP_SETUID && c != CAP_SETGID &&
		    prctl(PR_CAPBSET_DROP, c, 0, 0, 0) == -1)
			goto fail;
	if (setgroups(1, &eng.gid) == -1 || setresgid(gid, gid, gid) == -1 ||
	    prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) == -1 ||
	    setresuid(uid, uid, uid) == -1 ||
	    prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) == -1)
		goto fail;
	if ((caps = cap_init()) == NULL)
		goto fail;
	rc = cap_set_flag(caps, CAP_PERMITTED, 2, keep, CAP_SET) == -1 ||
	    cap_set_flag(caps, CAP_EFFECTIVE, 2, keep, CAP_SET) == -1 ||
	    cap_set_proc(caps) == -1 ? -1 : 0;
	cap_free(caps);
	if (rc == -1)
		goto fail;
	if (setid_filter() == -1) {
		log_error("engine_user: cannot install the seccomp filter "
		    "that confines the daemon's ids: %s", strerror(errno));
		free(svc);
		return -1;
	}
	eng.on = 1;
	log_debug("engines run as user %s", name);
	free(svc);
	return 0;
fail:
	log_error("cannot switch to user %s keeping the right to run "
	    "engines as %s: %s", svc, name, strerror(errno));
	free(svc);
	return -1;
}

int
priv_engine_on(void)
{
	return eng.on;
}

/* Takes the engine user's effective ids, until priv_engine_leave. */
void
priv_engine_enter(void)
{
	if (eng.on && (setresgid((gid_t)-1, eng.gid, (gid_t)-1) == -1 ||
	    setresuid((uid_t)-1, eng.uid, (uid_t)-1) == -1))
		fatal("cannot act as the engine user");
}

void
priv_engine_leave(void)
{
	if (eng.on && (setresuid((uid_t)-1, eng.svc_uid, (uid_t)-1) == -1 ||
	    setresgid((gid_t)-1, eng.svc_gid, (gid_t)-1) == -1))
		fatal("cannot act as the service user again");
}

/*
 * In a child about to run engine code: becomes the engine user for good,
 * without capabilities, with a umask that leaves what it writes to the
 * daemon (the group).  The child still shares the worker's memory, so
 * this makes the system calls itself: the C library's set*id would also
 * act on the worker's other threads, and libcap allocates.  Returns -1
 * with errno set.
 */
int
priv_engine_become(void)
{
	struct __user_cap_header_struct hdr = {
		_LINUX_CAPABILITY_VERSION_3, 0
	};
	struct __user_cap_data_struct none[_LINUX_CAPABILITY_U32S_3];

	if (!eng.on)
		return 0;
	memset(none, 0, sizeof(none));
	if (syscall(SYS_setresgid, eng.gid, eng.gid, eng.gid) == -1 ||
	    syscall(SYS_setresuid, eng.uid, eng.uid, eng.uid) == -1 ||
	    syscall(SYS_capset, &hdr, none) == -1)
		return -1;
	umask(007);
	return 0;
}

/* Gives the daemon's directory dir to the engine user's group. */
int
priv_engine_share(const char *dir, mode_t mode)
{
	if (!eng.on)
		return 0;
	if (chown(dir, (uid_t)-1, eng.gid) == -1 || chmod(dir, mode) == -1)
		return -1;
	return 0;
}

/* Takes dir back from the engine user's group. */
int
priv_engine_unshare(const char *dir)
{
	if (!eng.on)
		return 0;
	if (chown(dir, (uid_t)-1, eng.svc_gid) == -1 || chmod(dir, 0750) == -1)
		return -1;
	return 0;
}

/*
 * Lets the engine user pass through base and the directories below it
 * down to dir (search only, o+x: it cannot list them).  Those that are
 * not the daemon's are left as they are.
 */
void
priv_engine_reach(const char *base, const char *dir)
{
	char path[PATH_MAX], *s;
	struct stat st;
	size_t blen = strlen(base);

	if (!eng.on || strncmp(dir, base, blen) != 0 ||
	    (dir[blen] != '/' && dir[blen] != '\0'))
		return;
	snprintf(path, sizeof(path), "%s", dir);
	s = path + blen;
	for (;;) {
		char c = *s;

		*s = '\0';
		if (stat(path[0] != '\0' ? path : "/", &st) == 0 &&
		    st.st_uid == eng.svc_uid && !(st.st_mode & S_IXOTH))
			(void)chmod(path, (st.st_mode & 07777) | S_IXOTH);
		*s = c;
		if (c == '\0')
			break;
		s = strchr(s + 1, '/');
		if (s == NULL)
			s = path + strlen(path);
	}
}

/* Whether an environment's tree was built for the engine user. */
int
priv_engine_owns(const char *dir)
{
	struct stat st;

	if (!eng.on)
		return 1;
	return stat(dir, &st) == 0 && st.st_gid == eng.gid;
}

/*
 * The engine's files, left to the group: readable and writable by the
 * daemon whatever modes the engine gave them.  The daemon's own entries
 * are only passed through.
 */
static void
settle_one(int at, const char *name, const struct stat *st)
{
	mode_t m = st->st_mode & 07777;

	if (st->st_uid != eng.uid)
		return;
	if (S_ISDIR(st->st_mode))
		m |= S_ISGID | S_IRWXG;
	else if (S_ISREG(st->st_mode))
		m |= S_IRGRP | S_IWGRP | (m & S_IXUSR ? S_IXGRP : 0);
	else
		return;
	(void)fchmodat(at, name, m, 0);
}

/*
 * The daemon's files, lent to the group to read: group ownership and
 * read (and search) for the group, never write.
 */
static void
lend_one(int at, const char *name, const struct stat *st)
{
	mode_t m = st->st_mode & 07777;

	if (st->st_uid != eng.svc_uid ||
	    !(S_ISDIR(st->st_mode) || S_ISREG(st->st_mode)))
		return;
	if (S_ISDIR(st->st_mode))
		m |= S_ISGID | S_IRGRP | S_IXGRP;
	else
		m |= S_IRGRP | (m & S_IXUSR ? S_IXGRP : 0);
	if (st->st_gid != eng.gid &&
	    fchownat(at, name, (uid_t)-1, eng.gid, AT_SYMLINK_NOFOLLOW) == -1)
		return;
	if (m != (st->st_mode & 07777) || st->st_gid != eng.gid)
		(void)fchmodat(at, name, m, 0);
}

/* Applies fn to name and, without following links, all below it. */
static void
walk_at(int at, const char *name, int depth,
    void (*fn)(int, const char *, const struct stat *))
{
	struct dirent *de;
	struct stat st;
	DIR *d;
	int fd;

	if (fstatat(at, name, &st, AT_SYMLINK_NOFOLLOW) == -1)
		return;
	fn(at, name, &st);
	if (!S_ISDIR(st.st_mode) || depth > 256)
		return;
	fd = openat(at, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
	    O_CLOEXEC);
	if (fd == -1)
		return;
	if ((d = fdopendir(fd)) == NULL) {
		close(fd);
		return;
	}
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") != 0 &&
		    strcmp(de->d_name, "..") != 0)
			walk_at(dirfd(d), de->d_name, depth + 1, fn);
	closedir(d);
}

/*
 * After engine code ran in dir (and every process of it is gone): as the
 * engine user, opens what it made there to the group, so that the daemon
 * can read the results and remove the tree whatever modes the engine
 * chose.
 */
void
priv_engine_settle(const char *dir)
{
	if (!eng.on)
		return;
	priv_engine_enter();
	walk_at(AT_FDCWD, dir, 0, settle_one);
	priv_engine_leave();
}

/*
 * Lets the engine user read a tree of the daemon's, a configuration
 * package: what an editable install imports from must stay where it is.
 * Done before every use, since the package may have changed.
 */
void
priv_engine_lend(const char *base, const char *dir)
{
	if (!eng.on)
		return;
	priv_engine_reach(base, dir);
	walk_at(AT_FDCWD, dir, 0, lend_one);
}

/*
 * ade-ctl, acting as the service user, joins the engine user's group as
 * the daemon does, to read and remove what engines wrote (gc --now).
 */
static int
join_engine_group(const char *name, struct passwd **svc)
{
	const struct passwd *ep;
	gid_t groups[NGROUPS_MAX + 1], egid;
	char *user;
	int n;

	if (name[0] == '\0')
		return 0;
	/* getpwnam reuses the buffer *svc points into. */
	user = xstrdup((*svc)->pw_name);
	ep = getpwnam(name);
	egid = ep != NULL ? ep->pw_gid : (gid_t)-1;
	*svc = getpwnam(user);
	free(user);
	if (*svc == NULL) {
		errno = ENOENT;
		return -1;
	}
	if (ep == NULL)
		return 0;
	if ((n = getgroups(NGROUPS_MAX, groups)) == -1)
		return -1;
	groups[n++] = egid;
	return setgroups((size_t)n, groups);
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
	if (required && c->engine_user[0] != '\0') {
		if (drop_keeping_setid(pw, gid, c->engine_user) == -1)
			return -1;
	} else if (setgroups(0, NULL) == -1 || setgid(gid) == -1 ||
	    initgroups(pw->pw_name, gid) == -1 ||
	    join_engine_group(c->engine_user, &pw) == -1 ||
	    setuid(pw->pw_uid) == -1) {
		log_error("cannot switch to user %s: %s", c->user,
		    strerror(errno));
		return -1;
	}
	if (setuid(0) != -1) {
		log_error("could regain root after dropping it; stopping");
		return -1;
	}
	/* What the engines and pip see as their home is the user's own. */
	if ((pw = getpwnam(c->user)) == NULL) {
		log_error("user %s does not exist", c->user);
		return -1;
	}
	setenv("HOME", pw->pw_dir, 1);
	setenv("USER", pw->pw_name, 1);
	setenv("LOGNAME", pw->pw_name, 1);
	log_debug("running as user %s", c->user);
	return 0;
}

