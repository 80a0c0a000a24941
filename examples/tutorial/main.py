from fastapi import FastAPI
import taskgate
from celery_app import add, celery_app

tg = taskgate.Taskgate(celery_app=celery_app)
app = FastAPI(lifespan=tg.lifespan)
tg.install_error_handlers(app)


@app.get("/add")
async def perform_addition(x: int, y: int):
    job = await add.submit(x, y)
    return {"task_id": job.id}


@app.get("/result/{task_id}")
async def get_result(task_id: str):
    result = await (await tg.job(task_id)).status()
    if result.state == "succeeded":
        return {"status": "completed", "result": result.result}
    elif result.ended:  # failed (with its error) or cancelled
        return {"status": result.state, "error": result.error}
    else:
        return {"status": "pending"}
