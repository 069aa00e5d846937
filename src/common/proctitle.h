/*
 * Process titles: what ps(1) and /proc/PID/cmdline show for the
 * supervisor, each worker and the maintenance process.
 */
#ifndef ADE_PROCTITLE_H
#define ADE_PROCTITLE_H

char	**proctitle_init(int argc, char *argv[]);
void	  proctitle_setrole(const char *name, const char *fmt, ...)
	    __attribute__((format(printf, 2, 3)));
void	  proctitle_setstate(const char *state, const char *id);

#endif
