import asyncio

import taskgate
from celery import Celery

# Initialize Celery
celery_app = Celery('tasks', broker='redis://localhost:6379/0', backend='redis://localhost:6379/0')


@taskgate.task
def add(x: int, y: int) -> int:
    return x + y


@taskgate.task
async def slow_square(x: int) -> int:
    await asyncio.sleep(0.5)
    return x * x
