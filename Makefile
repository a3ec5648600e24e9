# Two commands: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# An extra requirement, e.g. DJANGO="Django>=6.0,<6.2" for the newest Django.
DJANGO ?=
PYTEST_ARGS ?=

DEMO_PORT ?= 8000
SANDBOX_PORT ?= 8999
DEMO_SENDER ?= CRM-Demo
DEMO_ENV := SMS_URL="megafon+http://demo:demo-password@127.0.0.1:$(SANDBOX_PORT)/?sender=$(DEMO_SENDER)" \
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

# Ctrl-C stops the three processes cleanly: manage.py demo_run passes it on to each and waits.
demo: $(VENV)/.installed
	$(DEMO_ENV) $(PY) manage.py migrate --noinput
	$(DEMO_ENV) $(PY) manage.py load_demo_data
	$(DEMO_ENV) $(PY) manage.py demo_superuser --url http://127.0.0.1:$(DEMO_PORT)/admin/
	@echo "  Admin in English: pick English in the language menu at the top right of the admin"
	@echo "  (or put English first in the browser's languages)."
	@echo "  SMS dashboard: http://127.0.0.1:$(DEMO_PORT)/admin/crm_sms/dashboard/"
	@echo ""
	@echo "Starting the MegaFon sandbox (:$(SANDBOX_PORT)), a worker and the site on http://127.0.0.1:$(DEMO_PORT)/admin/ (Ctrl-C stops them)"
	@$(DEMO_ENV) $(PY) manage.py demo_run \
		"sms_sandbox --port $(SANDBOX_PORT) --login demo --password demo-password --sender $(DEMO_SENDER)" \
		"sms_worker" \
		"runserver 127.0.0.1:$(DEMO_PORT)"

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
