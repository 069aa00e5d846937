/*
 * What the endpoint's parts share: http.c serves the probes and metrics
 * and owns the database connection, http_ui.c the dashboard.
 */
#ifndef ADE_HTTP_IMPL_H
#define ADE_HTTP_IMPL_H

#include <stddef.h>

#include <microhttpd.h>

struct conf;
struct queue_stats;
struct store;

extern volatile int	http_stopping;	/* the endpoint is going away */

/* The one database connection, used under http_lock only. */
void		 http_lock(void);
void		 http_unlock(void);
struct store	*http_store(void);
int		 http_reading(struct queue_stats *, char *err, size_t);
void		 count_workers(int *up, int *wanted, long *by_state);

enum MHD_Result	 respond(struct MHD_Connection *, unsigned code,
		    const char *type, const char *body, size_t len);

void		 ui_setup(const struct conf *);
int		 ui_actions(void);
int		 ui_get(struct MHD_Connection *, const char *url,
		    enum MHD_Result *);
enum MHD_Result	 ui_post(struct MHD_Connection *, const char *url,
		    const char *body);

#endif
