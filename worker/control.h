/* control.h: Celery's remote control in the worker (spec 6.1): this node's pidbox queue and the
 * commands revoke, terminate, ping, registered and hello, replied to like a Celery worker. */
#ifndef CEL_WORKER_CONTROL_H
#define CEL_WORKER_CONTROL_H

#include <stdbool.h>

#include "worker/sup.h"

/* Declares and consumes "<hostname>.celery.pidbox". A failure is logged and leaves remote
 * control off; the worker serves its queues either way. Off with --require-signature: pidbox
 * messages are unsigned, so they could revoke and terminate anyone's jobs. */
void cel__control_start(struct cel__sup *s);
/* True when d came from the pidbox queue (deliveries without acks: never settle them). */
bool cel__control_owns(const struct cel__sup *s, const struct cel_delivery *d);
/* Runs the command in j's delivery and publishes the reply when one is asked for. j's arena is
 * scratch; the caller releases j. */
void cel__control_handle(struct cel__sup *s, struct cel__job *j);

#endif
