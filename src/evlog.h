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
	json_t	*context;
	size_t	 cap;		/* bytes of child output per log */
	size_t	 written;
	long	 dropped;
	json_t	*completed;	/* data of the last engine.run.completed */
};

int	evlog_open(struct evlog *, const char *path, json_t *context,
	    size_t cap);
void	evlog_close(struct evlog *);
void	evlog_emit(struct evlog *, const char *level, const char *event,
	    const char *message, json_t *data);
void	evlog_child_line(struct evlog *, const char *scope, int stream,
	    const char *line, size_t len, size_t full_len);

#endif
