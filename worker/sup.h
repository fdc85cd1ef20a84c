/* sup.h: the supervisor's internal state, shared by supervisor.c (loop, signals, timers),
 * intake.c (deliveries -> jobs), pool.c (children and the solo pool), outcome.c (outcomes ->
 * publish, store, settle), idem.c, revoke.c and presence.c. One process, one thread, one poll
 * loop.
 *
 * Choices worth knowing:
 * - Every delivery becomes a job slot with its own arena; slots go back to a free list, so the
 *   steady state allocates nothing per job.
 * - Late ack, always in the order publish (confirmed) -> store -> ack. Finished jobs are flushed
 *   in batches: one publish call, one Redis pipeline and one multiple ack for the longest run of
 *   finished deliveries at the head of the unsettled list (others are acked one by one). A batch
 *   is flushed when nothing else runs, when half the prefetch window is done, after 2 ms, or at
 *   512 jobs. A failed publish or store holds the batch and retries with backoff.
 * - Jobs go to idle children only, first in first out; a rate-limited job without a token lets
 *   later jobs pass for up to 1 s, then goes back through the delay levels. When the local queue
 *   is deep an idle child gets a batch: up to 16 jobs, at most its share of the queue (queued /
 *   children), in one write; it runs them in order and writes their replies together (pool.c).
 *   Only tasks whose handlers have run in under 1 ms on average are batched, so a slow job never
 *   holds others back from an idle child (a new task runs alone until it has been measured).
 *   A batch is never added to while the child is busy. Sent alone: jobs with a hard time limit
 *   (their clock starts when they start), redelivered jobs (so a crash is blamed on the job that
 *   crashed: a batch whose child dies is requeued unblamed and its jobs come back alone) and
 *   rate-limited tasks. A revocation with terminate kills a child only for its first unfinished
 *   job; a later job of the batch that is revoked runs (as if the revocation came late).
 * - The solo pool runs jobs in the supervisor in batches, with prefetch 64 x multiplier; it
 *   cannot enforce hard time limits (soft limits work).
 * - Revocations come two ways into one set: read from Redis (producer revoke) and from Celery's
 *   pidbox broadcast (app.control.revoke from Python, control.c), which records them in Redis too.
 * - Test hook: CELERIAC_FAULT_KILL_BEFORE_ACK=<task> SIGKILLs the worker after a batch holding a
 *   job of that task that ran was stored, before its ack (tests/integration/test_lifecycle.py). */
#ifndef CEL_WORKER_SUP_H
#define CEL_WORKER_SUP_H

#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "celeriac/broker.h"
#include "common/message.h"
#include "common/result.h"
#include "common/store.h"
#include "worker/config.h"
#include "worker/host.h"
#include "worker/ipc.h"
#include "worker/loader.h"
#include "worker/metrics.h"

enum job_state {
    J_FREE,
    J_QUEUED,  /* decoded, waiting for an idle child */
    J_RUNNING, /* a child (or the solo pool) runs it */
    J_DONE,    /* outcome known: publish -> store -> settle pending (the flush) */
};

enum job_stage { STAGE_PUBLISH, STAGE_STORE, STAGE_CHORD, STAGE_SETTLE };
enum job_settle { SETTLE_ACK, SETTLE_REQUEUE, SETTLE_NONE };
enum job_kill { KILL_NONE, KILL_TIMELIMIT, KILL_REVOKED };

struct cel__child;

struct cel__job {
    struct cel__job *next;          /* queue, done list or free list */
    struct cel__job *uprev, *unext; /* unsettled deliveries, in delivery order */
    bool unsettled;
    enum job_state state;
    struct cel_arena arena; /* the delivery, the decoded task and the outcome */
    struct cel_delivery d;
    struct cel_task t;
    bool decoded;
    const struct cel__task_entry *entry;
    struct cel__registry *reg; /* holds a reference while the job lives */
    uint64_t seq;
    struct cel__child *child;
    int64_t queued_us;        /* monotonic, when it entered the queue */
    int64_t started_us;       /* monotonic */
    int64_t hard_deadline_us; /* monotonic; 0 = none */
    double hard_limit_s;
    enum job_kill kill;

    /* the outcome, as work for the flush */
    enum job_stage stage;
    enum job_settle settle;
    struct cel_publish *pubs;
    size_t n_pubs, cap_pubs;
    struct cel_store_put *puts;
    size_t n_puts, cap_puts;
    const char *outcome; /* for the log line */
    /* idempotency */
    const char *idem_token;      /* non-NULL while this job holds the lease */
    struct cel_span idem_meta;   /* the final meta to complete the key with */
    struct cel_span chord_entry; /* a chord header part: its encoded [1, id, state, result] */
    struct cel_span extra;       /* msgpack map appended to the job's own result meta */
};

struct cel__child {
    pid_t pid; /* 0 = slot empty (respawn) */
    int fd;
    int index;
    struct cel__job *job; /* the job it runs, or NULL when idle */
    struct cel__registry *reg;
    struct cel_buf in;
    size_t in_off;
    struct cel_buf out;
    size_t out_off;
    unsigned jobs_done;
    bool retiring;         /* close after the current job */
    bool hup;              /* its socket reported HUP/ERR: wait for SIGCHLD */
    int64_t spawned_us;    /* monotonic */
    int64_t respawn_at_us; /* a child that keeps dying at startup is respawned with backoff */
    unsigned fast_fails;
    struct cel__job *jtail; /* the last job of its batch (job is the first; linked by next) */
};

struct cel__sup {
    const struct cel__wcfg *cfg;
    struct cel__registry *reg;
    struct cel_broker *broker;
    const struct cel_broker_class *bc;
    struct cel_store *store;
    struct cel_limits limits;
    char origin[300]; /* gen<pid>@host for messages we publish */

    /* jobs */
    struct cel__job *free_jobs;
    struct cel__job *qhead, *qtail; /* waiting for a child */
    size_t n_queued;
    bool rate_waiting;              /* a rate-limited job waits for a token */
    struct cel__job *dhead, *dtail; /* done, waiting for the flush */
    struct cel__job *uhead, *utail; /* unsettled, in delivery order */
    size_t n_jobs;                  /* allocated */
    uint64_t next_seq;

    /* pool */
    struct cel__child *children;
    int n_children;
    int n_busy;
    bool solo;
    struct cel_job solo_job;
    msgpack_zone zone; /* reply/args unpacking */

    /* broker state */
    bool connected;
    uint64_t min_live_gen; /* deliveries from older generations are void */
    uint64_t last_gen;
    int64_t reconnect_at_us;
    int64_t next_tick_us;
    unsigned reconnect_attempt;

    /* store retry */
    int64_t flush_retry_at_us;
    int64_t flush_due_us; /* finished jobs wait at most until then (batching) */
    size_t n_done;
    size_t prefetch; /* the consumers' window */
    unsigned flush_attempt;

    /* lifecycle */
    int sigfd;
    bool draining; /* warm shutdown in progress */
    int64_t drain_deadline_us;
    bool reload_requested;
    int exit_code;
    bool stop;

    /* durable revocations, polled from Redis into an in-memory set */
    struct cel__revoked {
        char **ids; /* open addressing; NULL = empty */
        bool *terminate;
        size_t cap, n;
    } revoked;
    int64_t revoked_since_ms;
    int64_t next_revoke_poll_us;

    /* test hook: CELERIAC_FAULT_KILL_BEFORE_ACK=<task> kills the worker after a batch holding
     * that task is stored (and its idempotency key completed) and before it is acked */
    const char *fault_kill_before_ack;
    int64_t next_renew_us;

    /* remote control (control.c) */
    char control_queue[300]; /* "<hostname>.celery.pidbox"; "" when remote control is off */
    uint64_t control_clock;  /* Lamport clock stamped on pidbox replies */

    /* stats */
    uint64_t processed, failed, retried;
    int64_t started_wall_us;
    int64_t next_summary_us, next_register_us;

    /* scratch reused every iteration */
    struct cel_buf scratch;
    struct pollfd *pfds;
    size_t cap_pfds;
    struct cel_publish *pubbuf;
    size_t cap_pubbuf;
    struct cel_store_put *putbuf;
    size_t cap_putbuf;

    struct cel__metrics *metrics; /* NULL unless --metrics-port */
};

/* supervisor.c */
int cel__supervisor_run(const struct cel__wcfg *cfg, struct cel__registry *reg);

/* intake.c */
int cel__intake_drain(struct cel__sup *s);
struct cel__job *cel__job_alloc(struct cel__sup *s);
void cel__job_release(struct cel__sup *s, struct cel__job *j);
void cel__unsettled_remove(struct cel__sup *s, struct cel__job *j);
bool cel__job_void(const struct cel__sup *s, const struct cel__job *j);

/* pool.c */
int cel__pool_start(struct cel__sup *s);
void cel__pool_dispatch(struct cel__sup *s);
void cel__pool_read(struct cel__sup *s, struct cel__child *c);
void cel__pool_write(struct cel__sup *s, struct cel__child *c);
void cel__pool_reap(struct cel__sup *s);
void cel__pool_check_limits(struct cel__sup *s, int64_t now);
void cel__pool_stop(struct cel__sup *s, bool kill_now);
void cel__pool_retire_all(struct cel__sup *s);
void cel__pool_maintain(struct cel__sup *s, int64_t now);
int64_t cel__pool_next_deadline(const struct cel__sup *s);

/* idem.c: idempotency keys (x-celeriac-idempotency-key) */
/* Claims the key before the job is queued; false when the job was settled instead (done
 * elsewhere: its result is copied; running elsewhere: delayed and retried later). */
bool cel__idem_admit(struct cel__sup *s, struct cel__job *j);
/* After the batch's results are stored: completes (final outcome) or releases the lease. */
void cel__idem_finish(struct cel__sup *s, struct cel__job *j);
void cel__idem_renew(struct cel__sup *s, int64_t now);

/* revoke.c: durable revocation (celeriac-revoked in Redis) */
void cel__revoke_poll(struct cel__sup *s, int64_t now);
/* true when j's id is revoked or j has expired: REVOKED 'revoked'/'expired' is recorded and
 * the job is settled */
bool cel__revoke_check(struct cel__sup *s, struct cel__job *j);
void cel__revoke_free(struct cel__sup *s);
/* Adds id to the in-memory set; with terminate kills the child running it. Returns how many
 * children were told to die, or CEL_ENOMEM. */
int cel__revoke_add(struct cel__sup *s, const char *id, bool terminate);

/* presence.c: the worker registry in Redis (producer inspect workers) */
void cel__presence_beat(struct cel__sup *s, int64_t now);
void cel__presence_leave(struct cel__sup *s);

/* outcome.c */
void cel__outcome_reply(struct cel__sup *s, struct cel__job *j, const struct cel__reply *r);
void cel__outcome_crash(struct cel__sup *s, struct cel__job *j, int status);
void cel__outcome_dead_letter(struct cel__sup *s, struct cel__job *j, const char *etype,
                              const char *emsg, int64_t attempts, int sig);
void cel__outcome_store_exc(struct cel__sup *s, struct cel__job *j, const char *status,
                            const struct cel_exc *exc);
int cel__outcome_publish_task(struct cel__sup *s, struct cel__job *j, const struct cel_task *t,
                              const char *queue, uint32_t delay_s);
void cel__job_done(struct cel__sup *s, struct cel__job *j, enum job_settle settle);
void cel__flush(struct cel__sup *s);
enum cel_format cel__result_format(const struct cel__sup *s, const struct cel__job *j);

#endif
