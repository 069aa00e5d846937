/*
 * ade-superd: options, the configuration check, logging, the pidfile,
 * becoming a daemon and dropping root before any worker starts.  The
 * supervisor is in super.c, the worker loop in worker.c.
 */
#include <sys/stat.h>
#include <sys/types.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "log.h"
#include "priv.h"
#include "proctitle.h"
#include "sandbox.h"
#include "super.h"
#include "util.h"
#include "worker.h"

#ifndef ADE_SYSCONFDIR
#define ADE_SYSCONFDIR "/etc"
#endif
#ifndef ADE_VERSION
#define ADE_VERSION "0.0.0"
#endif

static void
usage_to(FILE *f)
{
	fprintf(f, "usage: ade-superd [-dfhnV] [-c file] [--exit-when-idle]\n"
	    "  -c, --config FILE     configuration (default %s)\n"
	    "  -d, --debug           log to standard error\n"
	    "  -f, --foreground      stay in the foreground\n"
	    "  -n, --check           check the configuration and exit\n"
	    "  -x, --exit-when-idle  stop once the queue is drained\n"
	    "  -h, --help            this text\n"
	    "  -V, --version         the version\n",
	    ADE_SYSCONFDIR "/ade/worker.conf");
}

static void __attribute__((noreturn))
usage(void)
{
	usage_to(stderr);
	exit(WORKER_EXIT_CONFIG);
}

/*
 * Refuses to start when the pidfile names a live process; removes a
 * stale one.  Returns 0, or -1 with a message logged.
 */
static int
pidfile_check(const char *path)
{
	struct buf b;
	long pid;

	buf_init(&b);
	if (read_file(path, &b, 64) == -1) {
		buf_free(&b);
		return errno == ENOENT ? 0 : (log_warn("pidfile %s", path), -1);
	}
	pid = strtol(buf_str(&b), NULL, 10);
	buf_free(&b);
	if (pid > 1 && (kill((pid_t)pid, 0) == 0 || errno == EPERM)) {
		log_error("already running: %s names live process %ld", path,
		    pid);
		return -1;
	}
	log_notice("removing stale pidfile %s (pid %ld is gone)", path, pid);
	unlink(path);
	return 0;
}

/*
 * The command that starts a daemon waits for its word on a pipe, so that
 * an init script learns whether the start worked and why not: the
 * daemon's error messages as text, then a NUL byte and the status to exit
 * with ("0" once it is ready).  A daemon that dies without that word was
 * killed or crashed.
 */
static void __attribute__((noreturn))
daemon_wait(int fd)
{
	struct buf b;
	char chunk[512], *nul;
	ssize_t n;
	long code;

	buf_init(&b);
	for (;;) {
		n = read(fd, chunk, sizeof(chunk));
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (b.len < 65536)
			buf_add(&b, chunk, (size_t)n);
	}
	nul = b.len > 0 ? memchr(b.data, '\0', b.len) : NULL;
	if (nul == NULL) {
		if (b.len > 0)
			fwrite(b.data, 1, b.len, stderr);
		fprintf(stderr, "ade-superd: the daemon died before it was "
		    "ready\n");
		_exit(WORKER_EXIT_ERROR);
	}
	fwrite(b.data, 1, (size_t)(nul - b.data), stderr);
	fflush(stderr);
	code = strtol(nul + 1, NULL, 10);
	_exit(code >= 0 && code < 256 ? (int)code : WORKER_EXIT_ERROR);
}

/* The daemon's last word to daemon_wait when it stops before it is ready. */
static void
daemon_failed(int fd, int code)
{
	char word[16];
	int n;

	n = snprintf(word, sizeof(word), "%c%d", '\0', code);
	if (write(fd, word, (size_t)n) == -1)
		return;
	close(fd);
}

/*
 * Becomes a daemon.  The original process stays in daemon_wait until the
 * daemon is ready or has failed.  Returns the descriptor to report on;
 * until then, errors are written there too.
 */
static int
daemonize(void)
{
	int fds[2], null;
	pid_t pid;

	fflush(stderr);
	if (pipe2(fds, O_CLOEXEC) == -1)
		fatal("pipe");
	switch (pid = fork()) {
	case -1:
		fatal("fork");
	case 0:
		break;
	default:
		close(fds[1]);
		daemon_wait(fds[0]);
	}
	close(fds[0]);
	log_echo(fds[1]);
	if (setsid() == -1)
		fatal("setsid");
	switch (fork()) {
	case -1:
		fatal("fork");
	case 0:
		break;
	default:
		_exit(0);
	}
	if (chdir("/") == -1)
		fatal("chdir /");
	umask(027);
	if ((null = open("/dev/null", O_RDWR)) != -1) {
		dup2(null, 0);
		dup2(null, 1);
		dup2(null, 2);
		if (null > 2)
			close(null);
	}
	return fds[1];
}

/* What the command line asks for. */
struct args {
	const char	*path;
	int		 check;		/* -n */
	int		 debug;		/* -d */
	int		 fg;		/* -f */
	int		 idle;		/* -x */
};

static void
parse_args(int argc, char *argv[], struct args *a)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "debug", no_argument, NULL, 'd' },
		{ "foreground", no_argument, NULL, 'f' },
		{ "check", no_argument, NULL, 'n' },
		{ "exit-when-idle", no_argument, NULL, 'x' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	int ch;

	memset(a, 0, sizeof(*a));
	a->path = ADE_SYSCONFDIR "/ade/worker.conf";
	while ((ch = getopt_long(argc, argv, "c:dfhnxV", longopts, NULL)) !=
	    -1) {
		switch (ch) {
		case 'c':
			a->path = optarg;
			break;
		case 'd':
			a->debug = 1;
			break;
		case 'f':
			a->fg = 1;
			break;
		case 'n':
			a->check = 1;
			break;
		case 'x':
			a->idle = 1;
			break;
		case 'V':
			printf("ade-superd %s\n", ADE_VERSION);
			exit(0);
		case 'h':
			usage_to(stdout);
			exit(0);
		default:
			usage();
		}
	}
	if (optind != argc)
		usage();
}

/*
 * Logging as the configuration says (stderr with -d), echoed to the
 * terminal until the daemon is ready.  -1 when the log file cannot be
 * opened.
 */
static int
start_logging(const struct conf *conf, int debug)
{
	enum log_level level;

	if (debug)
		log_init(LOG_DEST_STDERR, NULL, "ade-superd");
	else if (conf->log_file[0] != '\0') {
		if (log_init(LOG_DEST_FILE, conf->log_file, "ade-superd") ==
		    -1) {
			fprintf(stderr, "ade-superd: log_file %s: %s\n",
			    conf->log_file, strerror(errno));
			return -1;
		}
	} else
		log_init(LOG_DEST_SYSLOG, NULL, "ade-superd");
	if (log_parse_level(conf->log_level, &level) == 0)
		log_setlevel(level);
	log_setrole("supervisor");
	/* Until it is ready, the terminal hears of errors too. */
	log_echo(2);
	return 0;
}

int
main(int argc, char *argv[])
{
	char abs[PATH_MAX];
	struct conf *conf;
	struct args a;
	struct buf errs;
	const char *path;
	int ready = -1, rc;

	/* optarg must point into a copy: titles overwrite the original. */
	argv = proctitle_init(argc, argv);
	parse_args(argc, argv, &a);
	path = a.path;

	/* -n and a real start check the same things and fail the same way. */
	conf = conf_new();
	buf_init(&errs);
	if (conf_load(conf, path, &errs) == -1 ||
	    conf_check_host(conf, &errs) == -1) {
		fputs(buf_str(&errs), stderr);
		buf_free(&errs);
		conf_free(conf);
		return WORKER_EXIT_CONFIG;
	}
	buf_free(&errs);
	if (a.check) {
		printf("%s: configuration OK\n", path);
		conf_free(conf);
		return 0;
	}
	/*
	 * HUP reads the file again after chdir("/"), and the workers keep it
	 * out of the engines' sandbox by its real path.
	 */
	if (realpath(path, abs) != NULL) {
		path = abs;
		free(conf->path);
		conf->path = xstrdup(abs);
	}
	if (start_logging(conf, a.debug) == -1)
		return WORKER_EXIT_CONFIG;
	if (strcmp(conf->engine_sandbox, "auto") == 0 && sandbox_abi() == 0)
		log_warnx("engine_sandbox = auto: this kernel offers no "
		    "Landlock, so engines and builds run unconfined");

	if (conf->pidfile[0] != '\0' && pidfile_check(conf->pidfile) == -1)
		return WORKER_EXIT_CONFIG;
	if (priv_drop(conf, 1) == -1)
		return WORKER_EXIT_CONFIG;
	if (!a.fg)
		ready = daemonize();
	/* super_run frees conf (or the one a reload put in its place). */
	rc = super_run(conf, path, a.idle, &ready, conf->pidfile[0] != '\0' ?
	    conf->pidfile : NULL);
	if (ready != -1)
		daemon_failed(ready, rc != 0 ? rc : WORKER_EXIT_ERROR);
	return rc;
}
