# Two commands: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# An extra requirement, e.g. DJANGO="Django>=6.0,<6.2" for the newest Django.
DJANGO ?=
PYTEST_ARGS ?=

DEMO_PORT ?= 8000
SANDBOX_PORT ?= 8999
DEMO_ENV := SMS_URL="megafon+http://demo:demo-password@127.0.0.1:$(SANDBOX_PORT)/?sender=CRM-Demo" \
	SMS_PUBLIC_URL="http://127.0.0.1:$(DEMO_PORT)" SMS_CALLBACK_TOKEN="demo-callback-token"

.PHONY: demo test lint format install clean messages

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed: $(PY) pyproject.toml
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-dev: $(PY) pyproject.toml
	$(PY) -m pip install -q -e ".[dev]" $(if $(DJANGO),"$(DJANGO)")
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(DEMO_ENV) $(PY) manage.py migrate --noinput
	$(DEMO_ENV) $(PY) manage.py load_demo_data
	$(DEMO_ENV) $(PY) manage.py demo_superuser --url http://127.0.0.1:$(DEMO_PORT)/admin/
	@echo "Starting the MegaFon sandbox (:$(SANDBOX_PORT)), a worker and the site on http://127.0.0.1:$(DEMO_PORT)/admin/"
	@trap 'kill 0' EXIT INT TERM; \
	$(DEMO_ENV) $(PY) manage.py sms_sandbox --port $(SANDBOX_PORT) --login demo --password demo-password & \
	$(DEMO_ENV) $(PY) manage.py sms_worker & \
	$(DEMO_ENV) $(PY) manage.py runserver 127.0.0.1:$(DEMO_PORT)

test: $(VENV)/.installed-dev
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

messages: $(VENV)/.installed-dev
	cd crm_sms && ../$(PY) ../manage.py makemessages -l ru -l en --no-obsolete && ../$(PY) ../manage.py compilemessages

clean:
	rm -rf $(VENV) build dist *.egg-info
