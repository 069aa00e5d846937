/*
 * Tests the child runner: the claim is given up when no heartbeat has
 * got through for lost_after seconds, counted across the children of one
 * job; no descriptor reaches the child even where close_range(2) is
 * refused; and nothing a child detached from itself outlives it, while
 * the orphans adopted meanwhile are not taken for the child.  The child
 * starts clean of the worker's signal state, and says why when it cannot
 * be run.
 */
#include "unit.h"

#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

#include "proc.h"

static int
hb_fails(void *arg)
{
	(void)arg;
	return -1;	/* the database does not answer */
}

static void
collect(void *arg, int stream, const char *line, size_t len, size_t full)
{
	struct buf *b = arg;

	(void)full;
	if (stream == 1) {
		buf_add(b, line, len);
		buf_add(b, "\n", 1);
	}
}

static void
spec(struct proc_spec *ps, char **argv, struct buf *out)
{
	static char *env[] = { "PATH=/usr/bin:/bin", NULL };

	memset(ps, 0, sizeof(*ps));
	ps->argv = argv;
	ps->envp = env;
	ps->on_line = collect;
	ps->arg = out;
	ps->max_line = 4096;
}

/*
 * Two steps of one second each, heartbeats failing throughout, and a
 * claim given up after 1.6 s without one: the first step is not enough,
 * the second is, because the count starts at the last good heartbeat
 * and not at each step's start.
 */
static void
test_heartbeat_loss_spans_steps(void **state)
{
	char *argv[] = { "sleep", "1", NULL };
	struct proc_spec ps;
	struct proc_result res;
	struct buf out;
	double last_good;

	(void)state;
	buf_init(&out);
	spec(&ps, argv, &out);
	ps.hb_interval = 0.1;
	ps.lost_after = 1.6;
	ps.heartbeat = hb_fails;
	last_good = now_mono();
	ps.last_good = &last_good;
	assert_int_equal(proc_run(&ps, &res), 0);
	assert_false(res.lost);
	assert_int_equal(res.exit_code, 0);
	assert_int_equal(proc_run(&ps, &res), 0);
	assert_true(res.lost);
	assert_true(res.duration < 1.0);
	buf_free(&out);
}

/* Makes close_range(2) fail with ENOSYS, as on kernels before 5.9. */
static int
refuse_close_range(void)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
		    offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_close_range, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { NELEM(f), f };

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1)
		return -1;
	return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog);
}

/*
 * In a process of its own (the seccomp filter stays with it): a
 * descriptor without close-on-exec must not be among the child's.
 */
static void
test_descriptors_closed_without_close_range(void **state)
{
	char *argv[] = { "ls", "/proc/self/fd", NULL };
	struct proc_spec ps;
	struct proc_result res;
	struct buf out;
	int status, fd;
	pid_t pid;

	(void)state;
	if ((pid = fork()) == 0) {
		fd = open("/dev/null", O_RDONLY);
		if (fd == -1 || dup2(fd, 77) == -1)
			_exit(2);
		if (refuse_close_range() == -1)
			_exit(3);
		if (syscall(__NR_close_range, 100, 100, 0) != -1 ||
		    errno != ENOSYS)
			_exit(4);
		buf_init(&out);
		spec(&ps, argv, &out);
		if (proc_run(&ps, &res) == -1 || res.exit_code != 0)
			_exit(5);
		/* ls shows 0, 1, 2 and the directory it reads. */
		_exit(strstr(buf_str(&out), "77\n") != NULL ? 1 : 0);
	}
	assert_true(pid > 0);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	if (WEXITSTATUS(status) == 3)
		skip();
	assert_int_equal(WEXITSTATUS(status), 0);
}

/*
 * A child that starts a process in a session of its own, out of reach of
 * its process group, and exits: once proc_run returns, that process is
 * gone too.  Runs in a process of its own, which becomes a subreaper.
 */
static void
test_detached_descendant_ends_with_the_child(void **state)
{
	char pidfile[] = "/tmp/ade-test-proc-XXXXXX";
	char *argv[] = { "sh", "-c", "setsid sh -c 'echo $$ > \"$0.tmp\" && "
	    "mv \"$0.tmp\" \"$0\"; exec sleep 60' \"$0\" </dev/null "
	    ">/dev/null 2>&1 & while [ ! -s \"$0\" ]; do sleep 0.01; done",
	    pidfile, NULL };
	struct proc_spec ps;
	struct proc_result res;
	struct buf out;
	long sleeper = 0;
	int status, fd;
	FILE *f;
	pid_t pid;

	(void)state;
	if ((fd = mkstemp(pidfile)) == -1)
		fail();
	close(fd);
	unlink(pidfile);
	if ((pid = fork()) == 0) {
		if (proc_adopt_orphans() == -1)
			_exit(2);
		buf_init(&out);
		spec(&ps, argv, &out);
		if (proc_run(&ps, &res) == -1 || res.exit_code != 0)
			_exit(3);
		if ((f = fopen(pidfile, "r")) == NULL)
			_exit(4);
		if (fscanf(f, "%ld", &sleeper) != 1 || sleeper <= 0)
			_exit(5);
		fclose(f);
		_exit(kill((pid_t)sleeper, 0) == -1 && errno == ESRCH ? 0 : 1);
	}
	assert_true(pid > 0);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if ((f = fopen(pidfile, "r")) != NULL) {
		if (fscanf(f, "%ld", &sleeper) == 1 && sleeper > 0)
			kill((pid_t)sleeper, SIGKILL);
		fclose(f);
	}
	unlink(pidfile);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

/*
 * An orphan that the subreaper adopts and that exits while the child
 * still runs is reaped along the way; the child's own exit status is
 * the one reported.
 */
static void
test_adopted_orphan_is_not_the_child(void **state)
{
	char *argv[] = { "sh", "-c", "(sh -c 'exit 7' &); sleep 0.5; exit 5",
	    NULL };
	struct proc_spec ps;
	struct proc_result res;
	struct buf out;
	int status;
	pid_t pid;

	(void)state;
	if ((pid = fork()) == 0) {
		if (proc_adopt_orphans() == -1)
			_exit(2);
		buf_init(&out);
		spec(&ps, argv, &out);
		if (proc_run(&ps, &res) == -1)
			_exit(3);
		/* No child of ours is left, zombie or not. */
		if (waitpid(-1, &status, WNOHANG) != -1 || errno != ECHILD)
			_exit(4);
		_exit(res.exit_code == 5 ? 0 : 1);
	}
	assert_true(pid > 0);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

/* Whether the line of /proc/PID/status that starts with key is all zero. */
static int
status_zero(const char *status, const char *key)
{
	const char *p = strstr(status, key);

	if (p == NULL)
		return 0;
	p += strlen(key);
	p += strspn(p, " \t");
	return strspn(p, "0") == 16 && p[16] == '\n';
}

static void
on_usr1(int sig)
{
	(void)sig;
}

/*
 * The child starts clean whatever the worker has set up: a session of
 * its own, no signal blocked, ignored or caught, stdin from /dev/null,
 * the working directory asked for.  The worker's own signal state is
 * as it was.
 */
static void
test_child_starts_clean(void **state)
{
	char *argv[] = { "cat", "/proc/self/status", "/proc/self/stat",
	    "/dev/stdin", NULL };
	char *pwd[] = { "pwd", NULL };
	struct sigaction sa, cur;
	struct proc_spec ps;
	struct proc_result res;
	struct buf out;
	sigset_t blk, now;
	const char *stat;
	long pid, sid;

	(void)state;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&blk);
	sigaddset(&blk, SIGUSR2);
	sigprocmask(SIG_BLOCK, &blk, NULL);

	buf_init(&out);
	spec(&ps, argv, &out);
	assert_int_equal(proc_run(&ps, &res), 0);
	assert_int_equal(res.exit_code, 0);
	assert_true(status_zero(buf_str(&out), "SigBlk:"));
	assert_true(status_zero(buf_str(&out), "SigIgn:"));
	assert_true(status_zero(buf_str(&out), "SigCgt:"));
	/* "pid (comm) state ppid pgrp session": its own session. */
	assert_non_null(stat = strstr(buf_str(&out), "(cat) "));
	while (stat > buf_str(&out) && stat[-1] != '\n')
		stat--;
	assert_int_equal(sscanf(stat, "%ld (cat) %*c %*d %*d %ld", &pid,
	    &sid), 2);
	assert_int_equal(pid, sid);
	buf_free(&out);

	buf_init(&out);
	spec(&ps, pwd, &out);
	ps.cwd = "/proc";
	assert_int_equal(proc_run(&ps, &res), 0);
	assert_string_equal(buf_str(&out), "/proc\n");
	buf_free(&out);

	sigaction(SIGUSR1, NULL, &cur);
	assert_ptr_equal(cur.sa_handler, on_usr1);
	sigprocmask(SIG_SETMASK, NULL, &now);
	assert_true(sigismember(&now, SIGUSR2));
	assert_false(sigismember(&now, SIGUSR1));
	signal(SIGUSR1, SIG_DFL);
	signal(SIGPIPE, SIG_DFL);
	sigprocmask(SIG_UNBLOCK, &blk, NULL);
}

/* What the child writes to stderr, line by line. */
static void
collect_err(void *arg, int stream, const char *line, size_t len,
    size_t full)
{
	struct buf *b = arg;

	(void)full;
	if (stream == 2) {
		buf_add(b, line, len);
		buf_add(b, "\n", 1);
	}
}

/* A program that cannot be run: exit 127 and a line that says why. */
static void
test_exec_failure_is_told(void **state)
{
	char *argv[] = { "/nonexistent/engine", NULL };
	char *cd[] = { "true", NULL };
	struct proc_spec ps;
	struct proc_result res;
	struct buf err;

	(void)state;
	buf_init(&err);
	spec(&ps, argv, &err);
	ps.on_line = collect_err;
	assert_int_equal(proc_run(&ps, &res), 0);
	assert_int_equal(res.exit_code, 127);
	assert_string_equal(buf_str(&err), "cannot execute "
	    "/nonexistent/engine: No such file or directory\n");
	buf_free(&err);

	buf_init(&err);
	spec(&ps, cd, &err);
	ps.on_line = collect_err;
	ps.cwd = "/nonexistent";
	assert_int_equal(proc_run(&ps, &res), 0);
	assert_int_equal(res.exit_code, 127);
	assert_string_equal(buf_str(&err),
	    "chdir /nonexistent: No such file or directory\n");
	buf_free(&err);
}

/*
 * Lines far longer than a line buffer starts with are kept whole up to
 * max_line, and cut there, and a short line after them is whole too.
 */
static void
test_long_lines_grow_to_their_limit(void **state)
{
	char *argv[] = { "sh", "-c", "head -c 300000 /dev/zero | tr '\\0' x;"
	    " echo; head -c 3000000 /dev/zero | tr '\\0' x; echo; echo xx",
	    NULL };
	struct proc_spec ps;
	struct proc_result res;
	struct buf out;

	(void)state;
	buf_init(&out);
	spec(&ps, argv, &out);
	ps.max_line = 1000000;
	assert_int_equal(proc_run(&ps, &res), 0);
	assert_int_equal(res.exit_code, 0);
	/* collect joins the kept bytes with newlines. */
	assert_int_equal(out.len, 300000 + 1 + 1000000 + 1 + 2 + 1);
	assert_int_equal(out.data[300000], '\n');
	assert_int_equal(out.data[300000 + 1 + 1000000], '\n');
	assert_memory_equal(out.data + out.len - 3, "xx\n", 3);
	for (size_t i = 0; i < out.len; i++)
		if (out.data[i] != 'x' && out.data[i] != '\n')
			fail_msg("byte %zu is %d", i, out.data[i]);
	buf_free(&out);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_heartbeat_loss_spans_steps),
		cmocka_unit_test(test_descriptors_closed_without_close_range),
		cmocka_unit_test(test_detached_descendant_ends_with_the_child),
		cmocka_unit_test(test_adopted_orphan_is_not_the_child),
		cmocka_unit_test(test_child_starts_clean),
		cmocka_unit_test(test_exec_failure_is_told),
		cmocka_unit_test(test_long_lines_grow_to_their_limit),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
