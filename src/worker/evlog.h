/*
 * A run's or an environment's event log (logs/events.ndjson): the
 * engine's JSON events with a context object added, other child output
 * wrapped as records, and the worker's own records.
 */
#ifndef ADE_EVLOG_H
#define ADE_EVLOG_H

#include <stddef.h>

#include <jansson.h>

struct evlog {
	int	 fd;
	char	 path[512];	/* for the one warning a failing log gets */
	json_t	*context;
	size_t	 cap;		/* bytes of child output records per log */
	size_t	 written;	/* bytes written, records of every kind */
	long	 dropped;	/* child lines beyond the cap */
	size_t	 max_completed;	/* longest engine.run.completed line read */
	json_t	*completed;	/* data of the last engine.run.completed */
	char	 completed_error[256];	/* why the last one was unusable */
	long	 lost;		/* records the file system refused */
	int	 lost_errno;	/* the first refusal's errno */
	int	 loss_noted;	/* run.log.incomplete was written */
};

int	evlog_open(struct evlog *, const char *path, json_t *context,
	    size_t cap);
void	evlog_close(struct evlog *);
void	evlog_emit(struct evlog *, const char *level, const char *event,
	    const char *message, json_t *data);
void	evlog_child_line(struct evlog *, const char *scope, int stream,
	    const char *line, size_t len, size_t full_len);
size_t	evlog_line_limit(struct evlog *, const char *head, size_t len);
void	evlog_note_loss(struct evlog *);

#endif
