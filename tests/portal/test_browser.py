"""The portal in a real headless Chromium: Debian's `chromium` driven by Playwright.

Without /usr/bin/chromium (.ci/install-chromium.sh installs it) the test is skipped, or fails
when PIER_REQUIRE_BROWSER=1."""

from __future__ import annotations

import os
import re
import time

import httpx
import pytest

from conftest import LiveServer
from pier.api.auth import CACHE_SECONDS

CHROMIUM = os.environ.get("PIER_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium() -> str:
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    reason = f"no Chromium at {CHROMIUM}: run .ci/install-chromium.sh"
    if os.environ.get("PIER_REQUIRE_BROWSER") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def test_log_in_make_a_key_watch_events_arrive_and_revoke_it(server: LiveServer, admin) -> None:
    executable = chromium()
    from playwright.sync_api import expect, sync_playwright

    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 800})
            page.on("pageerror", lambda exc: problems.append(str(exc)))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)

            # Every page but the login page sends a visitor to log in first.
            page.goto(f"{server.url}/portal/projects")
            expect(page).to_have_url(re.compile(r"/portal/login\?next="))
            page.get_by_label("Email").fill(admin.email)
            page.get_by_label("Password").fill(admin.password)
            page.get_by_role("button", name="Log in").click()
            expect(page).to_have_url(f"{server.url}/portal/projects")

            page.get_by_label("Name").fill("Browser shop")
            page.get_by_role("button", name="Create project").click()
            expect(page).to_have_url(re.compile(r"/portal/projects/\d+/keys"))
            expect(page.locator(".notice")).to_contain_text("Project created")

            page.get_by_label("Name").fill("web")
            page.get_by_label("Public").check()
            page.get_by_role("button", name="Create key").click()
            field = page.locator("input.key")
            expect(field).to_have_value(re.compile(r"^pk_[0-9a-f]{32}$"))
            key = field.input_value()
            page.get_by_role("button", name="Copy").click()
            expect(page.get_by_role("button", name="Copied")).to_be_visible()

            # The live view shows events sent with the new key, without a reload.
            page.get_by_role("link", name="Live events").click()
            expect(page.locator("#chart svg rect.bar")).to_have_count(60)
            rows = page.locator("#live tbody tr")
            expect(rows).to_have_count(0)
            api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"})
            first = [{"name": "browser_first", "external_id": "shopper", "data": {"n": 1}}]
            assert api.post("/api/client/events", json=first).status_code == 204
            expect(rows.first).to_contain_text("browser_first", timeout=15_000)
            expect(rows.first).to_contain_text("shopper")
            second = [{"name": "browser_second", "external_id": "shopper"}]
            assert api.post("/api/client/events", json=second).status_code == 204
            expect(rows.first).to_contain_text("browser_second", timeout=15_000)
            expect(rows).to_have_count(4)  # user_created, user_updated, browser_first, _second
            expect(page.locator("[data-status]")).to_contain_text("Live")

            # Revoking the key (after a confirmation) makes the API refuse it.
            page.get_by_role("link", name="API keys").click()
            page.once("dialog", lambda dialog: dialog.accept())
            page.get_by_role("button", name="Revoke").click()
            expect(page.locator(".notice")).to_contain_text("Key revoked")
            expect(page.locator("tr.revoked")).to_have_count(1)
            time.sleep(CACHE_SECONDS + 0.5)  # the API's key cache forgets it (contract: 5 s)
            refused = api.post("/api/client/events", json=second)
            assert refused.status_code == 401 and refused.json()["code"] == 1000
            api.close()

            page.get_by_role("button", name="Log out").click()
            expect(page).to_have_url(f"{server.url}/portal/login")
        finally:
            browser.close()
    assert problems == []


def test_an_unknown_page_shows_the_portal_with_a_way_back(server: LiveServer, admin) -> None:
    executable = chromium()
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{server.url}/portal/login")
            page.get_by_label("Email").fill(admin.email)
            page.get_by_label("Password").fill(admin.password)
            page.get_by_role("button", name="Log in").click()
            expect(page).to_have_url(f"{server.url}/portal/projects")

            response = page.goto(f"{server.url}/portal/no/such/page")
            assert response is not None and response.status == 404
            expect(page.get_by_role("heading", name="Page not found")).to_be_visible()
            expect(page.locator("header .who")).to_have_text(admin.email)  # the portal's layout
            page.get_by_role("link", name="Back to the projects").click()
            expect(page).to_have_url(f"{server.url}/portal/projects")
            expect(page.get_by_role("button", name="Create project")).to_be_visible()
        finally:
            browser.close()
