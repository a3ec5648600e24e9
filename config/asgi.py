"""The demo site's ASGI application: Django's, with queued delivery reports taken in the event
loop (``crm_sms.asgi``). Serve it with gunicorn's uvicorn workers::

    gunicorn config.asgi -k uvicorn_worker.UvicornWorker --workers 2
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from crm_sms.asgi import get_asgi_application  # noqa: E402  (after the settings module)

application = get_asgi_application()
