/*
 * The configuration: one table of keys (section, name, type, default,
 * whether HUP may change it, environment variable, documentation line)
 * drives parsing of worker.conf, environment overrides, validation, and
 * the checks that the documentation lists every key.
 */
#ifndef ADE_CONF_H
#define ADE_CONF_H

#include <stddef.h>
#include <stdio.h>

struct buf;

enum conf_type {
	CONF_STR,
	CONF_ENUM,
	CONF_INT,
	CONF_SECONDS,
	CONF_BOOL,
	CONF_SIZE,
	CONF_WORKERS
};

#define CONF_RELOAD	0x01	/* HUP may change it */
#define CONF_SECRET	0x02	/* never printed or logged */
#define CONF_COMPAT	0x04	/* accepted for compatibility, no effect */

struct conf_key {
	const char	*section;
	const char	*name;
	enum conf_type	 type;
	size_t		 offset;
	const char	*def;
	int		 flags;
	const char	*env;
	long long	 min;
	long long	 max;
	const char	*choices;	/* "a|b|c" for CONF_ENUM */
	const char	*doc;
};

struct conf {
	char		*path;

	/* [database] */
	char		*db_backend;
	char		*db_sqlite_path;
	char		*db_host;
	long long	 db_port;
	char		*db_name;
	char		*db_user;
	char		*db_password;
	char		*db_password_file;
	char		*db_encrypt;
	int		 db_trust_server_cert;
	char		*db_auth_mode;
	char		*db_mi_client_id;
	char		*db_url_override;
	char		*db_tds_version;
	double		 db_login_timeout;
	double		 db_query_timeout;
	char		*db_app_name;
	char		*db_dsn;
	int		 db_echo;
	long long	 db_pool_size;
	long long	 db_max_overflow;
	double		 db_pool_timeout;
	double		 db_pool_recycle;

	/* [worker] */
	char		*worker_id;
	char		*data_dir;
	double		 poll_interval;
	double		 poll_interval_max;
	double		 cleanup_interval;
	char		*log_level;
	double		 lease_seconds;
	double		 backoff_base;
	double		 backoff_max;
	long long	 max_attempts_default;
	char		*engine_spec;
	double		 env_build_timeout;
	double		 run_timeout;
	char		*python;
	char		*venv_args;
	char		*pip_args;
	char		*engine_command;
	char		*engine_sandbox;
	char		*engine_user;
	long long	 max_event_line;
	long long	 max_log_size;
	long long	 max_completion_size;
	long long	 max_result_rows;
	int		 notify;
	double		 listen_timeout;
	long long	 notify_jitter_ms;

	/* [gc] */
	int		 gc_enable;
	double		 gc_interval;
	long long	 gc_env_ttl_days;
	long long	 gc_run_artifact_ttl_days;

	long long	 max_jobs_per_child;
	long long	 max_rss;

	/* [supervisor] */
	long long	 workers;
	char		*user;
	char		*group;
	char		*pidfile;
	char		*control_socket;
	char		*control_socket_mode;
	double		 drain_timeout;
	double		 stats_period;
	char		*http_listen;
	int		 http_actions;
	char		*http_token_file;
	char		*log_file;
	double		 stable_seconds;

	/* Derived after loading. */
	char		*password;	/* from password or password_file */
	char		*sqlite_file;	/* sqlite_path or data_dir default */
	char		*venvs_dir;
	char		*venvs_root;	/* venvs_dir or data_dir/venvs */
	char		*socket_path;	/* control_socket or its default */
	unsigned	 socket_mode;
	int		*lines;		/* per key: file line, 0 default,
					   -1 environment */
};

const struct conf_key	*conf_keys(size_t *);
struct conf		*conf_new(void);
void			 conf_free(struct conf *);
int			 conf_load(struct conf *, const char *, struct buf *);
int			 conf_check_host(const struct conf *, struct buf *);
int			 conf_workers_auto(void);
void			 conf_dump(FILE *, const struct conf *);
void			 conf_keep_static(struct conf *, const struct conf *,
			    struct buf *);

#endif
