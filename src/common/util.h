/*
 * Small helpers shared by every module: checked allocation, a growable
 * byte buffer, clocks, random tokens, files and directories, UTF-8
 * repair, and whitespace-split argument vectors.
 */
#ifndef ADE_UTIL_H
#define ADE_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define NELEM(a)	(sizeof(a) / sizeof((a)[0]))
/* "1 job", "2 jobs" */
#define PLURAL(n)	((n) == 1 ? "" : "s")

void	*xmalloc(size_t);
void	*xcalloc(size_t, size_t);
void	*xrealloc(void *, size_t);
char	*xstrdup(const char *);
char	*xasprintf(const char *, ...) __attribute__((format(printf, 1, 2)));

struct buf {
	char	*data;
	size_t	 len;
	size_t	 cap;
};

void	 buf_init(struct buf *);
void	 buf_free(struct buf *);
void	 buf_reset(struct buf *);
void	 buf_add(struct buf *, const void *, size_t);
void	 buf_addstr(struct buf *, const char *);
void	 buf_printf(struct buf *, const char *, ...)
	    __attribute__((format(printf, 2, 3)));
const char *buf_str(struct buf *);

double	 now_mono(void);
double	 now_wall(void);
void	 iso8601_now(char *, size_t);
int	 random_bytes(void *, size_t);
uint32_t random_u32(void);
void	 random_hex(char *, size_t);
int	 hex_digit(int);
double	 jitter(double max);

int	 is_dir(const char *);
int	 mkdir_p(const char *, mode_t);
int	 rm_rf(const char *);
int	 copy_file(const char *, const char *);
int	 read_file(const char *, struct buf *, size_t max);

size_t	 utf8_repair(const char *, size_t, struct buf *);

void	 util_uuid(char *out37);
int	 util_uuid_canon(const char *in, char *out37);
void	 util_slug(const char *, char *, size_t);

char	**argv_split(const char *);
void	 argv_free(char **);
size_t	 argv_len(char *const *);

#endif
