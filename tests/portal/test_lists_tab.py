"""The portal's Lists tab in a real headless Chromium, on both backends: a bad rule shows each
problem at its JSON Pointer and creates nothing; a good rule's live count is the API preview's;
the list page shows the members; an edited rule is computed again; a static list's members are
added and removed; and the same over plain HTTP for what a browser cannot get wrong."""

from __future__ import annotations

import html
import json
import re
import time
from typing import Any

from api.test_lists import PRO, ROOT, tree
from conftest import LiveServer, Tenant, db_call
from pier.clock import now_ms
from portal.test_browser import ARGS, chromium

FREE = tree({"uuid": "f", "type": "string", "group": "user", "path": "$.plan", "operator": "=",
             "value": "free"})  # fmt: skip
BAD = {**ROOT, "colour": "red", "children": [
    {"uuid": "p", "type": "string", "group": "user", "path": "$.plan", "operator": "equals",
     "value": "pro"}]}  # fmt: skip


def seed(t: Tenant) -> None:
    for ext, plan in (("ann", "pro"), ("bob", "free"), ("cat", "pro")):
        assert t.post("identify", {"external_id": ext, "data": {"plan": plan}}).status_code == 204


def lists(t: Tenant) -> list[dict[str, Any]]:
    r = t.secret.get("/api/client/lists")
    assert r.status_code == 200, r.text
    return r.json()["results"]  # type: ignore[no-any-return]


def test_lists_tab_in_chromium(server: LiveServer, admin, tenant: Tenant) -> None:  # type: ignore[no-untyped-def]
    executable = chromium()
    from playwright.sync_api import expect, sync_playwright

    seed(tenant)
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 900})
            page.on("pageerror", lambda exc: problems.append(str(exc)))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            expected = "the server responded with a status of 422"  # the refusals tested here
            page.goto(f"{server.url}/portal/projects/{tenant.id}/lists")
            page.get_by_label("Email").fill(admin.email)
            page.get_by_label("Password").fill(admin.password)
            page.get_by_role("button", name="Log in").click()
            expect(page.get_by_role("heading", name="New list")).to_be_visible()
            expect(page.get_by_role("link", name="Lists")).to_have_attribute("aria-current", "page")

            # A bad rule: each problem at its pointer, live and after sending; nothing created.
            page.get_by_label("Name").fill("Pro users")
            editor = page.get_by_label("Rule (a Parcelvoy rule tree, JSON)")
            editor.fill(json.dumps(BAD, indent=2))
            shown = page.locator("[data-problems] li")
            expect(shown).to_have_count(2)
            expect(shown.nth(0)).to_contain_text("/rule/colour")
            expect(shown.nth(1)).to_contain_text("/rule/children/0/operator")
            expect(page.locator("[data-preview]")).to_contain_text("problems")
            # a problem's pointer selects its place in the rule
            shown.nth(1).get_by_role("button").click()
            selected = "el => el.value.slice(el.selectionStart, el.selectionEnd)"
            assert editor.evaluate(selected) == '"equals"'
            page.get_by_role("button", name="Create list").click()
            expect(page.locator("[data-problems] li")).to_have_count(2)
            expect(page.locator("[data-problems] li").nth(0)).to_contain_text(
                "unknown field 'colour'"
            )
            expect(page.locator("[data-problems] li").nth(1)).to_contain_text(
                "unknown operator 'equals'"
            )
            page.locator("[data-problems] li").nth(0).get_by_role("button").click()
            assert editor.evaluate(selected) == '"red"'  # also on the page the server made
            assert lists(tenant) == []
            editor.fill('{"uuid": ')
            expect(shown.first).to_contain_text("The rule is not valid JSON")

            # A good rule: the live count is the API's preview count.
            editor.fill(json.dumps(PRO, indent=2))
            api_count = tenant.secret.post("/api/client/lists/preview", json={"rule": PRO}).json()["count"]  # fmt: skip
            assert api_count == 2
            expect(page.locator("[data-preview]")).to_have_text(f"{api_count} users match now")
            expect(shown).to_have_count(0)
            page.get_by_role("button", name="Create list").click()
            expect(page).to_have_url(re.compile(r"/lists/\d+\?msg=created$"))
            expect(page.locator("[data-words]")).to_have_text("plan is pro")
            expect(page.locator(".list-facts [data-state]")).to_have_text("draft", timeout=15_000)
            members = page.locator("table.members tbody tr")
            expect(members).to_have_count(2)
            expect(members.nth(0)).to_contain_text("cat")  # newest first
            expect(members.nth(1)).to_contain_text("ann")
            (made,) = lists(tenant)
            assert (made["name"], made["users_count"], made["rule"]) == ("Pro users", 2, PRO)

            # Editing the rule computes the list again.
            page.get_by_label("Rule (a Parcelvoy rule tree, JSON)").fill(json.dumps(FREE))
            expect(page.locator("[data-preview]")).to_have_text("1 user matches now")
            page.get_by_label("Published (ready)").check()
            page.get_by_role("button", name="Save").click()
            expect(page.locator(".list-facts [data-state]")).to_have_text("ready", timeout=15_000)
            expect(page.locator("[data-words]")).to_have_text("plan is free")
            expect(members).to_have_count(1)
            expect(members.first).to_contain_text("bob")

            # The tab: each list with its count, state and rule in words.
            page.get_by_role("link", name="← All lists").click()
            row = page.locator(f"tr[data-list='{made['id']}']")
            expect(row.locator("[data-count]")).to_have_text("1")
            expect(row.locator("[data-state]")).to_have_text("ready")
            expect(row).to_contain_text("plan is free")

            # A static list: members added and removed by external id.
            page.get_by_label("Name").fill("Hand picked")
            page.get_by_label("Static (members you add)").check()
            page.get_by_role("button", name="Create list").click()
            expect(page).to_have_url(re.compile(r"/lists/\d+\?msg=created$"))
            page.get_by_label("External ids").fill("ann, nobody")
            page.get_by_role("button", name="Add", exact=True).click()
            expect(page.locator(".problems li")).to_contain_text("/external_ids/1")
            expect(members).to_have_count(0)
            page.get_by_label("External ids").fill("ann\nbob")
            page.get_by_role("button", name="Add", exact=True).click()
            expect(page.locator(".notice")).to_contain_text("Members added")
            expect(members).to_have_count(2)
            page.get_by_label("External ids").fill("bob")
            page.get_by_role("button", name="Remove").click()
            expect(members).to_have_count(1)
            expect(members.first).to_contain_text("ann")
        finally:
            browser.close()
    assert [p for p in problems if expected not in p] == []


def test_lists_over_http(portal, tenant: Tenant) -> None:  # type: ignore[no-untyped-def]
    """The forms without a browser: a static list's CSV import, a rule that is not JSON, the
    preview's JSON, a list of another project, and deleting."""
    seed(tenant)
    tab = f"/projects/{tenant.id}/lists"
    r = portal.submit(tab, {"name": "X", "type": "dynamic", "rule": "{nope"}, page=tab)
    assert r.status_code == 422 and "/rule" in r.text and "not valid JSON" in r.text
    r = portal.submit(tab, {"name": "", "type": "static"}, page=tab)
    assert r.status_code == 422 and "/name" in r.text
    assert lists(tenant) == []
    r = portal.submit(f"{tab}/preview.json", {"rule": json.dumps(PRO)}, page=tab)
    assert r.status_code == 200 and r.json() == {"count": 2}
    r = portal.submit(f"{tab}/preview.json", {"rule": json.dumps(BAD)}, page=tab)
    assert r.status_code == 422
    assert [e["path"] for e in r.json()["errors"]] == ["/rule/colour", "/rule/children/0/operator"]
    r = portal.submit(tab, {"name": "VIP", "type": "static"}, page=tab)
    assert r.status_code == 303, r.text
    (made,) = lists(tenant)
    one = f"{tab}/{made['id']}"
    token = portal.get(one).text
    from portal.conftest import csrf_of

    csv = b"external_id,plan\ndan,gold\nann,pro\n"
    r = portal.http.post(
        f"{one}/import",
        data={"csrf": csrf_of(token)},
        files={"file": ("vip.csv", csv, "text/csv")},
    )
    assert r.status_code == 303, r.text
    assert tenant.user("dan")["data"] == {"plan": "gold"}
    assert lists(tenant)[0]["users_count"] == 2
    r = portal.http.post(
        f"{one}/import",
        data={"csrf": csrf_of(token)},
        files={"file": ("bad.csv", b"email\nx@example.com\n", "text/csv")},
    )
    assert r.status_code == 422 and "the CSV needs an external_id column" in r.text
    # members are paged, 25 a page, newest users first
    many = "external_id\n" + "".join(f"m{i:02}\n" for i in range(30))
    r = tenant.secret.post(
        f"/api/client/lists/{made['id']}/users",
        content=many.encode(),
        headers={"Content-Type": "text/csv"},
    )
    assert r.status_code == 204, r.text
    member_link = f'href="/portal/projects/{tenant.id}/users/'
    first = portal.get(one).text
    assert first.count(member_link) == 25
    older = re.search(r'href="/portal(/projects/[^"]+\?cursor=[^"]+)">Older', first)
    assert older, first
    rest = portal.get(html.unescape(older.group(1))).text
    assert rest.count(member_link) == 32 - 25 and "Newest" in rest
    assert portal.get(f"/projects/{tenant.id + 1000}/lists/{made['id']}").status_code == 404
    assert portal.submit(f"{one}/delete", page=one).status_code == 303
    assert lists(tenant) == []


def test_a_failing_list_says_why(portal, tenant: Tenant) -> None:  # type: ignore[no-untyped-def]
    """A list whose computation fails shows the error on its page, which stops reloading itself
    (it would fail again meanwhile), and "failing" in the tab."""
    broken = '{"uuid": "r", "path": "$", "type": "wrapper", "group": "parent", "operator": "nand"}'
    row = db_call(
        tenant.server.database_url,
        lambda s: s.create_list(tenant.id, "Old", "dynamic", broken, now_ms()),
    )
    assert tenant.secret.post(f"/api/client/lists/{row.id}/recount").status_code == 200
    for _ in range(500):
        if lists(tenant)[0]["error"] is not None:
            break
        time.sleep(0.02)
    page = portal.get(f"/projects/{tenant.id}/lists/{row.id}").text
    assert "Computing it failed 1 time in a row" in page and "unknown operator" in page
    assert "data-loading" not in page
    assert "data-error>failing<" in portal.get(f"/projects/{tenant.id}/lists").text
