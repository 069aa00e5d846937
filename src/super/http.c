/*
 * The HTTP endpoint: a child of the supervisor, started when [http]
 * listen names an address, restarted like a worker when it dies.  It
 * serves
 *
 *	GET /health	the supervisor answers (liveness)
 *	GET /ready	the database answers and a worker is up (readiness)
 *	GET /metrics	Prometheus text exposition, format 0.0.4
 *	GET /		the dashboard, with pages of runs and environments
 *			(http_ui.c)
 *
 * Host-local figures come from the scoreboard.  The database figures
 * come from one query, made only when someone asks and then reused for
 * HTTP_CACHE seconds, so scrapes cost at most one query per interval
 * whatever their rate, and nothing while nobody scrapes.  The
 * connection is opened at the first request that needs it.
 *
 * libmicrohttpd serves each connection on a thread of its own; the one
 * database connection is shared under a mutex.
 */
#include <sys/types.h>
#include <sys/socket.h>

#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>

#include "conf.h"
#include "http.h"
#include "http_impl.h"
#include "log.h"
#include "scoreboard.h"
#include "store.h"
#include "util.h"
#include "worker.h"

#define HTTP_CACHE		5	/* seconds a database reading serves */
#define XSTR(x)			#x
#define STR(x)			XSTR(x)
#define HTTP_CONNECTIONS	32
#define HTTP_TIMEOUT		30	/* seconds of a silent connection */

static struct {
	const struct conf	*conf;
	pid_t			 supervisor;
	pthread_mutex_t		 lock;
	struct store		*store;
	/* The last database reading, and when it was made. */
	double			 read_at;
	int			 db_ok;
	char			 db_error[256];
	struct queue_stats	 queue;
} H = { .lock = PTHREAD_MUTEX_INITIALIZER };

volatile int	http_stopping;

/*
 * The endpoint's database connection, opened at the first use; NULL with
 * the reason in H.db_error when it cannot be.  Under H.lock.
 */
struct store *
http_store(void)
{
	struct buf err;

	if (H.store == NULL) {
		buf_init(&err);
		H.store = store_open(H.conf, &err);
		if (H.store == NULL)
			snprintf(H.db_error, sizeof(H.db_error), "%s",
			    buf_str(&err));
		buf_free(&err);
	}
	return H.store;
}

void
http_lock(void)
{
	pthread_mutex_lock(&H.lock);
}

void
http_unlock(void)
{
	pthread_mutex_unlock(&H.lock);
}

/* Reads the database unless the last reading is recent; under H.lock. */
static void
db_read(void)
{
	double now = now_mono();

	if (H.read_at > 0 && now - H.read_at < HTTP_CACHE)
		return;
	H.read_at = now;
	if (http_store() == NULL) {
		H.db_ok = 0;
		return;
	}
	if (store_queue_stats(H.store, &H.queue) == 0) {
		H.db_ok = 1;
		H.db_error[0] = '\0';
		return;
	}
	H.db_ok = 0;
	snprintf(H.db_error, sizeof(H.db_error), "%s", store_error(H.store));
	/* A backend that lost its connection finds a new one by itself. */
}

/* The last database reading (made now if it is old): 1 when it worked. */
int
http_reading(struct queue_stats *q, char *err, size_t len)
{
	int ok;

	pthread_mutex_lock(&H.lock);
	db_read();
	ok = H.db_ok;
	*q = H.queue;
	snprintf(err, len, "%s", H.db_error);
	pthread_mutex_unlock(&H.lock);
	return ok;
}

/* Workers running and past their start, and slots wanted. */
void
count_workers(int *up, int *wanted, long *by_state)
{
	const struct sb_slot *sb;
	int i, st;

	*up = 0;
	*wanted = scoreboard->wanted;
	for (i = 0; i < SB_MAX_SLOTS; i++) {
		sb = &scoreboard->slots[i];
		st = sb->state;
		if (sb->pid == 0 && st != SB_FAILED)
			continue;
		if (st >= 0 && st <= SB_FAILED && by_state != NULL)
			by_state[st]++;
		if (st == SB_IDLE || st == SB_BUILDING || st == SB_RUNNING)
			(*up)++;
	}
}

enum MHD_Result
respond(struct MHD_Connection *conn, unsigned code, const char *type,
    const char *body, size_t len)
{
	struct MHD_Response *r;
	enum MHD_Result ret;

	r = MHD_create_response_from_buffer(len, (void *)body,
	    MHD_RESPMEM_MUST_COPY);
	if (r == NULL)
		return MHD_NO;
	MHD_add_response_header(r, "Content-Type", type);
	MHD_add_response_header(r, "Cache-Control", "no-store");
	MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
	ret = MHD_queue_response(conn, code, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result
respond_json(struct MHD_Connection *conn, unsigned code, json_t *o)
{
	char *text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
	enum MHD_Result ret;

	json_decref(o);
	if (text == NULL)
		return MHD_NO;
	ret = respond(conn, code, "application/json", text, strlen(text));
	free(text);
	return ret;
}

static enum MHD_Result
serve_health(struct MHD_Connection *conn)
{
	int alive = getppid() == H.supervisor;

	return respond_json(conn, alive ? 200 : 503, json_pack(
	    "{s:s, s:I, s:I, s:b}", "status", alive ? "ok" : "supervisor gone",
	    "supervisor_pid", (json_int_t)H.supervisor, "uptime_seconds",
	    (json_int_t)(time(NULL) - scoreboard->started), "draining",
	    scoreboard->draining != 0));
}

static enum MHD_Result
serve_ready(struct MHD_Connection *conn)
{
	json_t *why = json_array(), *db;
	int up, wanted, ok;

	pthread_mutex_lock(&H.lock);
	db_read();
	db = json_pack("{s:b}", "reachable", H.db_ok);
	if (!H.db_ok) {
		json_object_set_new(db, "error", json_string(H.db_error));
		json_array_append_new(why, json_string("database unreachable"));
	}
	pthread_mutex_unlock(&H.lock);
	count_workers(&up, &wanted, NULL);
	if (up == 0)
		json_array_append_new(why, json_string(wanted > 0 ?
		    "no worker is up" : "no worker is wanted"));
	if (scoreboard->draining)
		json_array_append_new(why, json_string("draining"));
	ok = json_array_size(why) == 0;
	return respond_json(conn, ok ? 200 : 503, json_pack(
	    "{s:b, s:o, s:{s:i, s:i}, s:o}", "ready", ok, "database", db,
	    "workers", "up", up, "wanted", wanted, "reasons", why));
}

/* The text of /metrics, built in a buf. */
static void
family(struct buf *b, const char *name, const char *type, const char *help)
{
	buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void
histogram(struct buf *b, const char *name, const char *help,
    const struct sb_hist *h)
{
	long n = 0;
	size_t i;

	family(b, name, "histogram", help);
	/* The count is the buckets' total, so the two always agree. */
	for (i = 0; i < SB_BUCKETS; i++) {
		n += __atomic_load_n(&h->bucket[i], __ATOMIC_RELAXED);
		buf_printf(b, "%s_bucket{le=\"%g\"} %ld\n", name, sb_bounds[i],
		    n);
	}
	n += __atomic_load_n(&h->bucket[SB_BUCKETS], __ATOMIC_RELAXED);
	buf_printf(b, "%s_bucket{le=\"+Inf\"} %ld\n", name, n);
	buf_printf(b, "%s_sum %.3f\n%s_count %ld\n", name,
	    (double)h->sum_ms / 1000.0, name, n);
}

static void
metrics_text(struct buf *b)
{
	static const char *const run_outcomes[SB_RUN_OUTCOMES] = {
		"succeeded", "failed", "retried", "cancelled", "lost",
		"released"
	};
	static const char *const build_outcomes[SB_BUILD_OUTCOMES] = {
		"ready", "failed", "lost"
	};
	const struct sb_counters *k = &scoreboard->counters;
	struct queue_stats q;
	long states[SB_FAILED + 1] = { 0 };
	int up, wanted, db_ok, i;

	pthread_mutex_lock(&H.lock);
	db_read();
	db_ok = H.db_ok;
	q = H.queue;
	pthread_mutex_unlock(&H.lock);

	family(b, "ade_database_up", "gauge", "Whether the last reading of "
	    "the database, at most " STR(HTTP_CACHE) " s old, succeeded.");
	buf_printf(b, "ade_database_up %d\n", db_ok);
	if (db_ok) {
		family(b, "ade_runs", "gauge", "Runs in the database by "
		    "status.");
		for (i = 0; i < RUN_STATUSES; i++)
			buf_printf(b, "ade_runs{status=\"%s\"} %ld\n",
			    run_statuses[i], q.runs[i]);
		family(b, "ade_queue_depth", "gauge", "Queued runs whose "
		    "time has come.");
		buf_printf(b, "ade_queue_depth %ld\n", q.due);
		family(b, "ade_queue_oldest_age_seconds", "gauge", "How long "
		    "the oldest due run has waited; 0 when none waits.");
		buf_printf(b, "ade_queue_oldest_age_seconds %.3f\n",
		    q.oldest_due);
	}

	family(b, "ade_runs_finished_total", "counter", "Attempts at runs "
	    "this host ended, by outcome.");
	for (i = 0; i < SB_RUN_OUTCOMES; i++)
		buf_printf(b, "ade_runs_finished_total{outcome=\"%s\"} %ld\n",
		    run_outcomes[i], k->runs[i]);
	histogram(b, "ade_run_duration_seconds", "Time from the claim of an "
	    "attempt to its end.", &k->run_duration);
	histogram(b, "ade_run_pickup_wait_seconds", "Time from a run being "
	    "due to its claim.", &k->pickup_wait);
	family(b, "ade_environment_builds_total", "counter", "Environment "
	    "builds this host ended, by outcome.");
	for (i = 0; i < SB_BUILD_OUTCOMES; i++)
		buf_printf(b, "ade_environment_builds_total{outcome=\"%s\"} "
		    "%ld\n", build_outcomes[i], k->builds[i]);
	histogram(b, "ade_environment_build_duration_seconds", "Time an "
	    "environment build took.", &k->build_duration);

	count_workers(&up, &wanted, states);
	family(b, "ade_workers", "gauge", "Worker processes of this host by "
	    "state.");
	for (i = SB_STARTING; i <= SB_FAILED; i++)
		buf_printf(b, "ade_workers{state=\"%s\"} %ld\n",
		    sb_state_name(i), states[i]);
	family(b, "ade_workers_wanted", "gauge", "Worker processes this "
	    "host is configured or scaled to.");
	buf_printf(b, "ade_workers_wanted %d\n", wanted);
	family(b, "ade_worker_restarts_total", "counter", "Workers started "
	    "again after one exited.");
	buf_printf(b, "ade_worker_restarts_total %ld\n", k->worker_restarts);
	family(b, "ade_claims_total", "counter", "Claims this host's "
	    "workers made, by kind.");
	buf_printf(b, "ade_claims_total{kind=\"run\"} %ld\n", k->claims_run);
	buf_printf(b, "ade_claims_total{kind=\"environment\"} %ld\n",
	    k->claims_env);
	family(b, "ade_claims_lost_total", "counter", "Claims taken back "
	    "from this host's workers before they finished.");
	buf_printf(b, "ade_claims_lost_total %ld\n", k->runs[SB_RUN_LOST] +
	    k->builds[SB_BUILD_LOST]);
	family(b, "ade_database_errors_total", "counter", "Database "
	    "operations of this host's workers that failed.");
	buf_printf(b, "ade_database_errors_total %ld\n", k->db_errors);
	family(b, "ade_database_reconnects_total", "counter", "Connections "
	    "this host's workers made again after losing one.");
	buf_printf(b, "ade_database_reconnects_total %ld\n",
	    k->db_reconnects);
	family(b, "ade_start_time_seconds", "gauge", "When the supervisor "
	    "started, in seconds since 1970.");
	buf_printf(b, "ade_start_time_seconds %lld\n",
	    (long long)scoreboard->started);
}

static enum MHD_Result
serve_metrics(struct MHD_Connection *conn)
{
	struct buf b;
	enum MHD_Result ret;

	buf_init(&b);
	metrics_text(&b);
	ret = respond(conn, 200, "text/plain; version=0.0.4; charset=utf-8",
	    buf_str(&b), b.len);
	buf_free(&b);
	return ret;
}

/*
 * A request's body is kept (up to HTTP_BODY_MAX bytes) across the calls
 * that bring it; the state is freed when the request completes.
 */
#define HTTP_BODY_MAX	4096
struct request {
	struct buf	body;
	int		too_big;
};

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *conn, const char *url,
    const char *method, const char *version, const char *upload,
    size_t *upload_len, void **state)
{
	static const char not_found[] = "not found\n";
	struct request *rq = *state;
	enum MHD_Result ret;
	int post = strcmp(method, "POST") == 0;

	/* The first call only announces the request; answer on the next. */
	if (rq == NULL) {
		rq = xcalloc(1, sizeof(*rq));
		buf_init(&rq->body);
		*state = rq;
		return MHD_YES;
	}
	if (*upload_len != 0) {
		if (rq->body.len + *upload_len > HTTP_BODY_MAX)
			rq->too_big = 1;
		else
			buf_add(&rq->body, upload, *upload_len);
		*upload_len = 0;
		return MHD_YES;
	}
	if (post && rq->too_big)
		return respond(conn, 413, "text/plain; charset=utf-8",
		    "request too large\n", 18);
	/* Only the dashboard's actions take a POST. */
	if ((post && strncmp(url, "/runs/", 6) != 0 &&
	    strncmp(url, "/envs/", 6) != 0) || (!post &&
	    strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0))
		return respond(conn, 405, "text/plain; charset=utf-8",
		    "method not allowed\n", 19);
	if (post)
		return ui_post(conn, url, buf_str(&rq->body));
	if (strcmp(url, "/health") == 0)
		return serve_health(conn);
	if (strcmp(url, "/ready") == 0)
		return serve_ready(conn);
	if (strcmp(url, "/metrics") == 0)
		return serve_metrics(conn);
	if (ui_get(conn, url, &ret))
		return ret;
	return respond(conn, 404, "text/plain; charset=utf-8", not_found,
	    sizeof(not_found) - 1);
}

static void
on_completed(void *cls, struct MHD_Connection *conn, void **state,
    enum MHD_RequestTerminationCode why)
{
	struct request *rq = *state;

	if (rq != NULL) {
		buf_free(&rq->body);
		free(rq);
		*state = NULL;
	}
}

/*
 * Splits "host:port" or "[v6 address]:port" and resolves it; a missing
 * host means every address.  Returns 0, or -1 with a message in err.
 */
static int
resolve(const char *listen, struct addrinfo **out, char *err, size_t len)
{
	char host[256];
	const char *colon, *port;
	struct addrinfo hints;
	size_t n;
	int rc;

	if (listen[0] == '[') {
		colon = strstr(listen, "]:");
		if (colon == NULL)
			goto bad;
		n = (size_t)(colon - listen - 1);
		port = colon + 2;
		if (n >= sizeof(host))
			goto bad;
		memcpy(host, listen + 1, n);
	} else {
		colon = strrchr(listen, ':');
		if (colon == NULL)
			goto bad;
		n = (size_t)(colon - listen);
		port = colon + 1;
		if (n >= sizeof(host))
			goto bad;
		memcpy(host, listen, n);
	}
	host[n] = '\0';
	if (port[0] == '\0' || strspn(port, "0123456789") != strlen(port))
		goto bad;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	if ((rc = getaddrinfo(host[0] != '\0' ? host : NULL, port, &hints,
	    out)) != 0) {
		snprintf(err, len, "%s: %s", listen, gai_strerror(rc));
		return -1;
	}
	return 0;
bad:
	snprintf(err, len, "%s: not HOST:PORT", listen);
	return -1;
}

static void
mhd_log(void *cls, const char *fmt, va_list ap)
{
	char msg[512];
	size_t n;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	n = strlen(msg);
	while (n > 0 && msg[n - 1] == '\n')
		msg[--n] = '\0';
	log_warnx("http: %s", msg);
}

int
http_main(const struct conf *c, pid_t supervisor)
{
	struct MHD_Daemon *d;
	struct addrinfo *ai;
	sigset_t stop;
	char err[512];
	int sig;

	H.conf = c;
	H.supervisor = supervisor;
	if (resolve(c->http_listen, &ai, err, sizeof(err)) == -1) {
		log_error("http listen = %s", err);
		return WORKER_EXIT_CONFIG;
	}
	/* Signals of a stop are taken by this thread alone. */
	sigemptyset(&stop);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGINT);
	sigaddset(&stop, SIGQUIT);
	sigaddset(&stop, SIGHUP);
	sigaddset(&stop, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &stop, NULL);
	signal(SIGPIPE, SIG_IGN);
	ui_setup(c);
	d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION |
	    MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG |
	    (ai->ai_family == AF_INET6 ? MHD_USE_IPv6 : 0), 0, NULL, NULL,
	    on_request, NULL,
	    MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
	    MHD_OPTION_SOCK_ADDR, ai->ai_addr,
	    MHD_OPTION_CONNECTION_LIMIT, (unsigned)HTTP_CONNECTIONS,
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HTTP_TIMEOUT,
	    MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
	    MHD_OPTION_END);
	freeaddrinfo(ai);
	if (d == NULL) {
		log_error("http: cannot listen on %s", c->http_listen);
		return WORKER_EXIT_CONFIG;
	}
	log_info("http: listening on %s%s", c->http_listen,
	    ui_actions() ? " (dashboard actions on)" : "");
	for (;;) {
		if (sigwait(&stop, &sig) != 0)
			continue;
		if (sig == SIGUSR1)
			log_reopen();
		else if (sig != SIGHUP)
			break;
	}
	http_stopping = 1;	/* live streams end */
	MHD_stop_daemon(d);
	if (H.store != NULL)
		store_close(H.store);
	return WORKER_EXIT_OK;
}
