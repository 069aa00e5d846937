/*
 * Event logs.  Each record is one JSON object on one line, written with
 * a single write(2) to a file opened for appending, so records never
 * interleave.  Child output is hostile: a line that is a JSON object with
 * an "event" member is kept as it is (plus our context); anything else,
 * including invalid UTF-8 and cut-off lines, becomes a "<scope>.stdout"
 * or "<scope>.stderr" record whose message is repaired text.  Child
 * output beyond the cap is counted, not written, so a flooding engine
 * cannot fill the disk; the completion event is still read.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "evlog.h"
#include "log.h"
#include "util.h"

#define CUT_MESSAGE	4096	/* bytes of a cut-off line that are kept */

int
evlog_open(struct evlog *ev, const char *path, json_t *context, size_t cap)
{
	memset(ev, 0, sizeof(*ev));
	ev->context = context;
	ev->cap = cap;
	ev->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC |
	    O_NOFOLLOW, 0640);
	if (ev->fd == -1) {
		log_warn("open %s", path);
		return -1;
	}
	return 0;
}

static void
evlog_write(struct evlog *ev, json_t *rec)
{
	char *s;
	size_t n;
	ssize_t w;

	if (ev->fd == -1)
		return;
	if ((s = json_dumps(rec, JSON_COMPACT)) == NULL)
		return;
	n = strlen(s);
	s[n] = '\n';	/* json_dumps leaves room for the NUL we replace */
	w = write(ev->fd, s, n + 1);
	if (w == -1)
		log_warn("event log write");
	free(s);
}

void
evlog_close(struct evlog *ev)
{
	if (ev->dropped > 0) {
		json_t *d = json_pack("{s:I, s:I}", "dropped_lines",
		    (json_int_t)ev->dropped, "cap_bytes", (json_int_t)ev->cap);

		evlog_emit(ev, "warning", "run.log.truncated", "Child output "
		    "beyond the log size limit was not written", d);
	}
	if (ev->fd != -1)
		close(ev->fd);
	ev->fd = -1;
	json_decref(ev->context);
	json_decref(ev->completed);
	ev->context = ev->completed = NULL;
}

/* A worker record; data is taken over (NULL means an empty object). */
void
evlog_emit(struct evlog *ev, const char *level, const char *event,
    const char *message, json_t *data)
{
	char ts[40];
	json_t *rec;

	iso8601_now(ts, sizeof(ts));
	rec = json_object();
	json_object_set_new(rec, "timestamp", json_string(ts));
	json_object_set_new(rec, "level", json_string(level));
	json_object_set_new(rec, "event", json_string(event));
	json_object_set_new(rec, "message", json_string(message));
	json_object_set_new(rec, "data", data != NULL ? data : json_object());
	if (ev->context != NULL && json_object_size(ev->context) > 0)
		json_object_set(rec, "context", ev->context);
	evlog_write(ev, rec);
	json_decref(rec);
}

static int
blank(const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
			return 0;
	return 1;
}

void
evlog_child_line(struct evlog *ev, const char *scope, int stream,
    const char *line, size_t len, size_t full_len)
{
	json_t *obj = NULL, *data, *evname;
	struct buf text;
	char event[96];
	int over;

	if (blank(line, len) && len == full_len)
		return;
	if (len == full_len && line[0] == '{')
		obj = json_loadb(line, len, JSON_REJECT_DUPLICATES, NULL);
	evname = json_object_get(obj, "event");
	over = ev->written + len > ev->cap;
	if (json_is_object(obj) && json_is_string(evname)) {
		if (strcmp(json_string_value(evname),
		    "engine.run.completed") == 0) {
			json_decref(ev->completed);
			ev->completed = json_incref(json_object_get(obj,
			    "data"));
		}
		if (over) {
			ev->dropped++;
			json_decref(obj);
			return;
		}
		json_object_set(obj, "context", ev->context != NULL ?
		    ev->context : json_object());
		evlog_write(ev, obj);
		ev->written += len;
		json_decref(obj);
		return;
	}
	json_decref(obj);
	if (over) {
		ev->dropped++;
		return;
	}
	buf_init(&text);
	utf8_repair(line, len < full_len && len > CUT_MESSAGE ? CUT_MESSAGE :
	    len, &text);
	data = json_object();
	if (len < full_len) {
		json_object_set_new(data, "truncated", json_true());
		json_object_set_new(data, "line_bytes",
		    json_integer((json_int_t)full_len));
	}
	snprintf(event, sizeof(event), "%s.%s", scope,
	    stream == 1 ? "stdout" : "stderr");
	evlog_emit(ev, "info", event, buf_str(&text), data);
	ev->written += text.len;
	buf_free(&text);
}
