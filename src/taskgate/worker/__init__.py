"""The worker side: the Celery app (:mod:`.celery_app`), the task base class that keeps each
record truthful (:mod:`.runtime`), the keeper thread that loses nothing (:mod:`.recovery`),
the consumer that ends refused and unregistered messages truthfully (:mod:`.consumer`), and
kombu's Redis transport with a reconnect fix (:mod:`.transport`)."""
