from django.contrib import admin
from django.contrib.staticfiles import finders
from django.http import FileResponse, Http404, HttpRequest
from django.urls import include, path
from django.views.decorators.cache import cache_control
from django.views.generic import RedirectView


@cache_control(max_age=86400, public=True)
def favicon(request: HttpRequest) -> FileResponse:
    """/favicon.ico, which browsers ask for whatever the page says (served without the static
    files' server, so with DEBUG=0 too)."""
    found = finders.find("crm_sms/favicon.ico")
    if not found:
        raise Http404("favicon.ico")
    return FileResponse(open(found, "rb"), content_type="image/x-icon")


urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("favicon.ico", favicon),
    path("i18n/", include("django.conf.urls.i18n")),  # the admin's language switch
    path("admin/", admin.site.urls),
    path("sms/", include("crm_sms.urls")),
]
