"""Settings of the demo site, read from the environment with django-environ (see README)."""

import os
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from crm_sms.conf import settings_from_env

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEV_SECRET_KEY = "django-insecure-crm-sms-development-key-do-not-use-in-production"
# Django's W009: shorter keys, or keys of few distinct characters, can be guessed.
SECRET_KEY_MIN_LENGTH, SECRET_KEY_MIN_UNIQUE = 50, 5

DEBUG = env.bool("DEBUG", default=True)
# Read as is: django-environ would take a key starting with "$" for a reference to another
# variable (Django's get_random_secret_key() makes such keys).
SECRET_KEY = os.environ.get("SECRET_KEY") or DEV_SECRET_KEY
if not DEBUG and SECRET_KEY == DEV_SECRET_KEY:
    raise ImproperlyConfigured(
        "DEBUG=0 needs a SECRET_KEY of your own: set SECRET_KEY in the environment."
    )
if not DEBUG and (
    len(SECRET_KEY) < SECRET_KEY_MIN_LENGTH
    or len(set(SECRET_KEY)) < SECRET_KEY_MIN_UNIQUE
    or SECRET_KEY.startswith("django-insecure-")
):
    raise ImproperlyConfigured(
        f"DEBUG=0 needs a strong SECRET_KEY: at least {SECRET_KEY_MIN_LENGTH} characters, "
        f"{SECRET_KEY_MIN_UNIQUE} of them different, not starting with 'django-insecure-' "
        f'(this one has {len(SECRET_KEY)}). Make one with: python -c "from '
        'django.core.management.utils import get_random_secret_key as k; print(k())"'
    )
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# HTTPS (docs/deploy.md). With DEBUG=0 the defaults are what `check --deploy` asks for; each can
# be changed in the environment. Behind nginx set SECURE_PROXY_SSL_HEADER=HTTP_X_FORWARDED_PROTO
# (nginx must set that header itself), or the HTTPS redirect loops.
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
# Browsers remember HSTS for this long: try SECURE_HSTS_SECONDS=3600 before a year.
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=not DEBUG)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=not DEBUG)
# "HTTP_X_FORWARDED_PROTO" or "HTTP_X_FORWARDED_PROTO,https": trusted only when set, because
# without a proxy that overwrites it a client could claim HTTPS.
_proxy_ssl_header = env.list("SECURE_PROXY_SSL_HEADER", default=[])
SECURE_PROXY_SSL_HEADER = (
    (_proxy_ssl_header[0], _proxy_ssl_header[1] if len(_proxy_ssl_header) > 1 else "https")
    if _proxy_ssl_header
    else None
)
# Error pages and the e-mail to ADMINS hide SMS_URL*, *_TOKEN and URL passwords too.
DEFAULT_EXCEPTION_REPORTER_FILTER = "crm_sms.debug.SafeExceptionReporterFilter"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "import_export",
    "crm_sms",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The worker and the web server write at the same time: wait for the lock, don't fail.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 30, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
if os.environ.get("TEST_DATABASE_NAME"):
    DATABASES["default"]["TEST"] = {"NAME": os.environ["TEST_DATABASE_NAME"]}

CACHES = {"default": env.cache("CACHE_URL", default="locmemcache://")}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = env.str("LANGUAGE_CODE", default="ru")
LANGUAGES = [("ru", "Русский"), ("en", "English")]
TIME_ZONE = env.str("TIME_ZONE", default="Europe/Moscow")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CRM_SMS = {
    "PROVIDERS": {"default": {"BACKEND": "crm_sms.backends.console.ConsoleBackend"}},
    **settings_from_env(os.environ),
}
if not CRM_SMS["PROVIDERS"]:
    CRM_SMS["PROVIDERS"] = {"default": {"BACKEND": "crm_sms.backends.console.ConsoleBackend"}}

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="redis://127.0.0.1:6379/0")
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default=None)
CELERY_TASK_ACKS_LATE = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {"crm_sms": {"handlers": ["console"], "level": env.str("SMS_LOG_LEVEL", "INFO")}},
}
