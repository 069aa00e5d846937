/*
 * Logging.  One destination per process, chosen at start-up; a level
 * filter; a role tag so that lines from the supervisor and from each
 * worker can be told apart.  log_warn appends strerror(errno), log_warnx
 * does not (the OpenBSD convention).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static enum log_dest	 log_dest = LOG_DEST_STDERR;
static enum log_level	 log_level = LOG_LVL_INFO;
static char		 log_role[64] = "ade";
static char		*log_file;
static int		 log_fd = -1;
static int		 log_echo_fd = -1;
static char		 log_ident[32] = "ade";

static const char *const level_names[] = {
	"error", "warning", "notice", "info", "debug"
};

static const int level_prio[] = {
	LOG_ERR, LOG_WARNING, LOG_NOTICE, LOG_INFO, LOG_DEBUG
};

static void	log_vwrite(enum log_level, int, const char *, va_list)
		    __attribute__((format(printf, 3, 0)));

int
log_init(enum log_dest dest, const char *file, const char *ident)
{
	log_dest = dest;
	snprintf(log_ident, sizeof(log_ident), "%s", ident);
	if (dest == LOG_DEST_SYSLOG)
		openlog(ident, LOG_PID | LOG_NDELAY, LOG_DAEMON);
	if (dest == LOG_DEST_FILE) {
		free(log_file);
		if ((log_file = strdup(file)) == NULL)
			return -1;
		return log_reopen();
	}
	return 0;
}

/*
 * Reopens the log file after a rotation.  The old descriptor is kept until
 * the new one is open, so a failed reopen loses nothing.
 */
int
log_reopen(void)
{
	int fd;

	if (log_dest != LOG_DEST_FILE)
		return 0;
	fd = open(log_file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (fd == -1)
		return -1;
	if (log_fd != -1)
		close(log_fd);
	log_fd = fd;
	return 0;
}

void
log_setlevel(enum log_level level)
{
	log_level = level;
}

int
log_parse_level(const char *s, enum log_level *out)
{
	static const struct {
		const char	*name;
		enum log_level	 level;
	} names[] = {
		{ "error", LOG_LVL_ERROR }, { "critical", LOG_LVL_ERROR },
		{ "warning", LOG_LVL_WARNING }, { "warn", LOG_LVL_WARNING },
		{ "notice", LOG_LVL_NOTICE }, { "info", LOG_LVL_INFO },
		{ "debug", LOG_LVL_DEBUG },
	};
	size_t i;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcasecmp(s, names[i].name) == 0) {
			*out = names[i].level;
			return 0;
		}
	return -1;
}

void
log_setrole(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(log_role, sizeof(log_role), fmt, ap);
	va_end(ap);
}

int
log_enabled(enum log_level level)
{
	return level <= log_level;
}

/*
 * Until a daemon is ready, whoever started it must see why it failed:
 * errors are written to fd as well ("ident: message"), unless the log
 * goes there anyway.  -1 stops that.
 */
void
log_echo(int fd)
{
	log_echo_fd = fd;
}

static void
log_echo_write(const char *msg)
{
	char line[2304];
	int n;

	if (log_echo_fd == -1 || (log_echo_fd == 2 &&
	    log_dest == LOG_DEST_STDERR))
		return;
	n = snprintf(line, sizeof(line), "%s: %s\n", log_ident, msg);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line)) {
		n = sizeof(line) - 1;
		line[n - 1] = '\n';
	}
	if (write(log_echo_fd, line, (size_t)n) == -1)
		return;
}

/*
 * Formats one line and hands it to the destination in a single write, so
 * that lines from several processes sharing a file or stderr never
 * interleave.  Control characters are replaced: messages may quote strings
 * that came from the database or from an engine.
 */
static void
log_vwrite(enum log_level level, int errnum, const char *fmt, va_list ap)
{
	char msg[2048], line[2304];
	struct timespec ts;
	struct tm tm;
	size_t i;
	int n;

	if (level > log_level)
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	for (i = 0; msg[i] != '\0'; i++)
		if ((unsigned char)msg[i] < 0x20 || msg[i] == 0x7f)
			msg[i] = '?';
	if (errnum != 0) {
		i = strlen(msg);
		snprintf(msg + i, sizeof(msg) - i, ": %s", strerror(errnum));
	}
	if (level == LOG_LVL_ERROR)
		log_echo_write(msg);
	if (log_dest == LOG_DEST_SYSLOG) {
		syslog(level_prio[level], "%s: %s", log_role, msg);
		return;
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = snprintf(line, sizeof(line),
	    "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ [%ld] %s %s: %s\n",
	    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
	    tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, (long)getpid(),
	    log_role, level_names[level], msg);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line)) {
		n = sizeof(line) - 1;
		line[n - 1] = '\n';
	}
	if (write(log_dest == LOG_DEST_FILE && log_fd != -1 ? log_fd : 2,
	    line, (size_t)n) == -1)
		return;
}

#define LOG_FN(name, level, witherr)					\
void									\
name(const char *fmt, ...)						\
{									\
	int saved = errno;						\
	va_list ap;							\
									\
	va_start(ap, fmt);						\
	log_vwrite(level, witherr ? saved : 0, fmt, ap);		\
	va_end(ap);							\
	errno = saved;							\
}

LOG_FN(log_error, LOG_LVL_ERROR, 0)
LOG_FN(log_warn, LOG_LVL_WARNING, 1)
LOG_FN(log_warnx, LOG_LVL_WARNING, 0)
LOG_FN(log_notice, LOG_LVL_NOTICE, 0)
LOG_FN(log_info, LOG_LVL_INFO, 0)
LOG_FN(log_debug, LOG_LVL_DEBUG, 0)

void
fatal(const char *fmt, ...)
{
	int saved = errno;
	va_list ap;

	va_start(ap, fmt);
	log_vwrite(LOG_LVL_ERROR, saved, fmt, ap);
	va_end(ap);
	exit(1);
}

void
fatalx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vwrite(LOG_LVL_ERROR, 0, fmt, ap);
	va_end(ap);
	exit(1);
}
