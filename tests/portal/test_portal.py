"""The portal over HTTP: login required, sessions, CSRF, and every page rendering real data."""

from __future__ import annotations

import re
import sqlite3
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx
from click.testing import CliRunner

from conftest import LiveServer, db_call
from pier.cli import main
from pier.clock import now_ms
from pier.portal.auth import SESSION_COOKIE, hash_password, token_hash
from pier.settings import Settings

PROJECT = "/projects/{pid}"


def project_count(server: LiveServer) -> int:
    return len(db_call(server.database_url, lambda s: s.list_projects()))


def create_project(portal, name: str = "Shop") -> int:
    r = portal.submit("/projects", {"name": name})
    assert r.status_code == 303, r.text
    found = re.fullmatch(r"/portal/projects/(\d+)/keys\?msg=project-created", r.headers["location"])
    assert found, r.headers["location"]
    return int(found.group(1))


# -- access ---------------------------------------------------------------------------------------
def test_only_the_login_page_is_open(anonymous, server: LiveServer) -> None:
    for path in ("/", "/projects", "/projects/1", "/projects/1/keys", "/projects/1/users/1"):
        r = anonymous.get(path)
        assert r.status_code == 303, path
        assert r.headers["location"].startswith("/portal/login?next=/portal/"), path
    r = anonymous.get("/projects/1/users", params={"q": "a b"})
    assert r.headers["location"] == "/portal/login?next=/portal/projects/1/users%3Fq%3Da%2Bb"
    for path in ("/projects/1/live.json", "/projects/1/chart.svg"):
        r = anonymous.get(path)
        assert r.status_code == 401 and r.json()["status"] == "error", path
    before = project_count(server)
    posts = ("/projects", "/projects/1/keys", "/projects/1/keys/1/revoke", "/logout")
    for path in (*posts, "/projects/1/users/1/delete"):
        r = anonymous.http.post(path, data={"name": "x", "scope": "public", "csrf": "x"})
        assert r.status_code == 303 and r.headers["location"] == "/portal/login", path
    assert project_count(server) == before
    assert anonymous.get("/login").status_code == 200
    css = anonymous.get("/static/portal.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")


def test_login_sets_a_safe_session_cookie_and_logout_ends_it(anonymous, admin) -> None:
    r = anonymous.login(admin.email.upper(), admin.password)  # emails are case-insensitive
    assert r.status_code == 303 and r.headers["location"] == "/portal/projects"
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE))
    flags = {part.strip().lower() for part in cookie.split(";")}
    assert {"httponly", "samesite=lax", "path=/portal"} <= flags
    page = anonymous.get("/projects")
    assert page.status_code == 200 and admin.email in page.text
    assert anonymous.get("/login").headers["location"] == "/portal/projects"

    token = anonymous.http.cookies[SESSION_COOKIE]
    r = anonymous.submit("/logout")
    assert r.status_code == 303 and r.headers["location"] == "/portal/login"
    assert anonymous.get("/projects").status_code == 303
    # The session is gone on the server too: the old cookie no longer works.
    with httpx.Client(base_url=anonymous.server.url) as replay:
        replay.cookies.set(SESSION_COOKIE, token)
        assert replay.get("/portal/projects").status_code == 303


def test_failed_logins(anonymous, admin) -> None:
    r = anonymous.login(admin.email, "wrong password")
    assert r.status_code == 401 and "Wrong email or password." in r.text
    assert SESSION_COOKIE not in r.headers.get("set-cookie", "")
    r = anonymous.login("nobody@example.com", admin.password)
    assert r.status_code == 401 and "Wrong email or password." in r.text
    # The login form's own CSRF token must match its cookie.
    form = {"email": admin.email, "password": admin.password}
    assert anonymous.http.post("/login", data=form).status_code == 403
    assert anonymous.http.post("/login", data={**form, "csrf": "forged"}).status_code == 403
    assert anonymous.get("/projects").status_code == 303


def test_login_goes_back_to_the_page_asked_for_but_only_inside_the_portal(anonymous, admin) -> None:
    r = anonymous.login(admin.email, admin.password, "/portal/projects/7/keys")
    assert r.headers["location"] == "/portal/projects/7/keys"
    for bad in ("https://evil.example/", "//evil.example/portal/", "/portal//evil.example", "/x"):
        anonymous.http.cookies.clear()
        r = anonymous.login(admin.email, admin.password, bad)
        assert r.headers["location"] == "/portal/projects", bad


def test_too_many_failed_logins_pause_the_address(anonymous, admin, server: LiveServer) -> None:
    try:
        for _ in range(Settings.login_failures):
            assert anonymous.login(admin.email, "wrong").status_code == 401
        r = anonymous.login(admin.email, admin.password)
        assert r.status_code == 429 and "Too many failed logins" in r.text
    finally:
        server.state.login_throttle.clear()
    assert anonymous.login(admin.email, admin.password).status_code == 303


def test_every_form_needs_the_session_csrf_token(portal, server: LiveServer) -> None:
    before = project_count(server)
    r = portal.http.post("/projects", data={"name": "no token"})
    assert r.status_code == 403 and "Form expired" in r.text
    r = portal.http.post("/projects", data={"name": "forged", "csrf": "forged"})
    assert r.status_code == 403
    token = re.search(r'name="csrf" value="([^"]+)"', portal.get("/projects").text).group(1)  # type: ignore[union-attr]
    r = portal.http.post(
        "/projects",
        data={"name": "other site", "csrf": token},
        headers={"Origin": "https://evil.example"},
    )
    assert r.status_code == 403
    assert project_count(server) == before
    assert portal.http.post("/logout").status_code == 403  # logging out is a form too
    assert portal.get("/projects").status_code == 200
    create_project(portal)
    assert project_count(server) == before + 1


def test_sessions_expire(server: LiveServer, admin) -> None:
    async def expired(store):
        found = await store.find_admin(admin.email)
        now = now_ms()
        await store.create_session(token_hash("old"), found.id, "csrf", now - 10_000, now - 1)
        return await store.get_session(token_hash("old"), now)

    assert db_call(server.database_url, expired) is None


# -- pages ----------------------------------------------------------------------------------------
def test_pages_show_projects_keys_users_and_events(portal, server: LiveServer) -> None:
    pid = create_project(portal, "Pages <shop>")
    base = PROJECT.format(pid=pid)
    projects = portal.get("/projects")
    assert "Pages &lt;shop&gt;" in projects.text and f'href="/portal{base}"' in projects.text
    headers = projects.headers
    assert "default-src 'self'" in headers["content-security-policy"]
    assert headers["cache-control"] == "no-store" and headers["x-frame-options"] == "DENY"

    # Keys: a public key is listed with its value; a secret key is shown once.
    r = portal.submit(f"{base}/keys", {"name": "web", "scope": "public"}, f"{base}/keys")
    assert r.status_code == 303
    public = re.search(r'value="(pk_[0-9a-f]{32})"', portal.get(f"{base}/keys").text).group(1)  # type: ignore[union-attr]
    r = portal.submit(f"{base}/keys", {"name": "server", "scope": "secret"}, f"{base}/keys")
    assert r.status_code == 201 and "shown only this once" in r.text
    secret = re.search(r'value="(sk_[0-9a-f]{32})"', r.text).group(1)  # type: ignore[union-attr]
    keys_page = portal.get(f"{base}/keys").text
    assert secret not in keys_page and f"{secret[:7]}…" in keys_page and public in keys_page
    r = portal.submit(f"{base}/keys", {"scope": "admin"}, f"{base}/keys")
    assert r.status_code == 422

    # Data sent with the new keys shows up on the pages.
    api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {public}"})
    read = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {secret}"})
    identify = {"external_id": "ann", "anonymous_id": "ann-phone", "email": "ann@example.com"}
    assert api.post("/api/client/identify", json=identify).status_code == 204
    device = {"external_id": "ann", "device_id": "ann-iphone", "os": "iOS", "model": "iPhone"}
    device |= {"app_build": "7", "app_version": "1.2"}
    assert api.post("/api/client/devices", json=device).status_code == 204
    events = [{"name": "<script>alert(1)</script>", "external_id": "ann", "data": {"n": 1}}]
    events += [{"name": "checkout", "external_id": "ann"}, {"name": "visit", "anonymous_id": "v"}]
    assert api.post("/api/client/events", json=events).status_code == 204

    live = portal.get(base)
    assert live.status_code == 200
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in live.text and "<script>alert" not in live.text
    assert "checkout" in live.text and "Newest events" in live.text
    feed = portal.get(f"{base}/live.json").json()
    names = ["visit", "user_updated", "user_created", "checkout"]
    assert [e["name"] for e in feed["events"]][:4] == names
    assert feed["events"][0]["user"] == "v" and feed["events"][3]["user"] == "ann"
    assert portal.get(f"{base}/live.json", params={"after": feed["last_id"]}).json() == {
        "events": [],
        "last_id": feed["last_id"],
    }
    chart = portal.get(f"{base}/chart.svg")
    assert chart.headers["content-type"].startswith("image/svg+xml")
    svg = ET.fromstring(chart.text)
    bars = svg.findall("{http://www.w3.org/2000/svg}rect")
    assert len(bars) == 60 and float(bars[-1].get("height")) > 0  # type: ignore[arg-type]

    users = portal.get(f"{base}/users")
    assert "ann@example.com" in users.text and "ann-phone" in users.text
    found = portal.get(f"{base}/users", params={"q": "ann@example.com"}).text
    assert "ann-phone" in found and ">v<" not in found
    assert "No user has" in portal.get(f"{base}/users", params={"q": "nobody"}).text
    uid = re.search(rf'href="/portal{base}/users/(\d+)">ann<', users.text).group(1)  # type: ignore[union-attr]
    page = portal.get(f"{base}/users/{uid}").text
    for shown in ("ann@example.com", "ann-phone", "ann-iphone", "checkout", "user_created"):
        assert shown in page, shown
    assert page.index("checkout") < page.index("user_created")  # newest first
    assert "&lt;script&gt;" in page and "<script>alert" not in page

    # Deleting the user from its page deletes it for the API too.
    r = portal.submit(f"{base}/users/{uid}/delete", page=f"{base}/users/{uid}")
    assert r.status_code == 303 and r.headers["location"].endswith("msg=user-deleted")
    assert read.get("/api/client/users/ann").status_code == 404
    assert portal.get(f"{base}/users/{uid}").status_code == 404

    # Revoking: the key is listed as revoked and the API refuses it.
    key_id = re.search(r"/keys/(\d+)/revoke", portal.get(f"{base}/keys").text).group(1)  # type: ignore[union-attr]
    r = portal.submit(f"{base}/keys/{key_id}/revoke", page=f"{base}/keys")
    assert r.status_code == 303 and r.headers["location"].endswith("msg=key-revoked")
    assert "revoked 20" in portal.get(f"{base}/keys", params={"msg": "key-revoked"}).text
    api.close()
    read.close()


def test_unknown_projects_users_and_keys_are_404(portal) -> None:
    pid = create_project(portal, "Mine")
    other = create_project(portal, "Other")
    portal.submit(f"/projects/{other}/keys", {"scope": "public"}, f"/projects/{other}/keys")
    other_key = re.search(r"/keys/(\d+)/revoke", portal.get(f"/projects/{other}/keys").text)
    assert portal.get("/projects/99999999").status_code == 404
    assert portal.get("/projects/99999999/live.json").status_code == 404
    assert portal.get(f"/projects/{pid}/users/99999999").status_code == 404
    r = portal.submit(
        f"/projects/{pid}/keys/{other_key.group(1)}/revoke",  # type: ignore[union-attr]
        page=f"/projects/{pid}/keys",
    )
    assert r.status_code == 404  # a key of another project
    assert "revoked 20" not in portal.get(f"/projects/{other}/keys").text
    r = portal.submit("/projects", {"name": "   "})
    assert r.status_code == 422 and "1 to 100 characters" in r.text


def test_an_unknown_portal_page_is_an_html_page_with_a_way_back(anonymous, portal, admin) -> None:
    paths = ("/nope", "/projects/1/nope/deeper", "/login/extra")
    # a project page with an id that cannot be one: the login first, then a 404 in the layout
    assert anonymous.get("/projects/abc").status_code == 303
    r = portal.get("/projects/abc")
    assert r.status_code == 404 and "There is no such project" in r.text
    assert 'href="/portal/static/portal.css"' in r.text
    for client, who in ((anonymous, None), (portal, admin.email)):
        for path in paths:
            r = client.get(path)
            assert r.status_code == 404, path
            assert r.headers["content-type"].startswith("text/html"), path
            assert r.headers["content-security-policy"].startswith("default-src 'self'")
            assert "Page not found" in r.text and 'href="/portal/projects"' in r.text, path
            assert 'href="/portal/static/portal.css"' in r.text  # the portal's layout
            assert (who is not None) == ("Log out" in r.text), path  # who is logged in
            assert who is None or who in r.text
    r = anonymous.http.post("/nope", data={"x": "1"})
    assert r.status_code == 404 and "Page not found" in r.text
    assert anonymous.http.post("/projects/1/chart.svg").status_code == 405  # a known path


# -- pier admins ----------------------------------------------------------------------------------
def test_admins_create_from_the_command_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/pier.db"
    runner = CliRunner()

    def admins(*args: str, stdin: str | None = None):
        return runner.invoke(main, ["admins", *args, "--database-url", url], input=stdin)

    r = admins("create", "Boss@Example.com", "--password-stdin", stdin="long enough secret\n")
    assert r.exit_code == 0, r.output
    r = admins("create", "two@example.com", stdin="another secret\nanother secret\n")
    assert r.exit_code == 0, r.output  # asked for twice at the prompt
    listed = admins("list").stdout
    assert "boss@example.com" in listed and "two@example.com" in listed
    r = admins("create", "boss@example.com", "--password-stdin", stdin="long enough secret\n")
    assert r.exit_code != 0 and "already exists" in r.output
    r = admins("create", "short@example.com", "--password-stdin", stdin="short\n")
    assert r.exit_code != 0 and "at least" in r.output
    r = admins("create", "not-an-email", "--password-stdin", stdin="long enough secret\n")
    assert r.exit_code != 0
    stored = sqlite3.connect(tmp_path / "pier.db").execute("SELECT password_hash FROM admins")
    hashes = [row[0] for row in stored]
    assert len(hashes) == 2 and all(h.startswith("$argon2id$") for h in hashes)
    assert hash_password("x") != hash_password("x")  # salted
