/*
 * Event logs.  Each record is one JSON object on one line, written with
 * a single write(2) to a file opened for appending, so records never
 * interleave.  Child output is hostile: a line that is a JSON object with
 * an "event" member is kept as it is (plus our context); anything else,
 * including invalid UTF-8 and cut-off lines, becomes a "<scope>.stdout"
 * or "<scope>.stderr" record whose message is repaired text.
 *
 * The size limit counts the records as written (a one-byte line becomes
 * a record of a few hundred bytes), so that a flooding engine cannot
 * fill the disk; child output beyond it is counted, not written, and the
 * completion event is still read.  The engine.run.completed line may be
 * longer than other lines (max_completed): it carries the results.  One
 * that is cut or is not valid JSON is remembered as such, so that the
 * run can say what went wrong instead of that there was none.
 *
 * When the file system refuses a record (a full disk, a file size
 * limit), the log says so once to the daemon's log, keeps trying with
 * the next records, and at the end writes a run.log.incomplete record
 * with the number lost, which lands if space has come back.
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
#define COMPLETED	"engine.run.completed"

int
evlog_open(struct evlog *ev, const char *path, json_t *context, size_t cap)
{
	memset(ev, 0, sizeof(*ev));
	ev->context = context;
	ev->cap = cap;
	snprintf(ev->path, sizeof(ev->path), "%s", path);
	ev->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC |
	    O_NOFOLLOW, 0640);
	if (ev->fd == -1) {
		log_warn("open %s", path);
		return -1;
	}
	return 0;
}

/*
 * Appends one record (s holds n bytes and ends with a newline).  A
 * record the file system takes only in part is taken back, so that the
 * log stays a sequence of whole lines.
 */
static int
evlog_append(struct evlog *ev, const char *s, size_t n)
{
	ssize_t w;
	off_t end;

	if (ev->fd == -1)
		return -1;
	do
		w = write(ev->fd, s, n);
	while (w == -1 && errno == EINTR);
	if (w == (ssize_t)n) {
		ev->written += n;
		return 0;
	}
	if (w >= 0) {
		if ((end = lseek(ev->fd, 0, SEEK_CUR)) != -1)
			(void)ftruncate(ev->fd, end - w);
		if (w > 0 || errno == 0)
			errno = ENOSPC;
	}
	if (ev->lost++ == 0) {
		ev->lost_errno = errno;
		log_warnx("%s: event log write: %s; this log's records are "
		    "lost until it can be written again", ev->path,
		    strerror(errno));
	}
	return -1;
}

/* Serializes a record; the text ends with a newline (no NUL counted). */
static char *
record_text(json_t *rec, size_t *n)
{
	char *s;

	if ((s = json_dumps(rec, JSON_COMPACT)) == NULL)
		return NULL;
	*n = strlen(s);
	s[(*n)++] = '\n';	/* json_dumps leaves room for the NUL */
	return s;
}

static void
evlog_write(struct evlog *ev, json_t *rec)
{
	char *s;
	size_t n;

	if (ev->fd == -1 || (s = record_text(rec, &n)) == NULL)
		return;
	evlog_append(ev, s, n);
	free(s);
}

/*
 * Writes the record of a child line unless it would take the log past
 * its cap.  Returns 0, or -1 when the line was dropped.
 */
static int
evlog_write_child(struct evlog *ev, json_t *rec)
{
	char *s;
	size_t n;

	if (ev->written >= ev->cap) {
		ev->dropped++;
		return -1;
	}
	if ((s = record_text(rec, &n)) == NULL)
		return -1;
	if (ev->written + n > ev->cap) {
		ev->dropped++;
		free(s);
		return -1;
	}
	evlog_append(ev, s, n);
	free(s);
	return 0;
}

/*
 * Writes an engine's JSON line as it came, with our context added as its
 * last member, so that a long line (a completion event of megabytes) is
 * not serialized again.  The line is a valid JSON object without a
 * context member and without carriage returns (which a reader might take
 * for line ends).
 */
static void
evlog_write_spliced(struct evlog *ev, const char *line, size_t len)
{
	struct buf b;
	char *ctx;
	size_t end = len;

	if (ev->written >= ev->cap) {
		ev->dropped++;
		return;
	}
	while (end > 0 && line[end - 1] != '}')
		end--;
	ctx = ev->context != NULL ? json_dumps(ev->context, JSON_COMPACT) :
	    xstrdup("{}");
	if (ctx == NULL || end == 0)
		goto out;
	buf_init(&b);
	buf_add(&b, line, end - 1);
	buf_addstr(&b, ",\"context\":");
	buf_addstr(&b, ctx);
	buf_addstr(&b, "}\n");
	if (ev->written + b.len > ev->cap)
		ev->dropped++;
	else
		evlog_append(ev, b.data, b.len);
	buf_free(&b);
out:
	free(ctx);
}

/* Writes, once, that records of this log were lost. */
void
evlog_note_loss(struct evlog *ev)
{
	if (ev->lost == 0 || ev->loss_noted)
		return;
	ev->loss_noted = 1;
	evlog_emit(ev, "warning", "run.log.incomplete", "Records of this log "
	    "could not be written; the log is incomplete", json_pack(
	    "{s:I, s:s}", "lost_records", (json_int_t)ev->lost, "error",
	    strerror(ev->lost_errno)));
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
	evlog_note_loss(ev);
	if (ev->fd != -1)
		close(ev->fd);
	ev->fd = -1;
	json_decref(ev->context);
	json_decref(ev->completed);
	ev->context = ev->completed = NULL;
}

/* A worker record; data is taken over (NULL means an empty object). */
static json_t *
worker_record(struct evlog *ev, const char *level, const char *event,
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
	return rec;
}

void
evlog_emit(struct evlog *ev, const char *level, const char *event,
    const char *message, json_t *data)
{
	json_t *rec = worker_record(ev, level, event, message, data);

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

static const char *
skip_space(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\r'))
		p++;
	return p;
}

/*
 * Whether the head of a line names the completion event: a member
 * "event" whose value is "engine.run.completed".  Used only for lines
 * that cannot be parsed (cut, or not valid JSON), to tell a lost
 * completion from any other odd line.
 */
static int
names_completed(const char *s, size_t len)
{
	static const char key[] = "\"event\"";
	const char *end = s + len, *p = s, *q;

	while ((p = memmem(p, (size_t)(end - p), key, sizeof(key) - 1)) !=
	    NULL) {
		q = skip_space(p + sizeof(key) - 1, end);
		p += sizeof(key) - 1;
		if (q >= end || *q != ':')
			continue;
		q = skip_space(q + 1, end);
		if ((size_t)(end - q) >= sizeof(COMPLETED) + 1 && *q == '"' &&
		    memcmp(q + 1, COMPLETED, sizeof(COMPLETED) - 1) == 0 &&
		    q[sizeof(COMPLETED)] == '"')
			return 1;
	}
	return 0;
}

/*
 * The limit of a line that has reached max_event_line: a completion
 * event may be longer, up to max_completed.
 */
size_t
evlog_line_limit(struct evlog *ev, const char *head, size_t len)
{
	if (ev->max_completed > 0 && len > 0 && head[0] == '{' &&
	    names_completed(head, len))
		return ev->max_completed;
	return 0;
}

/* Parses a completion line that the plain parse refused, or says why. */
static json_t *
completed_retry(struct evlog *ev, const char *line, size_t len,
    size_t full_len, const json_error_t *first)
{
	json_error_t err;
	json_t *obj;

	if (len < full_len) {
		snprintf(ev->completed_error, sizeof(ev->completed_error),
		    "the engine.run.completed event is %zu bytes, over "
		    "max_completion_size (%zu); raise it to store this run's "
		    "results", full_len, ev->max_completed);
		return NULL;
	}
	/*
	 * An integer beyond 64 bits is still a number: read them all as
	 * reals, and let the mapping drop what no column can hold.
	 */
	if (json_error_code(first) == json_error_numeric_overflow &&
	    (obj = json_loadb(line, len, JSON_REJECT_DUPLICATES |
	    JSON_DECODE_INT_AS_REAL, &err)) != NULL)
		return obj;
	snprintf(ev->completed_error, sizeof(ev->completed_error),
	    "the engine.run.completed event is not valid JSON: %s "
	    "(at byte %d)", first->text, first->position);
	return NULL;
}

/* Takes note of an engine.run.completed event (the last one counts). */
static void
completed_seen(struct evlog *ev, json_t *obj)
{
	json_t *data = json_object_get(obj, "data");

	json_decref(ev->completed);
	ev->completed = NULL;
	ev->completed_error[0] = '\0';
	if (json_is_object(data))
		ev->completed = json_incref(data);
	else
		snprintf(ev->completed_error, sizeof(ev->completed_error),
		    "the engine.run.completed event has no data object");
}

void
evlog_child_line(struct evlog *ev, const char *scope, int stream,
    const char *line, size_t len, size_t full_len)
{
	json_t *obj = NULL, *data, *evname, *rec;
	json_error_t err;
	struct buf text;
	char event[96];

	if (blank(line, len) && len == full_len)
		return;
	memset(&err, 0, sizeof(err));
	if (len == full_len && line[0] == '{')
		obj = json_loadb(line, len, JSON_REJECT_DUPLICATES, &err);
	if (obj == NULL && line[0] == '{' && names_completed(line,
	    len < 4096 ? len : 4096)) {
		obj = completed_retry(ev, line, len, full_len, &err);
		if (obj == NULL) {
			json_decref(ev->completed);
			ev->completed = NULL;
		}
	}
	evname = json_object_get(obj, "event");
	if (json_is_object(obj) && json_is_string(evname)) {
		if (strcmp(json_string_value(evname), COMPLETED) == 0)
			completed_seen(ev, obj);
		if (json_object_get(obj, "context") == NULL &&
		    memchr(line, '\r', len) == NULL) {
			json_decref(obj);
			evlog_write_spliced(ev, line, len);
			return;
		}
		if (ev->context != NULL)
			json_object_set(obj, "context", ev->context);
		else
			json_object_set_new(obj, "context", json_object());
		evlog_write_child(ev, obj);
		json_decref(obj);
		return;
	}
	json_decref(obj);
	if (ev->written >= ev->cap) {
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
	rec = worker_record(ev, "info", event, buf_str(&text), data);
	evlog_write_child(ev, rec);
	json_decref(rec);
	buf_free(&text);
}
