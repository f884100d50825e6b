"""GET /metrics: the Prometheus text format, with requests by route template and status, events
stored, batch sizes, commit latency and the writer's queue depth; and prometheus_client's
multiprocess mode under `pier serve --workers 2`."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import Tenant
from faults.pierproc import PierProcess, new_project
from pier.settings import Settings, layout


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics: (name, sorted labels) → value."""
    r = httpx.get(f"{url}/metrics", timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def requests(samples: dict, route: str, status: int, method: str = "POST") -> float:
    labels = (("method", method), ("route", route), ("status", str(status)))
    return samples.get(("pier_http_requests_total", labels), 0.0)


def value(samples: dict, name: str) -> float:
    return samples.get((name, ()), 0.0)


def test_requests_events_batches_and_latency_are_counted(tenant: Tenant) -> None:
    url = tenant.server.url
    before = scrape(url)
    for i in range(3):
        r = tenant.post("events", [{"name": "m", "external_id": f"met-{i}"}] * 4)
        assert r.status_code == 204
    assert tenant.post("events", [{"name": ""}]).status_code == 422
    tenant.user("met-1")
    assert tenant.public.get("/no/such/path").status_code == 404
    after = scrape(url)

    assert (
        requests(after, "/api/client/events", 204) - requests(before, "/api/client/events", 204)
        == 3
    )
    assert (
        requests(after, "/api/client/events", 422) - requests(before, "/api/client/events", 422)
        == 1
    )
    route = "/api/client/users/{ref}"
    assert requests(after, route, 200, "GET") - requests(before, route, 200, "GET") == 1
    assert requests(after, "unmatched", 404, "GET") - requests(before, "unmatched", 404, "GET") == 1
    assert not [k for k in after if "met-1" in str(k)]  # route templates, never raw paths

    assert (
        value(after, "pier_events_stored_total") - value(before, "pier_events_stored_total") >= 12
    )
    batches = value(after, "pier_writer_batch_items_count") - value(
        before, "pier_writer_batch_items_count"
    )
    assert batches >= 3
    items = value(after, "pier_writer_batch_items_sum") - value(
        before, "pier_writer_batch_items_sum"
    )
    assert items >= 12
    latency = value(after, "pier_writer_commit_seconds_count") - value(
        before, "pier_writer_commit_seconds_count"
    )
    assert latency == batches
    assert value(after, "pier_writer_commit_seconds_sum") > 0
    assert ("pier_writer_queue_depth", ()) in after


def test_duplicates_are_counted_apart_from_stored_events(tenant: Tenant) -> None:
    url = tenant.server.url
    body = [{"name": "dup", "external_id": "dup-1", "message_id": f"dup-{i}"} for i in range(5)]
    before = scrape(url)
    assert tenant.post("events", body).status_code == 204  # 5 stored
    assert tenant.post("events", body).status_code == 204  # a retry: 5 duplicates
    assert (
        tenant.post("events", body[:2] + [body[0] | {"message_id": "dup-new"}]).status_code == 204
    )
    after = scrape(url)

    assert [e["name"] for e in tenant.events("dup-1")].count("dup") == 6
    stored = value(after, "pier_events_stored_total") - value(before, "pier_events_stored_total")
    dropped = value(after, "pier_events_duplicate_total") - value(
        before, "pier_events_duplicate_total"
    )
    assert (stored, dropped) == (6, 7)


def test_mounted_and_templated_routes_are_labelled_by_template(tenant: Tenant) -> None:
    tenant.public.get("/portal/login")
    tenant.public.get("/portal/projects/12345")
    tenant.public.get("/portal/static/nope.css")
    labels = {
        dict(k[1]).get("route") for k in scrape(tenant.server.url) if k[0].startswith("pier_http")
    }
    assert {"/portal/login", "/portal/projects/{pid}", "/portal/static/*"} <= labels
    assert not [label for label in labels if label and "12345" in label]


def test_multiprocess_mode_adds_up_every_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "prom"
    folder.mkdir()
    (folder / "counter_999999.db").write_bytes(b"stale")  # a previous run's: removed at start
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))
    url = f"sqlite:///{tmp_path}/pier.db"
    project = new_project(url)
    server = PierProcess(url, tmp_path / "server.log", "--workers", "2")
    try:
        assert not (folder / "counter_999999.db").exists()
        headers = {"Authorization": f"Bearer {project.public_key}"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as http:
            for i in range(40):  # new connections: the workers share them out
                body = [{"name": "mp", "external_id": f"mp-{i}"}]
                assert (
                    http.post(
                        "/api/client/events", json=body, headers={"Connection": "close"}
                    ).status_code
                    == 204
                )
        pids = {p.name.rsplit("_", 1)[1] for p in folder.glob("counter_*.db")}
        assert len(pids) >= 2, pids  # both workers wrote their counters there
        for _ in range(6):  # whichever worker answers, it answers for both
            samples = scrape(server.url)
            assert requests(samples, "/api/client/events", 204) == 40
            assert value(samples, "pier_events_stored_total") == 40
    finally:
        server.terminate()


@pytest.mark.parametrize("workers", ["2", "0"])  # two workers; the default layout here
def test_several_workers_add_up_without_any_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: str
) -> None:
    """Every process's counters reach /metrics, whichever answers; with the default layout
    on two cores, the one worker is pier serve itself (settings.layout)."""
    cores = len(os.sched_getaffinity(0))
    http_workers, writer_process = layout(Settings(workers=int(workers)), cores)
    if not writer_process:
        pytest.skip("one core: pier serve's default layout is one process")
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    temp = tmp_path / "tmp"  # where `pier serve` makes its private metrics directory
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    url = f"sqlite:///{tmp_path}/pier.db"
    project = new_project(url)
    # the workers alone (the delivery process writes its counters there too: its metrics on
    # the workers' /metrics are tests/delivery/test_processes.py's)
    server = PierProcess(url, tmp_path / "server.log", "--workers", workers, "--no-deliver-process")
    try:
        headers = {"Authorization": f"Bearer {project.public_key}", "Connection": "close"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as http:
            for i in range(20):  # new connections: the workers share them out
                body = [{"name": "mp", "external_id": f"mp-{i}"}]
                assert http.post("/api/client/events", json=body).status_code == 204
        for _ in range(8):  # whichever worker answers (a connection each), it answers for both
            samples = scrape(server.url)
            assert requests(samples, "/api/client/events", 204) == 20
            assert value(samples, "pier_events_stored_total") == 20
        (private,) = temp.glob("pier-metrics-*")
        pids = {p.name.rsplit("_", 1)[1] for p in private.glob("counter_*.db")}
        # the workers answered, and the writer process stored the events: each wrote its
        # counters there
        assert len(pids) == http_workers + 1, pids
        assert f"{server.writer_pids()[0]}.db" in pids, pids
        assert server.terminate() == 0
    finally:
        server.kill()
    assert not private.exists()  # removed at exit
