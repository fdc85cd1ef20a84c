"""The Celery side of `make bench`: a no-op task on Debian's Celery 5.2.6, configured like the
C worker (msgpack, acks_late, Redis results, same RabbitMQ)."""
import os

from celery import Celery

app = Celery("celery_tasks",
             broker=os.environ["CELERIAC_BROKER_URL"].replace("amqp://", "pyamqp://", 1),
             backend=os.environ["CELERIAC_RESULT_BACKEND"])
app.conf.update(
    task_serializer="msgpack",
    result_serializer="msgpack",
    accept_content=["msgpack", "json"],
    task_acks_late=True,
    worker_prefetch_multiplier=4,
    worker_hijack_root_logger=False,
    worker_log_color=False,
)


@app.task(name="bench.noop")
def noop(x=None):
    return x
