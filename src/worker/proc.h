/*
 * Running one child (a build step or the engine) under watch: its own
 * process group, a clean environment and no inherited descriptors; its
 * output read line by line with a cap on line length; heartbeats while it
 * runs; a deadline; and the stop sequence TERM, 5 seconds, KILL.
 */
#ifndef ADE_PROC_H
#define ADE_PROC_H

#include <signal.h>
#include <stddef.h>
#include <sys/types.h>

struct sandbox;

#define PROC_EXIT_TIMEOUT	124
#define PROC_KILL_GRACE		5.0

struct proc_spec {
	char *const		 *argv;
	char *const		 *envp;
	const char		 *cwd;
	double			  timeout;	/* seconds; 0 means none */
	double			  hb_interval;	/* seconds; 0 means none */
	double			  lost_after;	/* no good heartbeat for so
						   long: the claim is lost */
	double			 *last_good;	/* when the last heartbeat got
						   through, kept across the
						   children of one job; NULL or
						   0: from this child's start */
	int			(*heartbeat)(void *);	/* 1, 0 lost, -1 */
	void			(*on_line)(void *, int fd, const char *,
				    size_t len, size_t full_len);
	/* A longer limit for a line whose first max_line bytes are given,
	   or 0; NULL: every line is cut at max_line. */
	size_t			(*line_limit)(void *, const char *, size_t);
	void			 *arg;
	size_t			  max_line;
	volatile sig_atomic_t	 *stop;		/* set: stop the child */
	const struct sandbox	 *sandbox;	/* NULL: unconfined */
};

struct proc_result {
	int	exit_code;	/* 128 + signal for a signal death */
	int	timed_out;
	int	lost;
	int	stopped;
	int	spawn_failed;
	double	duration;
	/* Where the time went, in seconds: starting the child (to its
	   exec), until its exit was seen, and from then to the return. */
	double	began;		/* now_mono() when the spawn began */
	double	spawn;
	double	until_exit;
	double	after_exit;
};

int	proc_run(const struct proc_spec *, struct proc_result *);
int	proc_adopt_orphans(void);
void	proc_end_descendants(void);
int	proc_kill_children(int (*keep)(pid_t));
char  **proc_env(const char *path_prefix, int keep_pip, char *const *extra);

extern volatile pid_t proc_current_pgid;

#endif
