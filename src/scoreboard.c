/*
 * The scoreboard lives in an anonymous shared mapping made before the
 * first fork, so every worker sees the same memory as the supervisor.
 * Each slot has one writer at a time (its worker, or the supervisor once
 * that worker is gone); readers may see a slot half-updated, which only
 * matters for display.  The claim fields are written before the state
 * that says they are valid.
 */
#include <sys/mman.h>

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "scoreboard.h"

struct scoreboard	*scoreboard;
struct sb_slot		*sb_self;

int
sb_create(void)
{
	void *p;

	p = mmap(NULL, sizeof(struct scoreboard), PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return -1;
	memset(p, 0, sizeof(struct scoreboard));
	scoreboard = p;
	return 0;
}

void
sb_set_state(enum sb_state st)
{
	if (sb_self == NULL)
		return;
	sb_self->state = st;
	sb_self->since = time(NULL);
}

void
sb_set_claim(enum sb_claim kind, const char *id, const char *token)
{
	if (sb_self == NULL)
		return;
	if (kind == SB_CLAIM_NONE) {
		sb_self->claim_kind = SB_CLAIM_NONE;
		__sync_synchronize();
		sb_self->claim_id[0] = sb_self->claim_token[0] = '\0';
		return;
	}
	snprintf(sb_self->claim_id, sizeof(sb_self->claim_id), "%s", id);
	snprintf(sb_self->claim_token, sizeof(sb_self->claim_token), "%s",
	    token);
	__sync_synchronize();
	sb_self->claim_kind = kind;
}

/*
 * Records the token of a claim about to be made, before the database
 * commits it: a worker that dies before sb_set_claim names the row
 * leaves its token behind, and the claim is released by it at once
 * instead of when its lease expires.
 */
void
sb_set_claiming(enum sb_claim kind, const char *token)
{
	sb_set_claim(kind, "", token);
}

void
sb_set_error(const char *msg)
{
	if (sb_self != NULL)
		snprintf(sb_self->last_error, sizeof(sb_self->last_error),
		    "%s", msg);
}

/*
 * Records the claim a dead worker held, for the maintenance process to
 * release.  Written by the supervisor only.
 */
int
sb_orphan_add(const struct sb_slot *s, const char *why)
{
	struct sb_orphan *o;
	size_t i;

	if (s->claim_kind == SB_CLAIM_NONE)
		return 0;
	for (i = 0; i < SB_MAX_ORPHANS; i++) {
		o = &scoreboard->orphans[i];
		if (o->pending)
			continue;
		o->kind = s->claim_kind;
		snprintf(o->id, sizeof(o->id), "%s", s->claim_id);
		snprintf(o->token, sizeof(o->token), "%s", s->claim_token);
		snprintf(o->why, sizeof(o->why), "%s", why);
		__sync_synchronize();
		o->pending = 1;
		return 1;
	}
	return -1;	/* full: the lease sweep will recover it */
}

int
sb_orphans_pending(void)
{
	size_t i;
	int n = 0;

	for (i = 0; i < SB_MAX_ORPHANS; i++)
		n += scoreboard->orphans[i].pending != 0;
	return n;
}

const char *
sb_state_name(int st)
{
	static const char *const names[] = {
		"empty", "starting", "idle", "building", "running",
		"stopping", "failed"
	};

	return st >= 0 && st <= SB_FAILED ? names[st] : "unknown";
}
