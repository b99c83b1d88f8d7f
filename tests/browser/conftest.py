"""The browser tier: pages harmcore writes, rendered by a real headless Chromium (Debian's chromium).

These tests (marked `browser`) run only when HARMCORE_BROWSER=1 is set; `scripts/browser/install.sh`
installs Chromium (apt-get, as root) and .ci/run runs both. Without HARMCORE_BROWSER=1 they are
deselected when pytest collects them (never skipped); with it and no Chromium they fail with a
line saying to run scripts/browser/install.sh.
"""

import os

import pytest

ENABLED = os.environ.get("HARMCORE_BROWSER") == "1"


def pytest_collection_modifyitems(config, items):
    mine = [item for item in items if "tests/browser/" in str(item.fspath)]
    for item in mine:
        item.add_marker(pytest.mark.browser)
    if not ENABLED and mine:
        config.hook.pytest_deselected(items=mine)
        items[:] = [item for item in items if item not in mine]
