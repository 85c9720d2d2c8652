"""Installs the hall appliance: the daemon, its drivers and services, and the county tools."""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(
    r'^__version__ = "([^"]+)"', (HERE / "appliance" / "__init__.py").read_text(), re.M
).group(1)

setup(
    name="hall-appliance",
    version=VERSION,
    description="Firmware and services for the township government service hall appliance",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["appliance*", "drivers*", "services*", "provisioning*"]),
    package_data={
        "appliance": [
            "schemas/*.json",
            # The config page's templates, static files and compiled catalogs.
            "web/templates/*.html",
            "web/*/templates/*/*.html",
            "web/static/*",
            "web/translations/*/LC_MESSAGES/*",
            "web/babel.cfg",
        ]
    },
    install_requires=[
        # MQTT v5 client; 2.x for reason codes in on_publish and the VERSION2 callbacks.
        "paho-mqtt>=2.0,<3",
        # GPIO through pin factories; MockFactory off the Pi.
        "gpiozero>=2.0,<3",
        # The local config page: create_app, blueprints, templates.
        "Flask>=3.0,<4",
        # CSRF protection and server-side validation of every form on the page.
        "Flask-WTF>=1.2",
        # The page's catalogs (zh_Hans by default, en); 4.x for Babel(locale_selector=...).
        "Flask-Babel>=4.0",
        # A pure-Python WSGI server that serves TLS itself (waitress cannot).
        "cheroot>=10",
        # The LED board: MAX7219 chains (setup, orientation, brightness, SPI), the frames
        # drawn with Pillow, and Unifont's character map read to report missing glyphs.
        "luma.led_matrix>=1.9",
        "Pillow>=10",
        "fonttools>=4",
        # Working days, public holidays and 调休 from the State Council's notices; the
        # county's calendar command covers years it does not know yet.
        "chinesecalendar>=1.9",
        # Complaints are sealed on arrival to the county supervisor's public key with
        # libsodium's sealed boxes (X25519 + XSalsa20-Poly1305, services/complaints.py);
        # PyNaCl is the maintained binding and ships libsodium in its wheels, so the Pi
        # needs no extra system package. hall-provision uses it to make keys and open them.
        "PyNaCl>=1.5",
        # QR codes on the complaint box's wall notice (the form's address, the hall Wi-Fi): pure Python, maintained.
        "segno>=1.5",
        # hall-provision's county CA: X.509 certificates for the broker and every device's
        # config page (cheroot serves them; browsers and paho check them). The standard
        # library can verify certificates but not make them; enrolment on the device does
        # not use it.
        "cryptography>=41",
    ],
    extras_require={
        # A Pi without the distribution's GPIO packages. On Raspberry Pi OS prefer apt's
        # python3-lgpio in a venv made with --system-site-packages; never install
        # rpi-lgpio beside RPi.GPIO. The badge reader reads through python-evdev (apt's
        # python3-evdev on Raspberry Pi OS); drivers/badge.py imports it only for a real reader.
        # spidev opens the SPI bus for the MAX7219 board.
        "pi": ["lgpio>=0.2", "RPi.GPIO>=0.7", "evdev>=1.6", "spidev>=3.5"],
        "test": [
            "pytest>=8",
            "hypothesis>=6",
            # Synthetic InputEvents for the badge reader's tests (Linux only, as the reader).
            "evdev>=1.6",
            # Validates what is really published against the MQTT contract's schemas.
            "jsonschema>=4.18",
            # Drives the distribution's Chromium for the page's browser tests (never
            # `playwright install`: the tests use /usr/bin/chromium).
            "playwright>=1.40",
            # Decodes the notice's QR codes back to the address and the Wi-Fi payload.
            "zxing-cpp>=2.2",
        ],
    },
    entry_points={
        "console_scripts": [
            "hall-appliance=appliance.cli:main",
            "hall-provision=provisioning.cli:main",
        ]
    },
)
