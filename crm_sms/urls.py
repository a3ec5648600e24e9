"""Include in the site's urls: ``path("sms/", include("crm_sms.urls"))``."""

from django.urls import path

from . import webhooks

app_name = "crm_sms"

urlpatterns = [
    path("callback/<str:provider>/<str:token>/", webhooks.callback, name="callback"),
    path("callback/<str:provider>/<str:token>/inbound/", webhooks.inbound, name="inbound"),
]
