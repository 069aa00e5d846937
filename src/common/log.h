/*
 * Logging for every process of ade-superd: syslog by default, stderr in
 * the foreground, or an append-only file that can be reopened.  Each line
 * carries the role of the process that wrote it ("supervisor", "worker 2").
 */
#ifndef ADE_LOG_H
#define ADE_LOG_H

#include <stdarg.h>

enum log_level {
	LOG_LVL_ERROR,
	LOG_LVL_WARNING,
	LOG_LVL_NOTICE,
	LOG_LVL_INFO,
	LOG_LVL_DEBUG
};

enum log_dest {
	LOG_DEST_STDERR,
	LOG_DEST_SYSLOG,
	LOG_DEST_FILE
};

int	log_init(enum log_dest, const char *file, const char *ident);
int	log_reopen(void);
void	log_setlevel(enum log_level);
int	log_parse_level(const char *, enum log_level *);
void	log_setrole(const char *fmt, ...)
	    __attribute__((format(printf, 1, 2)));
int	log_enabled(enum log_level);
void	log_echo(int fd);

void	log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	log_notice(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	fatal(const char *fmt, ...)
	    __attribute__((format(printf, 1, 2), noreturn));
void	fatalx(const char *fmt, ...)
	    __attribute__((format(printf, 1, 2), noreturn));

#endif
