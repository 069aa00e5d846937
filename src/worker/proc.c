/*
 * The child runner.  The child gets a session and process group of its
 * own (so TERM and KILL reach everything it started), dies with the
 * worker (PR_SET_PDEATHSIG), reads /dev/null, and inherits no descriptor
 * beyond stdout and stderr: the database connection must never reach
 * engine code.  The parent multiplexes the two pipes with poll and, in
 * between, renews the claim and watches the deadline and the stop flag.
 *
 * A process group does not hold everything a child starts: a descendant
 * that calls setsid(), or forks twice, leaves it.  So the worker is a
 * child subreaper (proc_adopt_orphans): orphans below it become its
 * children instead of init's, and when a child ends, whatever it left
 * behind is killed and reaped (proc_end_descendants) before the step
 * counts as over.
 */
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "priv.h"
#include "proc.h"
#include "sandbox.h"
#include "scoreboard.h"
#include "util.h"

volatile pid_t proc_current_pgid;

/*
 * What a line buffer holds at first: lines are short, and a buffer of
 * max_line (megabytes) for each stream of each child would be taken from
 * the system and given back at every run.  It grows as a line needs.
 */
#define LINE_START	(64 * 1024)

struct linebuf {
	int	 fd;
	int	 stream;
	char	*buf;
	size_t	 cap;		/* what buf holds, besides a NUL */
	size_t	 len;
	size_t	 full;		/* bytes of the line, kept or not */
	size_t	 limit;		/* of this line: max_line, or more */
	int	 asked;		/* line_limit was asked for this line */
};

static void
line_alloc(const struct proc_spec *ps, struct linebuf *lb)
{
	lb->cap = ps->max_line < LINE_START ? ps->max_line : LINE_START;
	lb->buf = xmalloc(lb->cap + 1);
	lb->limit = ps->max_line;
}

/* Makes room for need bytes (never more than the line's limit). */
static void
line_room(struct linebuf *lb, size_t need)
{
	size_t cap = lb->cap;

	if (need <= cap)
		return;
	while (cap < need)
		cap = cap > 0 ? cap * 2 : LINE_START;
	if (cap > lb->limit)
		cap = lb->limit;
	lb->buf = xrealloc(lb->buf, cap + 1);
	lb->cap = cap;
}

static void
line_flush(const struct proc_spec *ps, struct linebuf *lb)
{
	if (lb->full > 0 && ps->on_line != NULL)
		ps->on_line(ps->arg, lb->stream, lb->buf, lb->len, lb->full);
	lb->len = lb->full = 0;
	lb->asked = 0;
	/* A buffer grown for one long line is not kept for the next. */
	if (lb->limit != ps->max_line || lb->cap > LINE_START) {
		free(lb->buf);
		line_alloc(ps, lb);
	}
}

/*
 * Adds part of a line.  What goes beyond the line's limit is counted,
 * not kept; the first time a line reaches max_line, line_limit may allow
 * it more, judging by its head.
 */
static void
line_add(const struct proc_spec *ps, struct linebuf *lb, const char *p,
    size_t n)
{
	size_t take, lim;

	lb->full += n;
	take = lb->len + n <= lb->limit ? n : lb->limit - lb->len;
	line_room(lb, lb->len + take);
	memcpy(lb->buf + lb->len, p, take);
	lb->len += take;
	if (take == n || lb->asked || ps->line_limit == NULL)
		return;
	lb->asked = 1;
	lim = ps->line_limit(ps->arg, lb->buf, lb->len);
	if (lim <= lb->limit)
		return;
	lb->limit = lim;
	p += take;
	n -= take;
	take = lb->len + n <= lim ? n : lim - lb->len;
	line_room(lb, lb->len + take);
	memcpy(lb->buf + lb->len, p, take);
	lb->len += take;
}

/* Splits a chunk into lines; a line longer than its limit is cut. */
static void
line_feed(const struct proc_spec *ps, struct linebuf *lb, const char *p,
    size_t n)
{
	const char *nl;
	size_t seg;

	while (n > 0) {
		nl = memchr(p, '\n', n);
		seg = nl != NULL ? (size_t)(nl - p) : n;
		line_add(ps, lb, p, seg);
		if (nl == NULL)
			return;
		if (lb->len > 0 && lb->buf[lb->len - 1] == '\r' &&
		    lb->len == lb->full) {
			lb->len--;
			lb->full--;
		}
		line_flush(ps, lb);
		p += seg + 1;
		n -= seg + 1;
	}
}

/*
 * Closes every descriptor from low up.  close_range(2) does it in one
 * call; where the kernel lacks it (ENOSYS before Linux 5.9, or a seccomp
 * filter that refuses it), each possible descriptor is closed in turn,
 * because an inherited one (the database connection) must never reach
 * the engine.
 */
static void
close_from(int low)
{
	struct rlimit rl;
	long max, fd;

	if (close_range((unsigned int)low, ~0U, 0) == 0)
		return;
	max = sysconf(_SC_OPEN_MAX);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
	    (long)rl.rlim_cur > max)
		max = (long)rl.rlim_cur;
	if (max <= 0 || max > 1L << 20)
		max = 1L << 20;
	for (fd = low; fd < max; fd++)
		(void)close((int)fd);
}

/*
 * What the child needs, handed over through memory it shares with the
 * worker until it execs.
 */
struct child_arg {
	const struct proc_spec	*ps;
	int			 out;
	int			 err;
	pid_t			 parent;
};

/*
 * The child's own stack while it shares the worker's memory.  Pages it
 * never touches cost nothing.
 */
#define CHILD_STACK	(128 * 1024)
static char child_stack[CHILD_STACK] __attribute__((aligned(16)));

/* A line on the child's stderr, written without stdio or allocation. */
static void
child_say(const char *what, const char *name, int err)
{
	const char *desc = strerrordesc_np(err);

	(void)!write(2, what, strlen(what));
	if (name != NULL) {
		(void)!write(2, " ", 1);
		(void)!write(2, name, strlen(name));
	}
	(void)!write(2, ": ", 2);
	if (desc == NULL)
		desc = "unknown error";
	(void)!write(2, desc, strlen(desc));
	(void)!write(2, "\n", 1);
}

/*
 * Sets sig's disposition to the default, for every signal: the C
 * library refuses the two it keeps for threads, which an engine would
 * otherwise inherit ignored from whoever started the daemon.
 */
static void
dfl_signal(int sig)
{
	struct {
		void		*handler;
		unsigned long	 flags;
		void		*restorer;
		unsigned long	 mask;
	} ksa = { NULL, 0, NULL, 0 };	/* SIG_DFL, as the kernel has it */

	(void)syscall(SYS_rt_sigaction, sig, &ksa, NULL, sizeof(ksa.mask));
}

/*
 * The child, from clone to exec.  It runs in the worker's memory (the
 * worker waits meanwhile), so it only makes system calls: no stdio, no
 * allocation, nothing that changes what the worker will find there.
 * Every signal is blocked when it starts; its handlers are reset before
 * any is let through, so none of the worker's can run here.  Returning
 * ends it at once, as _exit does (the clone wrapper makes the exit call).
 */
static int
child_main(void *arg)
{
	const struct child_arg *ca = arg;
	const struct proc_spec *ps = ca->ps;
	sigset_t none;
	int null, sig;

	setsid();
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != ca->parent)
		return 127;
	for (sig = 1; sig < NSIG; sig++)
		dfl_signal(sig);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	if ((null = open("/dev/null", O_RDONLY)) == -1 ||
	    dup2(null, 0) == -1 || dup2(ca->out, 1) == -1 ||
	    dup2(ca->err, 2) == -1)
		return 127;
	/* Changing ids clears the parent-death signal: set it again. */
	if (priv_engine_become() == -1 ||
	    prctl(PR_SET_PDEATHSIG, SIGKILL) == -1) {
		child_say("cannot become the engine user", NULL, errno);
		return 127;
	}
	if (getppid() != ca->parent)
		return 127;
	if (ps->sandbox != NULL && sandbox_enter(ps->sandbox->fd) == -1) {
		child_say("cannot enter the sandbox", NULL, errno);
		return 127;
	}
	close_from(3);
	if (ps->cwd != NULL && chdir(ps->cwd) == -1) {
		child_say("chdir", ps->cwd, errno);
		return 127;
	}
	execvpe(ps->argv[0], ps->argv, ps->envp);
	child_say("cannot execute", ps->argv[0], errno);
	return 127;
}

/*
 * Starts the child as vfork does: sharing the worker's memory until it
 * execs, so none of the worker's page tables are copied (a fork costs
 * milliseconds in a process that maps a database client library).
 * Returns its pid, or -1 with errno set.
 */
static pid_t
child_start(const struct proc_spec *ps, int out, int err)
{
	struct child_arg ca = { ps, out, err, getpid() };
	sigset_t all, old;
	pid_t pid;
	int saved;

	sigfillset(&all);
	sigprocmask(SIG_SETMASK, &all, &old);
	pid = clone(child_main, child_stack + CHILD_STACK,
	    CLONE_VM | CLONE_VFORK | SIGCHLD, &ca);
	saved = errno;
	sigprocmask(SIG_SETMASK, &old, NULL);
	errno = saved;
	return pid;
}

/* Engines may run as a user of their own: the kills act as that user. */
static void
group_kill(pid_t pgid, int sig)
{
	int rc;

	priv_engine_enter();
	rc = kill(-pgid, sig);
	priv_engine_leave();
	if (rc == -1 && errno != ESRCH)
		log_warn("kill process group %ld", (long)pgid);
}

/*
 * Makes this process the reaper of its orphaned descendants, so that
 * none of them can leave its reach by detaching from its parent.
 */
int
proc_adopt_orphans(void)
{
	return prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
}

/*
 * Sends sig to every child of this process, found in /proc by their
 * parent pid, but those keep (unless NULL) says to spare.  Signalling a
 * child cannot hit a stranger: its pid is not reused before we reap it.
 * Returns the number of children signalled, or -1.
 */
static int
kill_children(int sig, int (*keep)(pid_t))
{
	char path[64], stat[512], *p, *end;
	struct dirent *de;
	pid_t self = getpid();
	long pid, ppid;
	ssize_t len;
	int fd, rc, n = 0;
	DIR *d;

	if ((d = opendir("/proc")) == NULL)
		return -1;
	while ((de = readdir(d)) != NULL) {
		pid = strtol(de->d_name, &end, 10);
		if (*end != '\0' || pid <= 0 || pid == (long)self)
			continue;
		snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
		if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
			continue;
		len = read(fd, stat, sizeof(stat) - 1);
		close(fd);
		if (len <= 0)
			continue;
		stat[len] = '\0';
		/* "pid (comm) state ppid ...": comm may hold anything. */
		if ((p = strrchr(stat, ')')) == NULL ||
		    sscanf(p + 1, " %*c %ld", &ppid) != 1 ||
		    ppid != (long)self)
			continue;
		if (keep != NULL && keep((pid_t)pid))
			continue;
		n++;
		priv_engine_enter();
		rc = kill((pid_t)pid, sig);
		priv_engine_leave();
		if (rc == -1 && errno != ESRCH)
			log_warn("kill %ld", pid);
	}
	closedir(d);
	return n;
}

/*
 * Kills the children of this process that keep does not spare, leaving
 * their reaping to the caller; returns how many, or -1.
 */
int
proc_kill_children(int (*keep)(pid_t))
{
	return kill_children(SIGKILL, keep);
}

/*
 * Kills and reaps every process below this one.  Killing the children
 * makes their own children ours, so it goes on layer by layer until
 * none is left; a process stuck in the kernel may hold it up, but not
 * for long: what is left then is reaped the next time.
 */
void
proc_end_descendants(void)
{
	struct timespec pause = { 0, 10 * 1000 * 1000 };
	double end = now_mono() + PROC_KILL_GRACE;
	int status, n, killed = 0;
	pid_t r;

	for (;;) {
		while ((r = waitpid(-1, &status, WNOHANG)) > 0)
			;
		if (r == -1 && errno == ECHILD)
			break;
		if ((n = kill_children(SIGKILL, NULL)) == -1) {
			log_warn("/proc");
			break;
		}
		killed += n;
		if (now_mono() >= end) {
			log_warnx("descendants of a finished child still "
			    "alive after %.0f s", PROC_KILL_GRACE);
			break;
		}
		nanosleep(&pause, NULL);
	}
	if (killed > 0)
		log_info("killed %d process%s a finished child left behind",
		    killed, killed == 1 ? "" : "es");
}

/*
 * Reaps whatever child has ended without waiting; returns 1 when one of
 * them was pid (its status in *status).  The others are orphans that
 * were adopted, not the child being watched.
 */
static int
reap_all(pid_t pid, int *status)
{
	int st, found = 0;
	pid_t r;

	while ((r = waitpid(-1, &st, WNOHANG)) > 0)
		if (r == pid) {
			*status = st;
			found = 1;
		}
	return found;
}

/* One child being watched by proc_run. */
struct watch {
	const struct proc_spec	*ps;
	struct proc_result	*res;
	struct linebuf		 lb[2];		/* stdout, stderr */
	pid_t			 pid;
	int			 pidfd;		/* -1: none */
	int			 status;
	int			 exited;
	int			 killing;	/* 1 asked, 2 TERM sent */
	int			 killed;	/* KILL sent */
	double			 start;
	double			 deadline;	/* 0: none */
	double			 next_hb;	/* 0: none */
	double			 last_ok;	/* last heartbeat through */
	double			 kill_at;
	double			 exit_at;
	double			 reap;		/* next wait for the status */
};

/*
 * Waits for output, the child's exit, or the next thing to do, and
 * reads what came.  Returns 0 when the pipes are closed and the child
 * has been reaped, 1 otherwise.
 */
static int
watch_wait(struct watch *wt)
{
	const struct proc_spec *ps = wt->ps;
	struct pollfd pfd[3];
	char chunk[65536];
	double now, wait;
	int i, nfd = 0, rc;
	ssize_t n;

	for (i = 0; i < 2; i++)
		if (wt->lb[i].fd != -1) {
			pfd[nfd].fd = wt->lb[i].fd;
			pfd[nfd].events = POLLIN;
			pfd[nfd].revents = 0;
			nfd++;
		}
	if (wt->exited && nfd == 0)
		return 0;
	if (!wt->exited && wt->pidfd != -1) {
		pfd[nfd].fd = wt->pidfd;
		pfd[nfd].events = POLLIN;
		pfd[nfd].revents = 0;
		nfd++;
	}
	now = now_mono();
	/*
	 * With both pipes closed the child is exiting: look for its status
	 * soon, then less and less often.
	 */
	if (nfd == 0) {
		wait = wt->reap;
		wt->reap = wt->reap * 2 > 0.05 ? 0.05 : wt->reap * 2;
	} else
		wait = 1.0;
	if (wt->next_hb > 0 && !wt->exited && wt->next_hb - now < wait)
		wait = wt->next_hb - now;
	if (wt->deadline > 0 && !wt->exited && wt->deadline - now < wait)
		wait = wt->deadline - now;
	if (wt->killing && !wt->killed && wt->kill_at - now < wait)
		wait = wt->kill_at - now;
	if (wait < 0)
		wait = 0;
	rc = nfd == 0 ? (nanosleep(&(struct timespec){ 0,
	    (long)(wait * 1e9) }, NULL), 0) :
	    poll(pfd, (nfds_t)nfd, (int)(wait * 1000) + 1);
	if (rc == -1 && errno != EINTR)
		log_warn("poll");
	for (i = 0; i < nfd && rc > 0; i++) {
		struct linebuf *l = pfd[i].fd == wt->lb[0].fd ? &wt->lb[0] :
		    &wt->lb[1];

		if (pfd[i].revents == 0 || pfd[i].fd == wt->pidfd)
			continue;
		n = read(l->fd, chunk, sizeof(chunk));
		if (n > 0)
			line_feed(ps, l, chunk, (size_t)n);
		else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
			line_flush(ps, l);
			close(l->fd);
			l->fd = -1;
		}
	}
	return 1;
}

/*
 * Decides, after a wait, whether the child must stop (a stop signal,
 * the timeout, a lost claim) and renews the claim when a heartbeat is
 * due; a stop sends TERM, then KILL after PROC_KILL_GRACE.
 */
static void
watch_decide(struct watch *wt, double now)
{
	const struct proc_spec *ps = wt->ps;
	struct proc_result *res = wt->res;
	int rc;

	if (!wt->killing && ps->stop != NULL && *ps->stop) {
		res->stopped = 1;
		wt->killing = 1;
	}
	if (!wt->killing && wt->deadline > 0 && now >= wt->deadline) {
		res->timed_out = 1;
		wt->killing = 1;
	}
	if (!wt->killing && wt->next_hb > 0 && now >= wt->next_hb) {
		rc = ps->heartbeat(ps->arg);
		if (rc == 1) {
			wt->last_ok = now;
			if (ps->last_good != NULL)
				*ps->last_good = now;
			wt->next_hb = now + ps->hb_interval;
		} else if (rc == 0) {
			res->lost = 1;
			wt->killing = 1;
		} else
			wt->next_hb = now + (ps->hb_interval < 5 ?
			    ps->hb_interval : 5);
		if (!wt->killing && ps->lost_after > 0 &&
		    now - wt->last_ok > ps->lost_after) {
			log_warnx("no heartbeat got through for %.0f s; "
			    "giving the claim up", now - wt->last_ok);
			res->lost = 1;
			wt->killing = 1;
		}
	}
	if (wt->killing == 1) {
		group_kill(wt->pid, SIGTERM);
		wt->kill_at = now + PROC_KILL_GRACE;
		wt->killing = 2;
	} else if (wt->killing && !wt->killed && now >= wt->kill_at) {
		group_kill(wt->pid, SIGKILL);
		wt->killed = 1;
	}
}

/* Closes what is left, reaps the child if need be, fills in res. */
static void
watch_end(struct watch *wt)
{
	struct proc_result *res = wt->res;
	double now;
	int i;

	for (i = 0; i < 2; i++) {
		if (wt->lb[i].fd != -1) {
			line_flush(wt->ps, &wt->lb[i]);
			close(wt->lb[i].fd);
		}
		free(wt->lb[i].buf);
	}
	if (!wt->exited) {
		group_kill(wt->pid, SIGKILL);
		while (waitpid(wt->pid, &wt->status, 0) == -1 &&
		    errno == EINTR)
			;
	}
	if (wt->pidfd != -1)
		close(wt->pidfd);
	proc_end_descendants();
	proc_current_pgid = 0;
	if (sb_self != NULL)
		sb_self->engine_pgid = 0;
	now = now_mono();
	res->duration = now - wt->start;
	if (wt->exited) {
		res->until_exit = wt->exit_at - wt->start - res->spawn;
		res->after_exit = now - wt->exit_at;
	}
	if (WIFEXITED(wt->status))
		res->exit_code = WEXITSTATUS(wt->status);
	else if (WIFSIGNALED(wt->status))
		res->exit_code = 128 + WTERMSIG(wt->status);
	if (res->timed_out)
		res->exit_code = PROC_EXIT_TIMEOUT;
}

int
proc_run(const struct proc_spec *ps, struct proc_result *res)
{
	struct watch wt;
	int outp[2] = { -1, -1 }, errp[2] = { -1, -1 }, i;
	double now;

	memset(res, 0, sizeof(*res));
	memset(&wt, 0, sizeof(wt));
	wt.ps = ps;
	wt.res = res;
	wt.reap = 0.0005;
	if (pipe2(outp, O_CLOEXEC) == -1 || pipe2(errp, O_CLOEXEC) == -1) {
		log_warn("pipe");
		goto spawn_fail;
	}
	res->began = wt.start = now_mono();
	if ((wt.pid = child_start(ps, outp[1], errp[1])) == -1) {
		log_warn("clone");
		goto spawn_fail;
	}
	res->spawn = now_mono() - wt.start;
	proc_current_pgid = wt.pid;
	if (sb_self != NULL)
		sb_self->engine_pgid = wt.pid;
	/*
	 * The child's exit wakes the loop through a pidfd (Linux 5.3);
	 * without one, the loop looks for the exit ever less often.
	 */
	wt.pidfd = (int)syscall(SYS_pidfd_open, wt.pid, 0);
	close(outp[1]);
	close(errp[1]);
	for (i = 0; i < 2; i++) {
		wt.lb[i].fd = i == 0 ? outp[0] : errp[0];
		wt.lb[i].stream = i + 1;
		line_alloc(ps, &wt.lb[i]);
		fcntl(wt.lb[i].fd, F_SETFL, O_NONBLOCK);
	}
	wt.last_ok = now_mono();
	/* Counted from the last heartbeat that got through, in any step. */
	if (ps->last_good != NULL && *ps->last_good > 0)
		wt.last_ok = *ps->last_good;
	wt.deadline = ps->timeout > 0 ? wt.start + ps->timeout : 0;
	wt.next_hb = ps->hb_interval > 0 ? wt.start + ps->hb_interval : 0;

	while (watch_wait(&wt)) {
		now = now_mono();
		if (!wt.exited && reap_all(wt.pid, &wt.status)) {
			wt.exited = 1;
			wt.exit_at = now;
			/* Nothing the child started may outlive it. */
			group_kill(wt.pid, SIGKILL);
			proc_end_descendants();
		}
		if (wt.exited) {
			/* Output still open 2 s after the exit is let go. */
			if (now - wt.exit_at > 2.0)
				break;
			continue;
		}
		watch_decide(&wt, now);
	}
	watch_end(&wt);
	return 0;

spawn_fail:
	for (i = 0; i < 2; i++) {
		if (outp[i] != -1)
			close(outp[i]);
		if (errp[i] != -1)
			close(errp[i]);
	}
	res->spawn_failed = 1;
	res->exit_code = 127;
	return -1;
}

/* Whether extra sets the variable name. */
static int
env_given(char *const *extra, const char *name)
{
	size_t k, n = strlen(name);

	for (k = 0; extra != NULL && extra[k] != NULL; k++)
		if (strncmp(extra[k], name, n) == 0 && extra[k][n] == '=')
			return 1;
	return 0;
}

/*
 * The environment of a child: only what a Python program needs to run,
 * never the worker's own settings (ADE_*) or database credentials.  Build
 * steps may also get the operator's PIP_* settings (index URL, proxy
 * certificates); engines never do.
 */
char **
proc_env(const char *path_prefix, int keep_pip, char *const *extra)
{
	static const char *const keep[] = {
		"HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
		"http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY",
		"HTTPS_PROXY", "NO_PROXY",
	};
	extern char **environ;
	char **env, **e;
	const char *path = getenv("PATH");
	size_t n = 0, i, k;

	env = xcalloc(NELEM(keep) + argv_len(extra) + 64, sizeof(*env));
	if (path == NULL || *path == '\0')
		path = "/usr/local/bin:/usr/bin:/bin";
	if (path_prefix != NULL)
		env[n++] = xasprintf("PATH=%s:%s", path_prefix, path);
	else
		env[n++] = xasprintf("PATH=%s", path);
	for (i = 0; i < NELEM(keep); i++) {
		const char *v = getenv(keep[i]);

		if (v != NULL && (i >= 6 ? keep_pip : 1) &&
		    !env_given(extra, keep[i]))
			env[n++] = xasprintf("%s=%s", keep[i], v);
	}
	for (e = environ; keep_pip && *e != NULL && n < NELEM(keep) + 40;
	    e++) {
		if (strncmp(*e, "PIP_", 4) != 0)
			continue;
		for (k = 0; extra != NULL && extra[k] != NULL; k++)
			if (strncmp(*e, extra[k], strcspn(extra[k], "=") + 1)
			    == 0)
				break;
		if (extra == NULL || extra[k] == NULL)
			env[n++] = xstrdup(*e);
	}
	for (k = 0; extra != NULL && extra[k] != NULL; k++)
		env[n++] = xstrdup(extra[k]);
	env[n] = NULL;
	return env;
}
