"""Your FastAPI app, handing work to taskgate (run it with `taskgate up --app main:app`)."""

from __future__ import annotations

from fastapi import FastAPI

import taskgate
from tasks import add, countdown

tg = taskgate.Taskgate()  # TASKGATE_* settings from the environment, read when it opens
app = FastAPI(lifespan=tg.lifespan)  # opens and closes taskgate's Redis and broker clients
app.include_router(tg.router, prefix="/jobs")  # optional: taskgate's HTTP API for your tasks under /jobs
tg.install_error_handlers(app)  # taskgate's errors in your routes: 503 Redis down, 502 task failed, 504...


@app.get("/sum")
async def sum_(x: int, y: int) -> dict[str, object]:
    """Add on a worker and wait (up to 10 s) for the typed result."""
    job = await add.submit(x=x, y=y)  # never blocks the event loop; a typed Job[int]
    return {"job_id": job.id, "result": await job.result(timeout=10)}


@app.post("/launch")
async def launch(seconds: int = 3) -> dict[str, str]:
    """Start a countdown and answer at once; follow it at /jobs/tasks/{job_id}/events."""
    job = await countdown.submit(seconds=seconds)
    return {"job_id": job.id}
