"""The peer figure for make bench: Celery (prefork pool, Redis broker)
running the same no-op engine once a job, on the same machine and in the
same run as ade-superd's own figures.

Celery and Redis come from Debian (python3-celery, python3-redis,
redis-server); where they are missing the figure is n/a and says why.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"

# The job: one spawn of the no-op engine with its stderr on a pipe, as an
# ade-superd worker does; the first start and each end are recorded in
# Redis, so that the figure counts from the first job to the last.
TASKS = '''
import subprocess, time
import redis
from celery import Celery

app = Celery("bench", broker="redis://127.0.0.1:%(port)d/0")
app.conf.worker_hijack_root_logger = False
store = redis.Redis(host="127.0.0.1", port=%(port)d, db=1)


@app.task(ignore_result=True)
def run(i):
    store.setnx("first", repr(time.time()))
    subprocess.run([%(noop)r, "--output-dir", "/nonexistent"],
                   stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    store.set("last", repr(time.time()))
    store.incr("done")
'''


def missing():
    """Why Celery cannot be measured here, or None."""
    if not os.access(REDIS, os.X_OK):
        return "redis-server is not installed"
    try:
        __import__("celery")
        __import__("redis")
    except ImportError as exc:
        return "%s (python3-celery, python3-redis)" % exc
    return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def celery_throughput(noop, n, workers, python=sys.executable):
    """Jobs per second of a Celery worker with that many prefork
    processes over n queued jobs."""
    root = tempfile.mkdtemp(prefix="ade-bench-celery-")
    port = free_port()
    redis_proc = worker = None
    try:
        redis_proc = subprocess.Popen(
            [REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", root],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(os.path.join(root, "benchtasks.py"), "w") as f:
            f.write(TASKS % {"port": port, "noop": noop})
        sys.path.insert(0, root)
        try:
            import redis
            store = redis.Redis(host="127.0.0.1", port=port, db=1)
            deadline = time.monotonic() + 30
            while True:
                try:
                    store.ping()
                    break
                except redis.exceptions.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            import benchtasks
            with benchtasks.app.producer_or_acquire() as producer:
                for i in range(n):
                    benchtasks.run.apply_async((i,), producer=producer)
        finally:
            sys.path.remove(root)
            sys.modules.pop("benchtasks", None)
        worker = subprocess.Popen(
            [python, "-m", "celery", "-A", "benchtasks", "worker",
             "--pool", "prefork", "--concurrency", str(workers),
             "--without-heartbeat", "--without-gossip", "--without-mingle",
             "--loglevel", "warning"],
            cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        deadline = time.monotonic() + 600
        while int(store.get("done") or 0) < n:
            if worker.poll() is not None or time.monotonic() > deadline:
                return None
            time.sleep(0.2)
        took = float(store.get("last")) - float(store.get("first"))
        return n / took
    finally:
        if worker is not None:
            # The pool's processes go with the worker: its whole group.
            try:
                os.killpg(worker.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            worker.wait()
        if redis_proc is not None:
            redis_proc.kill()
            redis_proc.wait()
        shutil.rmtree(root, ignore_errors=True)
