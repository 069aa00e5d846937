/*
 * The dashboard: HTML pages served by the HTTP endpoint, with no build
 * step and no asset from elsewhere.  Tables work without JavaScript; a
 * small script (/ui.js) follows a run's or a build's log live through
 * Server-Sent Events.
 *
 *	GET /			workers, queue, charts, runs, environments
 *	GET /runs/ID		a run: its row, metrics and event log
 *	GET /runs/ID/events	the event log as an event stream
 *	GET /envs/ID		an environment and its last build's log
 *	GET /envs/ID/events	that log as an event stream
 *	POST /runs/ID/cancel, /runs/ID/requeue, /envs/ID/rebuild
 *
 * Every value from the database or an engine is escaped (and invalid
 * UTF-8 repaired) before it reaches a page; scripts add text only as
 * text.  The actions are off unless [http] actions is set, and each asks
 * for the token of token_file, which no page ever holds.  A request from
 * another site is refused, whatever it carries.
 *
 * A stream's event ids are "inode-offset" of the log file: a client that
 * reconnects with Last-Event-ID goes on where it was, or starts again
 * (after a "reset" event) when the file is a new one.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "conf.h"
#include "http_impl.h"
#include "log.h"
#include "paths.h"
#include "scoreboard.h"
#include "store.h"
#include "util.h"

#define LOG_TAIL	(256 * 1024)	/* bytes of a log a page shows */
#define STREAM_PAUSE	250000		/* microseconds between looks */
#define STREAM_CHECK	2.0		/* seconds between database looks */
#define STREAM_GRACE	10.0		/* for the last event, once over */
#define STREAM_KEEP	15.0		/* seconds between keep-alives */
#define STREAM_MAX	3600.0		/* then the client reconnects */

static const struct conf *conf;
static unsigned char token_md[EVP_MAX_MD_SIZE];
static unsigned token_md_len;	/* 0: the actions are off */

static const char css[] =
"body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}"
"h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.5em}"
"table{border-collapse:collapse;margin:.5em 0}"
"td,th{border-bottom:1px solid #ddd;padding:.2em .6em;text-align:left;"
"vertical-align:top;max-width:40em;overflow-wrap:break-word}"
"th{background:#f4f4f4;white-space:nowrap}.num{text-align:right}"
".succeeded,.ready{color:#17632b}.failed{color:#a01818}"
".running,.building{color:#1f4fa0}.queued{color:#7a5b00}"
"nav a{margin-right:1em}svg{background:#fafafa;border:1px solid #ddd}"
"form{display:inline-block;margin-right:1em}code{font-size:.95em}"
".nw{white-space:nowrap}";

static const char js[] =
"(function(){\n"
"var t=document.getElementById('log'),s=document.getElementById('live');\n"
"if(!t||!window.EventSource)return;\n"
"var es=new EventSource(t.getAttribute('data-stream'));\n"
"function cell(r,x){var c=document.createElement('td');\n"
" c.textContent=x==null?'':String(x);r.appendChild(c);}\n"
"es.onmessage=function(e){var r;\n"
" try{r=JSON.parse(e.data);}catch(x){r={message:e.data};}\n"
" if(r===null||typeof r!=='object')r={message:e.data};\n"
" var tr=document.createElement('tr');cell(tr,r.timestamp);\n"
" cell(tr,r.level);cell(tr,r.event);cell(tr,r.message);\n"
" t.appendChild(tr);s.textContent='live';};\n"
"es.addEventListener('reset',function(){t.textContent='';});\n"
"es.addEventListener('end',function(){es.close();\n"
" s.textContent='finished';});\n"
"es.onerror=function(){if(s.textContent!=='finished')\n"
" s.textContent='reconnecting';};\n"
"})();\n";

/* Text for a page: valid UTF-8, markup escaped, controls as "?". */
static void
esc(struct buf *b, const char *s)
{
	struct buf u;
	const unsigned char *p;

	if (s == NULL)
		return;
	buf_init(&u);
	utf8_repair(s, strlen(s), &u);
	for (p = (const unsigned char *)buf_str(&u); *p != '\0'; p++)
		switch (*p) {
		case '&': buf_addstr(b, "&amp;"); break;
		case '<': buf_addstr(b, "&lt;"); break;
		case '>': buf_addstr(b, "&gt;"); break;
		case '"': buf_addstr(b, "&quot;"); break;
		case '\'': buf_addstr(b, "&#39;"); break;
		default:
			if (*p < 0x20 || *p == 0x7f)
				buf_add(b, "?", 1);
			else
				buf_add(b, p, 1);
		}
	buf_free(&u);
}

/*
 * At most max bytes of s as text, cut between characters, with "..." when
 * cut; the whole text goes in a title attribute for the mouse to show.
 */
static void
esc_short(struct buf *b, const char *s, size_t max)
{
	struct buf u;
	size_t n;

	if (s == NULL)
		return;
	buf_init(&u);
	utf8_repair(s, strlen(s), &u);
	n = u.len;
	if (n <= max) {
		esc(b, buf_str(&u));
		buf_free(&u);
		return;
	}
	n = max;
	while (n > 0 && ((unsigned char)u.data[n] & 0xc0) == 0x80)
		n--;
	buf_addstr(b, "<span title=\"");
	esc(b, buf_str(&u));
	buf_addstr(b, "\">");
	u.data[n] = '\0';
	esc(b, u.data);
	buf_addstr(b, "...</span>");
	buf_free(&u);
}

/* A JSON member as text: strings as they are, other values as JSON. */
static const char *
text_of(json_t *o, const char *key, char *tmp, size_t len)
{
	json_t *v = json_object_get(o, key);
	char *dump;

	if (v == NULL || json_is_null(v))
		return "";
	if (json_is_string(v))
		return json_string_value(v);
	dump = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
	snprintf(tmp, len, "%s", dump != NULL ? dump : "");
	free(dump);
	return tmp;
}

/* A cell of a JSON member; class "nw" keeps ids and times on one line. */
static void
cell_class(struct buf *b, json_t *o, const char *key, const char *class)
{
	char tmp[256];

	buf_printf(b, "<td%s%s%s>", class != NULL ? " class=\"" : "",
	    class != NULL ? class : "", class != NULL ? "\"" : "");
	esc(b, text_of(o, key, tmp, sizeof(tmp)));
	buf_addstr(b, "</td>");
}

static void
cell(struct buf *b, json_t *o, const char *key)
{
	cell_class(b, o, key, NULL);
}

/* A status cell, coloured by its (known) value. */
static void
status_cell(struct buf *b, const char *status)
{
	static const char *const known[] = {
		"queued", "running", "succeeded", "failed", "cancelled",
		"building", "ready"
	};
	size_t i;

	buf_addstr(b, "<td");
	for (i = 0; i < NELEM(known); i++)
		if (strcmp(status, known[i]) == 0)
			buf_printf(b, " class=\"%s\"", known[i]);
	buf_addstr(b, ">");
	esc(b, status);
	buf_addstr(b, "</td>");
}

static void
page_begin(struct buf *b, const char *title)
{
	buf_addstr(b, "<!DOCTYPE html>\n<html lang=\"en\"><head>"
	    "<meta charset=\"utf-8\"><meta name=\"viewport\" "
	    "content=\"width=device-width\"><title>");
	esc(b, title);
	buf_addstr(b, " - ade-superd</title><link rel=\"stylesheet\" "
	    "href=\"/ui.css\"></head><body><nav><a href=\"/\">Dashboard</a>"
	    "<a href=\"/?status=failed\">Failed runs</a>"
	    "<a href=\"/metrics\">Metrics</a></nav><h1>");
	esc(b, title);
	buf_addstr(b, "</h1>\n");
}

static void
page_end(struct buf *b, int script)
{
	if (script)
		buf_addstr(b, "<script src=\"/ui.js\"></script>");
	buf_addstr(b, "</body></html>\n");
}

static enum MHD_Result
send_page(struct MHD_Connection *conn, unsigned code, struct buf *b)
{
	struct MHD_Response *r;
	enum MHD_Result ret;

	r = MHD_create_response_from_buffer(b->len, b->data,
	    MHD_RESPMEM_MUST_COPY);
	buf_free(b);
	if (r == NULL)
		return MHD_NO;
	MHD_add_response_header(r, "Content-Type", "text/html; charset=utf-8");
	MHD_add_response_header(r, "Cache-Control", "no-store");
	MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
	/* Not "no-referrer": a browser would then send a form's Origin as "null". */
	MHD_add_response_header(r, "Referrer-Policy", "same-origin");
	MHD_add_response_header(r, "Content-Security-Policy",
	    "default-src 'none'; script-src 'self'; style-src 'self'; "
	    "connect-src 'self'; img-src 'self'; form-action 'self'; "
	    "frame-ancestors 'none'; base-uri 'none'");
	ret = MHD_queue_response(conn, code, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result
message_page(struct MHD_Connection *conn, unsigned code, const char *title,
    const char *text)
{
	struct buf b;

	buf_init(&b);
	page_begin(&b, title);
	buf_addstr(&b, "<p>");
	esc(&b, text);
	buf_addstr(&b, "</p>");
	page_end(&b, 0);
	return send_page(conn, code, &b);
}

/* Whether s is an id as the database writes them (a UUID's letters). */
static int
id_ok(const char *s, size_t n)
{
	size_t i;

	if (n == 0 || n > 36)
		return 0;
	for (i = 0; i < n; i++)
		if (strchr("0123456789abcdefABCDEF-", s[i]) == NULL)
			return 0;
	return 1;
}

/*
 * Splits "/runs/ID/rest" (prefix "/runs/"): the id into id (37 bytes)
 * and what follows it, "" or "/rest", into *rest.  0, or -1 when the url
 * is not such a path.
 */
static int
split_path(const char *url, const char *prefix, char *id, const char **rest)
{
	size_t n = strlen(prefix), k;

	if (strncmp(url, prefix, n) != 0)
		return -1;
	url += n;
	k = strcspn(url, "/");
	if (!id_ok(url, k))
		return -1;
	memcpy(id, url, k);
	id[k] = '\0';
	*rest = url + k;
	return 0;
}

/* --- charts --------------------------------------------------------- */

/*
 * An SVG line of values over the last span seconds (a point each, and a
 * dot on each point so that a lone one shows), with its highest value.
 */
static void
chart(struct buf *b, const char *title, const double *v, const time_t *at,
    size_t n, time_t now, double span)
{
	const double w = 600, h = 120;
	struct buf pts;
	double max = 0, x, y;
	size_t i;

	for (i = 0; i < n; i++)
		if (v[i] > max)
			max = v[i];
	buf_printf(b, "<figure><figcaption>%s: last %.0f min, highest %.1f"
	    "</figcaption><svg width=\"%.0f\" height=\"%.0f\" role=\"img\" "
	    "viewBox=\"0 0 %.0f %.0f\">", title, span / 60.0, max, w, h, w, h);
	buf_init(&pts);
	for (i = 0; i < n; i++) {
		x = w - 4 - (double)(now - at[i]) / span * (w - 8);
		y = h - 4 - (max > 0 ? v[i] / max * (h - 8) : 0);
		buf_printf(&pts, "%.1f,%.1f ", x, y);
		buf_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2\" "
		    "fill=\"#1f4fa0\"/>", x, y);
	}
	buf_printf(b, "<polyline fill=\"none\" stroke=\"#1f4fa0\" "
	    "stroke-width=\"2\" points=\"%s\"/></svg>%s</figure>\n",
	    buf_str(&pts), n == 0 ? "<p>No points yet: one comes with each "
	    "stats line (stats_period).</p>" : "");
	buf_free(&pts);
}

/*
 * Queue depth and throughput from the points of the stats lines: over
 * the last hour, or less while the daemon has not run that long (five
 * minutes at least).
 */
static void
charts(struct buf *b)
{
	double depth[SB_HISTORY], rate[SB_HISTORY], span;
	time_t at[SB_HISTORY], now = time(NULL);
	unsigned next = scoreboard->history_next, k;
	const struct sb_point *p;
	size_t n = 0;

	for (k = next > SB_HISTORY ? next - SB_HISTORY : 0; k < next; k++) {
		p = &scoreboard->history[k % SB_HISTORY];
		if (p->at < now - 3600 || p->at > now)
			continue;
		at[n] = p->at;
		depth[n] = (double)p->due;
		rate[n] = p->seconds > 0 ? (double)p->finished * 60.0 /
		    p->seconds : 0;
		n++;
	}
	span = n > 0 ? (double)(now - at[0]) : 0;
	span = span < 300 ? 300 : span > 3600 ? 3600 : span;
	chart(b, "Queue depth (due runs)", depth, at, n, now, span);
	chart(b, "Throughput (runs finished per minute, this host)", rate,
	    at, n, now, span);
}

/* --- the dashboard ----------------------------------------------------- */

static void
workers_table(struct buf *b)
{
	const struct sb_slot *sb;
	char since[32];
	time_t t;
	int i;

	buf_addstr(b, "<h2>Workers</h2><table id=\"workers\"><tr><th>Slot"
	    "</th><th>PID</th><th>State</th><th>Job</th><th>Step</th>"
	    "<th>Since</th><th>Jobs done</th><th>Last error</th></tr>\n");
	for (i = 0; i < SB_MAX_SLOTS; i++) {
		sb = &scoreboard->slots[i];
		if (sb->pid == 0 && sb->state != SB_FAILED)
			continue;
		buf_printf(b, "<tr><td class=\"num\">%d</td><td class=\"num\">"
		    "%ld</td>", i, (long)sb->pid);
		status_cell(b, sb->claim_kind != SB_CLAIM_NONE &&
		    sb->claim_id[0] == '\0' ? "claiming" :
		    scoreboard->poller == i + 1 && sb->state == SB_IDLE ?
		    "looking" : sb_state_name(sb->state));
		buf_addstr(b, "<td>");
		if (sb->claim_kind != SB_CLAIM_NONE && sb->claim_id[0] != '\0' &&
		    id_ok(sb->claim_id, strlen(sb->claim_id)))
			buf_printf(b, "<a href=\"/%s/%s\">%s %s</a>",
			    sb->claim_kind == SB_CLAIM_RUN ? "runs" : "envs",
			    sb->claim_id, sb->claim_kind == SB_CLAIM_RUN ?
			    "run" : "environment", sb->claim_id);
		buf_addstr(b, "</td><td>");
		esc(b, sb->step);
		t = sb->since;
		strftime(since, sizeof(since), "%Y-%m-%d %H:%M:%S",
		    gmtime(&t));
		buf_printf(b, "</td><td>%s</td><td class=\"num\">%ld</td><td>",
		    sb->since > 0 ? since : "", sb->jobs_done);
		esc(b, sb->last_error);
		buf_addstr(b, "</td></tr>\n");
	}
	buf_addstr(b, "</table>\n");
}

static void
queue_summary(struct buf *b)
{
	struct queue_stats q;
	char err[256];
	size_t i;

	buf_addstr(b, "<h2>Queue</h2>");
	if (!http_reading(&q, err, sizeof(err))) {
		buf_addstr(b, "<p class=\"failed\">Database unreachable: ");
		esc(b, err);
		buf_addstr(b, "</p>\n");
		return;
	}
	buf_printf(b, "<p>%ld due, the oldest waiting %.1f s.</p><table "
	    "id=\"queue\"><tr>", q.due, q.oldest_due);
	for (i = 0; i < RUN_STATUSES; i++)
		buf_printf(b, "<th><a href=\"/?status=%s\">%s</a></th>",
		    run_statuses[i], run_statuses[i]);
	buf_addstr(b, "</tr><tr>");
	for (i = 0; i < RUN_STATUSES; i++)
		buf_printf(b, "<td class=\"num\">%ld</td>", q.runs[i]);
	buf_addstr(b, "</tr></table>\n");
}

static void
runs_table(struct buf *b, const char *status)
{
	json_t *rows = NULL, *r;
	struct store *st;
	size_t i;

	buf_printf(b, "<h2>%s runs</h2>", status != NULL ? status : "Recent");
	http_lock();
	if ((st = http_store()) != NULL)
		rows = store_list_runs(st, status, 50);
	http_unlock();
	if (rows == NULL) {
		buf_addstr(b, "<p>Cannot list the runs.</p>\n");
		return;
	}
	buf_addstr(b, "<table id=\"runs\"><tr><th>Run</th><th>Status</th>"
	    "<th>Attempt</th><th>Started</th><th>Completed</th><th>Workspace"
	    " / configuration</th><th>Document</th><th>Error</th></tr>\n");
	json_array_foreach(rows, i, r) {
		const char *id = json_string_value(json_object_get(r, "id"));

		/* The id's first part is enough to tell runs apart. */
		buf_addstr(b, "<tr><td class=\"nw\">");
		if (id != NULL && id_ok(id, strlen(id)))
			buf_printf(b, "<a href=\"/runs/%s\" title=\"%s\">%.8s"
			    "</a>", id, id, id);
		buf_addstr(b, "</td>");
		status_cell(b, json_string_value(json_object_get(r,
		    "status")) ? json_string_value(json_object_get(r,
		    "status")) : "");
		buf_printf(b, "<td class=\"num\">%lld/%lld</td>",
		    (long long)json_integer_value(json_object_get(r,
		    "attempt_count")), (long long)json_integer_value(
		    json_object_get(r, "max_attempts")));
		cell_class(b, r, "started_at", "nw");
		cell_class(b, r, "completed_at", "nw");
		buf_addstr(b, "<td>");
		esc(b, json_string_value(json_object_get(r,
		    "workspace_slug")));
		buf_addstr(b, " / ");
		esc(b, json_string_value(json_object_get(r,
		    "configuration_name")));
		buf_addstr(b, "</td>");
		cell(b, r, "document_name");
		buf_addstr(b, "<td>");
		esc_short(b, json_string_value(json_object_get(r,
		    "error_message")), 120);
		buf_addstr(b, "</td>");
		buf_addstr(b, "</tr>\n");
	}
	buf_addstr(b, "</table>\n");
	json_decref(rows);
}

static json_t *
environments(void)
{
	struct store *st;
	json_t *rows = NULL;

	http_lock();
	if ((st = http_store()) != NULL)
		rows = store_list_environments(st);
	http_unlock();
	return rows;
}

static void
envs_table(struct buf *b)
{
	json_t *rows = environments(), *r;
	size_t i;

	buf_addstr(b, "<h2>Environments</h2>");
	if (rows == NULL) {
		buf_addstr(b, "<p>Cannot list the environments.</p>\n");
		return;
	}
	buf_addstr(b, "<table id=\"envs\"><tr><th>Environment</th><th>Status"
	    "</th><th>Last used</th><th>Python</th><th>Engine</th><th>Error"
	    "</th></tr>\n");
	json_array_foreach(rows, i, r) {
		const char *id = json_string_value(json_object_get(r, "id"));

		buf_addstr(b, "<tr><td>");
		if (id != NULL && id_ok(id, strlen(id)))
			buf_printf(b, "<a href=\"/envs/%s\">%s</a>", id, id);
		buf_addstr(b, "</td>");
		status_cell(b, json_string_value(json_object_get(r,
		    "status")) ? json_string_value(json_object_get(r,
		    "status")) : "");
		cell_class(b, r, "last_used_at", "nw");
		cell(b, r, "python_version");
		cell(b, r, "engine_version");
		cell(b, r, "error_message");
		buf_addstr(b, "</tr>\n");
	}
	buf_addstr(b, "</table>\n");
	json_decref(rows);
}

static enum MHD_Result
dashboard(struct MHD_Connection *conn)
{
	const char *status = MHD_lookup_connection_value(conn,
	    MHD_GET_ARGUMENT_KIND, "status");
	char host[128], title[200];
	struct buf b;
	size_t i;

	if (status != NULL) {
		for (i = 0; i < RUN_STATUSES; i++)
			if (strcmp(status, run_statuses[i]) == 0)
				break;
		if (i == RUN_STATUSES)
			return message_page(conn, 400, "Unknown status",
			    "A run's status is queued, running, succeeded, "
			    "failed or cancelled.");
	}
	if (gethostname(host, sizeof(host)) == -1)
		snprintf(host, sizeof(host), "this host");
	host[sizeof(host) - 1] = '\0';
	snprintf(title, sizeof(title), "ade-superd on %s", host);
	buf_init(&b);
	page_begin(&b, title);
	buf_printf(&b, "<p>Up %lld s%s.</p>\n",
	    (long long)(time(NULL) - scoreboard->started),
	    scoreboard->draining ? "; <strong>stopping</strong>" : "");
	workers_table(&b);
	queue_summary(&b);
	charts(&b);
	runs_table(&b, status);
	if (status == NULL)
		envs_table(&b);
	page_end(&b, 0);
	return send_page(conn, 200, &b);
}

/* --- logs ----------------------------------------------------------- */

/*
 * Renders the last LOG_TAIL bytes of a log as table rows, and the
 * stream position after them ("inode-offset") into pos.
 */
static void
log_rows(struct buf *b, const char *path, char *pos, size_t poslen)
{
	struct stat st;
	char *chunk, *line, *end;
	off_t from = 0;
	ssize_t n;
	json_t *rec;
	int fd;

	snprintf(pos, poslen, "0-0");
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return;
	if (fstat(fd, &st) == -1) {
		close(fd);
		return;
	}
	if (st.st_size > LOG_TAIL)
		from = st.st_size - LOG_TAIL;
	chunk = xmalloc(LOG_TAIL + 1);
	n = pread(fd, chunk, LOG_TAIL, from);
	close(fd);
	if (n < 0)
		n = 0;
	chunk[n] = '\0';
	line = chunk;
	/* A cut first line is not a record. */
	if (from > 0 && (line = strchr(chunk, '\n')) != NULL)
		line++;
	for (; line != NULL && (end = strchr(line, '\n')) != NULL;
	    line = end + 1) {
		*end = '\0';
		rec = json_loads(line, 0, NULL);
		buf_addstr(b, "<tr>");
		if (json_is_object(rec)) {
			cell_class(b, rec, "timestamp", "nw");
			cell(b, rec, "level");
			cell(b, rec, "event");
			cell(b, rec, "message");
		} else {
			buf_addstr(b, "<td></td><td></td><td></td><td>");
			esc(b, line);
			buf_addstr(b, "</td>");
		}
		buf_addstr(b, "</tr>\n");
		json_decref(rec);
		snprintf(pos, poslen, "%llu-%lld", (unsigned long long)
		    st.st_ino, (long long)(from + (end + 1 - chunk)));
	}
	free(chunk);
}

static void
log_table(struct buf *b, const char *path, const char *stream)
{
	char pos[64];
	struct buf rows;

	buf_init(&rows);
	log_rows(&rows, path, pos, sizeof(pos));
	buf_printf(b, "<h2>Event log <small id=\"live\"></small></h2>"
	    "<table><thead><tr><th>Time</th><th>Level</th><th>Event</th>"
	    "<th>Message</th></tr></thead><tbody id=\"log\" "
	    "data-stream=\"%s?from=%s\">", stream, pos);
	buf_add(b, rows.data, rows.len);
	buf_addstr(b, "</tbody></table>\n");
	buf_free(&rows);
}

static void
action_form(struct buf *b, const char *url, const char *label)
{
	if (token_md_len == 0)
		return;
	buf_printf(b, "<form method=\"post\" action=\"%s\"><input "
	    "type=\"password\" name=\"token\" placeholder=\"token\" "
	    "autocomplete=\"off\" required> <button>%s</button></form>",
	    url, label);
}

/* A JSON object as a two-column table. */
static void
object_table(struct buf *b, json_t *o, const char *id)
{
	const char *k;
	json_t *v;
	char tmp[256];

	buf_printf(b, "<table id=\"%s\">", id);
	json_object_foreach(o, k, v) {
		if (json_is_null(v))
			continue;
		buf_addstr(b, "<tr><th>");
		esc(b, k);
		buf_addstr(b, "</th><td>");
		esc(b, text_of(o, k, tmp, sizeof(tmp)));
		buf_addstr(b, "</td></tr>\n");
	}
	buf_addstr(b, "</table>\n");
}

static enum MHD_Result
run_page(struct MHD_Connection *conn, const char *id)
{
	char dir[PATH_MAX], path[PATH_MAX + 32], url[128];
	json_t *shown = NULL, *run, *metrics;
	struct store *st;
	struct buf b;

	http_lock();
	if ((st = http_store()) != NULL)
		shown = store_show_run(st, id);
	http_unlock();
	if (shown == NULL)
		return message_page(conn, 503, "Database unreachable",
		    "The run cannot be read now.");
	run = json_object_get(shown, "run");
	if (!json_is_object(run)) {
		json_decref(shown);
		return message_page(conn, 404, "No such run", id);
	}
	buf_init(&b);
	snprintf(path, sizeof(path), "Run %s", id);
	page_begin(&b, path);
	object_table(&b, run, "run");
	snprintf(url, sizeof(url), "/runs/%s/cancel", id);
	action_form(&b, url, "Cancel");
	snprintf(url, sizeof(url), "/runs/%s/requeue", id);
	action_form(&b, url, "Requeue");
	metrics = json_object_get(shown, "metrics");
	buf_addstr(&b, "<h2>Metrics</h2>");
	if (json_is_object(metrics))
		object_table(&b, metrics, "metrics");
	else
		buf_addstr(&b, "<p>None.</p>");
	buf_printf(&b, "<p>%zu fields, %zu table columns.</p>",
	    json_array_size(json_object_get(shown, "fields")),
	    json_array_size(json_object_get(shown, "table_columns")));
	path[0] = '\0';
	if (path_run_dir(dir, sizeof(dir), conf->data_dir,
	    json_string_value(json_object_get(run, "workspace_id")), id) == 0)
		snprintf(path, sizeof(path), "%s/logs/events.ndjson", dir);
	snprintf(url, sizeof(url), "/runs/%s/events", id);
	log_table(&b, path, url);
	json_decref(shown);
	page_end(&b, 1);
	return send_page(conn, 200, &b);
}

/* The environment's row, or NULL. */
static json_t *
find_env(const char *id)
{
	json_t *rows = environments(), *r, *found = NULL;
	size_t i;

	json_array_foreach(rows, i, r) {
		const char *rid = json_string_value(json_object_get(r, "id"));

		if (rid != NULL && strcasecmp(rid, id) == 0)
			found = json_incref(r);
	}
	json_decref(rows);
	return found;
}

static int
env_log_path(json_t *env, char *path, size_t len)
{
	char root[PATH_MAX];

	if (path_env_root(root, sizeof(root), conf->venvs_root,
	    json_string_value(json_object_get(env, "workspace_id")),
	    json_string_value(json_object_get(env, "configuration_id")),
	    json_string_value(json_object_get(env, "deps_digest")),
	    json_string_value(json_object_get(env, "id"))) == -1)
		return -1;
	snprintf(path, len, "%s/logs/events.ndjson", root);
	return 0;
}

static enum MHD_Result
env_page(struct MHD_Connection *conn, const char *id)
{
	char path[PATH_MAX + 32], url[128];
	json_t *env = find_env(id);
	struct buf b;

	if (env == NULL)
		return message_page(conn, 404, "No such environment", id);
	buf_init(&b);
	snprintf(path, sizeof(path), "Environment %s", id);
	page_begin(&b, path);
	object_table(&b, env, "environment");
	snprintf(url, sizeof(url), "/envs/%s/rebuild", id);
	action_form(&b, url, "Rebuild");
	if (env_log_path(env, path, sizeof(path)) == -1)
		path[0] = '\0';
	snprintf(url, sizeof(url), "/envs/%s/events", id);
	log_table(&b, path, url);
	json_decref(env);
	page_end(&b, 1);
	return send_page(conn, 200, &b);
}

/* --- event streams ----------------------------------------------------- */

struct stream {
	char		 path[PATH_MAX + 32];
	char		 id[40];
	int		 env;
	int		 fd;
	unsigned long long ino;
	long long	 off;		/* after the last whole line sent */
	unsigned long long want_ino;	/* where the client was */
	long long	 want_off;
	int		 resumed;	/* the client said where it was */
	struct buf	 pending;	/* read, not yet a whole line */
	struct buf	 out;		/* to send */
	size_t		 out_off;
	double		 started, sent, check_at, grace_end;
	int		 seen_last, ended;
};

/* Whether the run or build is over, by the database (under no lock). */
static int
stream_over(struct stream *s)
{
	json_t *r = NULL;
	struct store *st;
	const char *status;
	int over;

	if (s->env) {
		r = find_env(s->id);
		status = json_string_value(json_object_get(r, "status"));
		over = status != NULL && strcmp(status, "queued") != 0 &&
		    strcmp(status, "building") != 0;
		json_decref(r);
		return over;
	}
	http_lock();
	if ((st = http_store()) != NULL)
		r = store_show_run(st, s->id);
	http_unlock();
	if (r == NULL)
		return 0;
	status = json_string_value(json_object_get(json_object_get(r, "run"),
	    "status"));
	over = status == NULL || (strcmp(status, "queued") != 0 &&
	    strcmp(status, "running") != 0);
	json_decref(r);
	return over;
}

/* Turns whole lines read into events. */
static void
stream_lines(struct stream *s)
{
	size_t off = 0, len;
	char *nl;

	while ((nl = memchr(s->pending.data + off, '\n', s->pending.len -
	    off)) != NULL) {
		len = (size_t)(nl - s->pending.data) - off;
		s->off += (long long)len + 1;
		if (len > 0) {
			struct buf u;

			/* Records are one line each; data lines stay so. */
			buf_init(&u);
			utf8_repair(s->pending.data + off, len, &u);
			buf_printf(&s->out, "id: %llu-%lld\ndata: ", s->ino,
			    s->off);
			buf_add(&s->out, u.data, u.len);
			buf_addstr(&s->out, "\n\n");
			buf_free(&u);
			if (memmem(s->pending.data + off, len,
			    "\"run.complete\"", 14) != NULL || memmem(
			    s->pending.data + off, len, "\"run.cancelled\"",
			    15) != NULL || memmem(s->pending.data + off, len,
			    "\"environment.complete\"", 22) != NULL ||
			    memmem(s->pending.data + off, len,
			    "\"environment.failed\"", 20) != NULL)
				s->seen_last = 1, s->check_at = 0;
		}
		off += len + 1;
	}
	memmove(s->pending.data, s->pending.data + off, s->pending.len - off);
	s->pending.len -= off;
}

/* Reads what the log has gained; opens it (again) when it is new. */
static void
stream_fill(struct stream *s)
{
	struct stat st;
	char chunk[65536];
	ssize_t n;

	if (s->fd != -1 && stat(s->path, &st) == 0 &&
	    (unsigned long long)st.st_ino != s->ino) {
		close(s->fd);
		s->fd = -1;
	}
	if (s->fd == -1) {
		if (s->path[0] == '\0' ||
		    (s->fd = open(s->path, O_RDONLY | O_CLOEXEC)) == -1)
			return;
		if (fstat(s->fd, &st) == -1) {
			close(s->fd);
			s->fd = -1;
			return;
		}
		buf_reset(&s->pending);
		s->seen_last = 0;
		s->ino = (unsigned long long)st.st_ino;
		s->off = 0;
		if (s->resumed && s->want_ino == s->ino &&
		    s->want_off <= (long long)st.st_size)
			s->off = s->want_off;
		else if (s->resumed)
			buf_addstr(&s->out, "event: reset\ndata: {}\n\n");
		s->resumed = 1;
		s->want_ino = s->ino;
		s->want_off = s->off;
		if (lseek(s->fd, (off_t)s->off, SEEK_SET) == -1)
			s->off = 0;
	}
	while ((n = read(s->fd, chunk, sizeof(chunk))) > 0) {
		buf_add(&s->pending, chunk, (size_t)n);
		stream_lines(s);
		if (s->out.len > 65536)
			break;
	}
}

static ssize_t
stream_read(void *cls, uint64_t pos, char *to, size_t max)
{
	struct stream *s = cls;
	size_t n;

	for (;;) {
		if (s->out_off < s->out.len) {
			n = s->out.len - s->out_off;
			if (n > max)
				n = max;
			memcpy(to, s->out.data + s->out_off, n);
			s->out_off += n;
			if (s->out_off == s->out.len) {
				buf_reset(&s->out);
				s->out_off = 0;
			}
			s->sent = now_mono();
			return (ssize_t)n;
		}
		if (s->ended || http_stopping)
			return MHD_CONTENT_READER_END_OF_STREAM;
		stream_fill(s);
		if (s->out.len > 0)
			continue;
		if (s->grace_end > 0 && (s->seen_last ||
		    now_mono() >= s->grace_end)) {
			buf_addstr(&s->out, "event: end\ndata: {}\n\n");
			s->ended = 1;
			continue;
		}
		if (s->grace_end == 0 && now_mono() >= s->check_at) {
			if (stream_over(s))
				s->grace_end = now_mono() + STREAM_GRACE;
			s->check_at = now_mono() + STREAM_CHECK;
			continue;
		}
		if (now_mono() - s->started > STREAM_MAX) {
			s->ended = 1;	/* the client comes back */
			continue;
		}
		if (now_mono() - s->sent > STREAM_KEEP) {
			buf_addstr(&s->out, ": keep-alive\n\n");
			continue;
		}
		usleep(STREAM_PAUSE);
	}
}

static void
stream_free(void *cls)
{
	struct stream *s = cls;

	if (s->fd != -1)
		close(s->fd);
	buf_free(&s->pending);
	buf_free(&s->out);
	free(s);
}

static enum MHD_Result
stream(struct MHD_Connection *conn, const char *id, int env)
{
	struct MHD_Response *r;
	struct stream *s;
	enum MHD_Result ret;
	const char *from;
	json_t *row;
	char dir[PATH_MAX];

	s = xcalloc(1, sizeof(*s));
	s->fd = -1;
	s->env = env;
	snprintf(s->id, sizeof(s->id), "%s", id);
	buf_init(&s->pending);
	buf_init(&s->out);
	s->started = s->sent = now_mono();
	if (env) {
		if ((row = find_env(id)) == NULL ||
		    env_log_path(row, s->path, sizeof(s->path)) == -1) {
			json_decref(row);
			stream_free(s);
			return respond(conn, 404, "text/plain; charset=utf-8",
			    "no such environment\n", 20);
		}
		json_decref(row);
	} else {
		struct store *st;

		row = NULL;
		http_lock();
		if ((st = http_store()) != NULL)
			row = store_show_run(st, id);
		http_unlock();
		if (!json_is_object(json_object_get(row, "run")) ||
		    path_run_dir(dir, sizeof(dir), conf->data_dir,
		    json_string_value(json_object_get(json_object_get(row,
		    "run"), "workspace_id")), id) == -1) {
			json_decref(row);
			stream_free(s);
			return respond(conn, 404, "text/plain; charset=utf-8",
			    "no such run\n", 12);
		}
		json_decref(row);
		snprintf(s->path, sizeof(s->path), "%s/logs/events.ndjson",
		    dir);
	}
	/* A reconnecting client says where it was; a page, where it is. */
	from = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
	    "Last-Event-ID");
	if (from == NULL)
		from = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND,
		    "from");
	if (from != NULL && sscanf(from, "%llu-%lld", &s->want_ino,
	    &s->want_off) == 2 && s->want_off >= 0)
		s->resumed = 1;
	r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384,
	    stream_read, s, stream_free);
	if (r == NULL) {
		stream_free(s);
		return MHD_NO;
	}
	MHD_add_response_header(r, "Content-Type", "text/event-stream");
	MHD_add_response_header(r, "Cache-Control", "no-store");
	MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
	ret = MHD_queue_response(conn, 200, r);
	MHD_destroy_response(r);
	return ret;
}

/* --- actions ----------------------------------------------------------- */

static int
digest(const char *s, size_t n, unsigned char *md, unsigned *len)
{
	return EVP_Digest(s, n, md, len, EVP_sha256(), NULL) == 1 ? 0 : -1;
}

/*
 * Reads the token (the first line of token_file) when the actions are
 * on; only its digest is kept.  A file that others may read is refused.
 */
void
ui_setup(const struct conf *c)
{
	struct stat st;
	struct buf b;
	size_t n;

	conf = c;
	token_md_len = 0;
	if (!c->http_actions)
		return;
	if (c->http_token_file[0] == '\0') {
		log_error("http: actions = yes needs a token_file; the "
		    "dashboard's actions are off");
		return;
	}
	if (stat(c->http_token_file, &st) == -1) {
		log_error("http: token_file %s: %s; the dashboard's actions "
		    "are off", c->http_token_file, strerror(errno));
		return;
	}
	if (st.st_mode & 0007) {
		log_error("http: token_file %s can be read by others; the "
		    "dashboard's actions are off", c->http_token_file);
		return;
	}
	buf_init(&b);
	if (read_file(c->http_token_file, &b, 4096) == -1) {
		log_error("http: cannot read token_file %s: %s; the "
		    "dashboard's actions are off", c->http_token_file,
		    strerror(errno));
		buf_free(&b);
		return;
	}
	n = strcspn(buf_str(&b), "\r\n");
	if (n < 16) {
		log_error("http: the token of %s is shorter than 16 "
		    "characters; the dashboard's actions are off",
		    c->http_token_file);
	} else if (digest(b.data, n, token_md, &token_md_len) == -1)
		token_md_len = 0;
	OPENSSL_cleanse(b.data, b.len);
	buf_free(&b);
}

int
ui_actions(void)
{
	return token_md_len > 0;
}

/* The value of name in a form body (application/x-www-form-urlencoded). */
static void
form_value(const char *body, const char *name, struct buf *out)
{
	size_t n = strlen(name);
	const char *p = body;

	while (p != NULL && *p != '\0') {
		if (strncmp(p, name, n) == 0 && p[n] == '=') {
			for (p += n + 1; *p != '\0' && *p != '&'; p++) {
				if (*p == '+')
					buf_add(out, " ", 1);
				else if (*p == '%' && hex_digit(p[1]) >= 0 &&
				    hex_digit(p[2]) >= 0) {
					char c = (char)(hex_digit(p[1]) * 16 +
					    hex_digit(p[2]));

					buf_add(out, &c, 1);
					p += 2;
				} else
					buf_add(out, p, 1);
			}
			return;
		}
		if ((p = strchr(p, '&')) != NULL)
			p++;
	}
}

/* Whether the token given matches, compared in constant time. */
static int
token_ok(struct MHD_Connection *conn, const char *body)
{
	const char *header = MHD_lookup_connection_value(conn,
	    MHD_HEADER_KIND, "X-Ade-Token");
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned len = 0;
	struct buf given;
	int ok;

	buf_init(&given);
	if (header != NULL)
		buf_addstr(&given, header);
	else
		form_value(body, "token", &given);
	ok = given.len > 0 && digest(buf_str(&given), given.len, md,
	    &len) == 0 && len == token_md_len &&
	    CRYPTO_memcmp(md, token_md, len) == 0;
	if (given.data != NULL)
		OPENSSL_cleanse(given.data, given.len);
	buf_free(&given);
	return ok;
}

/*
 * Whether the request comes from another site: a browser says so in
 * Sec-Fetch-Site, or in an Origin that is not this host.  A request with
 * neither comes from a program, not from a page (curl, a script).
 */
static int
cross_site(struct MHD_Connection *conn)
{
	const char *site = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
	    "Sec-Fetch-Site");
	const char *origin = MHD_lookup_connection_value(conn,
	    MHD_HEADER_KIND, "Origin");
	const char *host = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
	    "Host");

	/* Sec-Fetch-Site, where a browser sends it, is the surest word. */
	if (site != NULL)
		return strcmp(site, "same-origin") != 0 &&
		    strcmp(site, "none") != 0;
	if (origin == NULL)
		return 0;
	if (host == NULL)
		return 1;
	if (strncmp(origin, "http://", 7) == 0)
		origin += 7;
	else if (strncmp(origin, "https://", 8) == 0)
		origin += 8;
	else
		return 1;
	return strcmp(origin, host) != 0;
}

static enum MHD_Result
redirect(struct MHD_Connection *conn, const char *to)
{
	struct MHD_Response *r;
	enum MHD_Result ret;

	r = MHD_create_response_from_buffer(0, (void *)"",
	    MHD_RESPMEM_PERSISTENT);
	if (r == NULL)
		return MHD_NO;
	MHD_add_response_header(r, "Location", to);
	ret = MHD_queue_response(conn, 303, r);
	MHD_destroy_response(r);
	return ret;
}

enum MHD_Result
ui_post(struct MHD_Connection *conn, const char *url, const char *body)
{
	struct store *st;
	const char *rest;
	char id[40], back[80];
	int env, rc = -1;

	if (split_path(url, "/runs/", id, &rest) == 0)
		env = 0;
	else if (split_path(url, "/envs/", id, &rest) == 0)
		env = 1;
	else
		return message_page(conn, 404, "Not found", url);
	if (env ? strcmp(rest, "/rebuild") != 0 : strcmp(rest, "/cancel") !=
	    0 && strcmp(rest, "/requeue") != 0)
		return message_page(conn, 404, "Not found", url);
	if (token_md_len == 0)
		return message_page(conn, 403, "Actions are off",
		    "Set [http] actions and token_file to use them.");
	if (cross_site(conn))
		return message_page(conn, 403, "Refused",
		    "The request came from another site.");
	if (!token_ok(conn, body)) {
		log_warnx("http: %s refused: wrong or missing token", url);
		return message_page(conn, 403, "Refused",
		    "The token is wrong or missing.");
	}
	http_lock();
	if ((st = http_store()) != NULL)
		rc = env ? store_environment_rebuild(st, id) :
		    strcmp(rest, "/cancel") == 0 ? store_run_cancel(st, id) :
		    store_run_requeue(st, id);
	http_unlock();
	if (rc < 0)
		return message_page(conn, 503, "Database unreachable",
		    "Nothing was done; try again.");
	if (rc == 0)
		return message_page(conn, 409, "Nothing to do", env ?
		    "The environment is being built, or does not exist." :
		    strcmp(rest, "/cancel") == 0 ? "The run is not queued or "
		    "running." : "The run is not finished.");
	log_notice("http: %s %s (dashboard)", env ? "environment" : "run",
	    url);
	snprintf(back, sizeof(back), "/%s/%s", env ? "envs" : "runs", id);
	return redirect(conn, back);
}

/* Serves a page of the dashboard: 1 with its result in ret, else 0. */
int
ui_get(struct MHD_Connection *conn, const char *url, enum MHD_Result *ret)
{
	const char *rest;
	char id[40];

	if (strcmp(url, "/") == 0)
		*ret = dashboard(conn);
	else if (strcmp(url, "/ui.css") == 0)
		*ret = respond(conn, 200, "text/css; charset=utf-8", css,
		    sizeof(css) - 1);
	else if (strcmp(url, "/ui.js") == 0)
		*ret = respond(conn, 200, "text/javascript; charset=utf-8", js,
		    sizeof(js) - 1);
	else if (split_path(url, "/runs/", id, &rest) == 0 && rest[0] == '\0')
		*ret = run_page(conn, id);
	else if (split_path(url, "/runs/", id, &rest) == 0 &&
	    strcmp(rest, "/events") == 0)
		*ret = stream(conn, id, 0);
	else if (split_path(url, "/envs/", id, &rest) == 0 && rest[0] == '\0')
		*ret = env_page(conn, id);
	else if (split_path(url, "/envs/", id, &rest) == 0 &&
	    strcmp(rest, "/events") == 0)
		*ret = stream(conn, id, 1);
	else
		return 0;
	return 1;
}
