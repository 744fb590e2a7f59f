"""The dashboard in a real headless Chromium (Playwright driving the system's Chromium) against a
real server on 127.0.0.1: the page, the token box, live lists, a job's detail, requeueing a dead
letter and pausing a queue by clicking, and the page mounted under a prefix.

Needs the `playwright` package (pip) and a Chromium binary (Debian: `apt-get install chromium`);
without either the tests skip. Playwright's own browser downloads are not used."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from jobserver import JobContext, JobServer, PermanentError, SystemClock
from jobserver.tasks import Registry, task

from ..conftest import CHROMIUM, CHROMIUM_SKIP, ServerFactory, eventually

pw = pytest.importorskip(
    "playwright.async_api",
    reason="the dashboard tests need Playwright for Python: pip install playwright",
)

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason=CHROMIUM_SKIP)
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TOKEN = "dashboard-full-token"
READ_TOKEN = "dashboard-read-token"
UI_TIMEOUT_MS = 8_000  # the page polls every 2 s
pw.expect.set_options(timeout=UI_TIMEOUT_MS)  # for expect(); pages get it for their waits

reg = Registry()
WIDTHS = [pytest.param(1400, id="1400px"), pytest.param(390, id="390px")]  # a desktop, a phone


@task(registry=reg, max_retries=0)
async def doomed(reason: str) -> None:
    raise PermanentError(reason)


@task(registry=reg)
async def stepped(ctx: JobContext) -> str:
    await ctx.step("fetch", _fetched)
    await ctx.wait_for_event("go-ahead", timeout_s=3600)
    return "done"


def _fetched() -> dict[str, int]:
    return {"rows": 3}


@task(registry=reg)
async def crawl(ctx: JobContext, pages: int) -> int:
    ctx.progress(0.5, f"half of {pages} pages")
    await asyncio.sleep(60)  # until cancelled
    return pages


class Api:
    """The HTTP API as a test client sees it."""

    def __init__(self, base: str, session: aiohttp.ClientSession, token: str | None) -> None:
        self.base = base
        self.session = session
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.session.request(
            method, self.base + path, json=body, headers=self.headers
        ) as resp:
            raw = await resp.read()
            return resp.status, (await resp.json() if raw else None)

    async def get(self, path: str) -> Any:
        status, data = await self.call("GET", path)
        assert status == 200, data
        return data

    async def enqueue(self, **body: Any) -> int:
        status, data = await self.call("POST", "/jobs", body)
        assert status == 202, data
        return int(data["id"])


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with pw.async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


async def new_page(browser: Any, width: int = 1400) -> tuple[Any, list[str]]:
    """A page with the default timeout for waits, and a list that collects script errors."""
    page = await browser.new_page(viewport={"width": width, "height": 1000})
    page.set_default_timeout(UI_TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return page, errors


async def start(make_server: ServerFactory, **kwargs: Any) -> tuple[JobServer, str]:
    server = await make_server(tasks=list(reg), clock=SystemClock(), **kwargs)
    [base] = await server.serve("127.0.0.1", 0)
    return server, base


async def sign_in(page: Any, token: str) -> None:
    await page.locator("#token-box").wait_for(state="visible")
    await page.fill("#token-input", token)
    await page.click("#token-save")
    await page.locator("#token-box").wait_for(state="hidden")


# `browser` comes before `make_server` in each test's arguments: the server stops before the
# browser closes, so closing it never stalls a running server's event loop.
@pytest.mark.parametrize("width", WIDTHS)
async def test_dashboard_with_a_token(
    browser: Any,
    make_server: ServerFactory,
    session: aiohttp.ClientSession,
    tmp_path: Path,
    width: int,
) -> None:
    _, base = await start(make_server, tokens=[TOKEN])
    api = Api(base, session, TOKEN)
    page, errors = await new_page(browser, width)

    # the page loads without a token, asks for one on the API's 401, and keeps it
    response = await page.goto(base + "/")
    assert response is not None and response.status == 200
    await sign_in(page, TOKEN)
    assert await page.evaluate("Object.values(localStorage)") == [TOKEN]

    # a job enqueued over HTTP shows up in the jobs list
    echo_id = await api.enqueue(task="echo", args=["hello"])
    await page.click("#refresh")  # or wait for the next poll, up to 2 s
    echo_row = page.locator(f'#jobs tbody tr[data-id="{echo_id}"]')
    await echo_row.wait_for()
    await pw.expect(echo_row).to_contain_text("echo")

    # a job's detail: its progress bar while it runs, then cancelled by clicking
    crawl_id = await api.enqueue(task="crawl", kwargs={"pages": 8})
    await eventually(lambda: api.get(f"/jobs/{crawl_id}"), lambda j: j["progress"] is not None)
    await page.click("#refresh")
    await page.locator(f'#jobs tbody tr[data-id="{crawl_id}"]').click()
    await pw.expect(page.locator("#detail .progress .msg")).to_have_text("half of 8 pages")
    bar = page.locator('#detail [role="progressbar"]')
    await pw.expect(bar).to_have_attribute("aria-valuenow", "50")
    await pw.expect(page.locator("#detail")).to_contain_text("max retries")
    await page.click("#detail-cancel")
    cancelled = await eventually(
        lambda: api.get(f"/jobs/{crawl_id}"), lambda j: j["status"] == "cancelled"
    )
    assert cancelled["cancel_requested"] is True
    await pw.expect(page.locator("#detail .badge").first).to_have_text("cancelled")

    # a job that fails for good lands in the dead-letter table; requeue it by clicking
    doomed_id = await api.enqueue(task="doomed", args=["no such user"], queue="mail")
    await eventually(lambda: api.get(f"/jobs/{doomed_id}"), lambda j: j["is_terminal"])
    await page.click("#refresh")
    dl_row = page.locator(f'#dead-letters tbody tr[data-job-id="{doomed_id}"]')
    await dl_row.wait_for()
    await pw.expect(dl_row).to_contain_text("PermanentError")
    await pw.expect(dl_row).to_contain_text("no such user")
    dead_letter_id = int(await dl_row.get_attribute("data-id") or 0)
    await dl_row.locator('button[data-action="requeue"]').click()
    notice = page.locator("#alerts .alert.ok", has_text=f"Dead letter {dead_letter_id} requeued")
    await notice.wait_for()
    match = re.search(r"as job (\d+)", await notice.inner_text())
    assert match, await notice.inner_text()
    new_id = int(match.group(1))
    assert new_id > doomed_id
    requeued = await api.get(f"/jobs/{new_id}")
    assert (requeued["task"], requeued["args"], requeued["queue"]) == (
        "doomed",
        ["no such user"],
        "mail",
    )
    status, _ = await api.call("GET", f"/dead-letters/{dead_letter_id}")
    assert status == 404  # requeueing took it out of the table
    # the requeued job fails again: a new dead letter, deleted in bulk by selecting all shown
    await eventually(
        lambda: api.get("/dead-letters"),
        lambda d: [x["job_id"] for x in d["items"]] == [new_id],
    )
    await page.click("#refresh")
    await page.locator(f'#dead-letters tbody tr[data-job-id="{new_id}"]').wait_for()
    await page.select_option("#dl-task", "doomed")
    await page.click("#dl-select-shown")
    await pw.expect(page.locator("#dl-selected")).to_have_text("1 selected")
    page.once("dialog", lambda dialog: dialog.accept())
    await page.click("#dl-delete-selected")
    await eventually(lambda: api.get("/dead-letters"), lambda d: d["items"] == [])
    await pw.expect(
        page.locator("#alerts .alert.ok", has_text="1 dead letter deleted")
    ).to_be_visible()

    # pause a queue by clicking; the API says it is paused; resume it the same way
    queue_row = page.locator('#queues tbody tr[data-queue="default"]')
    await queue_row.locator('button[data-action="pause"]').click()
    queues = await eventually(
        lambda: api.get("/queues"),
        lambda d: any(q["name"] == "default" and q["paused"] for q in d["items"]),
    )
    assert {q["name"]: q["paused"] for q in queues["items"]}["mail"] is False
    await pw.expect(queue_row.locator(".badge")).to_have_text("paused")
    # a job in the paused queue says why it waits
    waiting_id = await api.enqueue(task="echo", args=["later"])
    await page.click("#refresh")
    await page.locator(f'#jobs tbody tr[data-id="{waiting_id}"]').click()
    await pw.expect(page.locator('#detail .waiting[data-code="queue_paused"]')).to_be_visible()
    await page.screenshot(
        path=os.environ.get("JOBSERVER_DASHBOARD_SCREENSHOT") or str(tmp_path / "dashboard.png"),
        full_page=True,
    )
    await queue_row.locator('button[data-action="resume"]').click()
    await eventually(lambda: api.get("/queues/default"), lambda q: q["paused"] is False)
    await eventually(lambda: api.get(f"/jobs/{waiting_id}"), lambda j: j["is_terminal"])

    # the filters: by status, then by task
    await page.select_option("#f-status", "cancelled")
    await pw.expect(page.locator("#jobs tbody tr")).to_have_count(1)
    await pw.expect(page.locator("#jobs tbody tr")).to_have_attribute("data-id", str(crawl_id))
    await page.select_option("#f-status", "")
    await page.fill("#f-task", "doomed")
    await page.press("#f-task", "Enter")
    await pw.expect(page.locator("#jobs tbody tr")).to_have_count(2)
    ids = {
        int(await r.get_attribute("data-id") or 0)
        for r in await page.locator("#jobs tbody tr").all()
    }
    assert ids == {doomed_id, new_id}
    assert errors == []


@pytest.mark.parametrize("width", WIDTHS)
async def test_dashboard_with_a_read_only_token(
    browser: Any, make_server: ServerFactory, session: aiohttp.ClientSession, width: int
) -> None:
    _, base = await start(make_server, tokens=[TOKEN], read_tokens=[READ_TOKEN])
    api = Api(base, session, TOKEN)
    job_id = await api.enqueue(task="echo", args=["seen"])
    page, errors = await new_page(browser, width)
    await page.goto(base + "/")

    # a wrong token is refused: the box says so and stays
    await page.locator("#token-box").wait_for(state="visible")
    await page.fill("#token-input", "not-a-token")
    await page.click("#token-save")
    await pw.expect(page.locator("#token-reason")).to_contain_text("The saved token was refused")
    await pw.expect(page.locator("#token-box")).to_be_visible()

    # a read-only token shows everything but the controls it may not use (issue 20: they
    # were shown, and answered 403)
    await sign_in(page, READ_TOKEN)
    await page.locator(f'#jobs tbody tr[data-id="{job_id}"]').wait_for()
    pause = page.locator('#queues tbody tr[data-queue="default"] button[data-action="pause"]')
    await pw.expect(pause).to_be_hidden()
    await page.locator(f'#jobs tbody tr[data-id="{job_id}"]').click()
    await pw.expect(page.locator("#detail-title")).to_contain_text(f"Job {job_id} ")
    for write in ("#detail-cancel", "#detail-again", "#detail-delete", "#dl-requeue-matching"):
        await pw.expect(page.locator(write)).to_be_hidden()
    reader = Api(base, session, READ_TOKEN)
    assert (await reader.call("POST", "/queues/default/pause"))[0] == 403  # the API refuses too
    assert (await api.get("/queues/default"))["paused"] is False
    # with the full token again, the controls come back
    await page.click("#token-button")
    await sign_in(page, TOKEN)
    await pw.expect(pause).to_be_visible()
    assert errors == []


@pytest.mark.parametrize("width", WIDTHS)
async def test_dashboard_mounted_under_a_prefix(
    browser: Any, make_server: ServerFactory, session: aiohttp.ClientSession, width: int
) -> None:
    """Embedded in an app at /jobs-api/, the page calls /jobs-api/jobs (no token configured)."""
    server = await make_server(tasks=list(reg), clock=SystemClock())
    app = web.Application()
    app.add_subapp("/jobs-api", server.create_app())
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        host, port = runner.addresses[0][:2]
        base = f"http://{host}:{port}/jobs-api"
        job_id = await Api(base, session, None).enqueue(task="echo", args=["embedded"])
        page, errors = await new_page(browser, width)
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        await page.goto(base + "/")
        row = page.locator(f'#jobs tbody tr[data-id="{job_id}"]')
        await row.wait_for()
        await pw.expect(page.locator("#token-box")).to_be_hidden()
        assert f"{base}/queues" in requests
        assert not [u for u in requests if u.startswith(f"http://{host}:{port}/jobs?")]
        await row.click()
        await pw.expect(page.locator("#detail-title")).to_have_text(f"Job {job_id} · echo")
        assert errors == []
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("width", WIDTHS)
async def test_jump_to_a_job_zoned_times_and_no_sideways_scroll(
    browser: Any, make_server: ServerFactory, session: aiohttp.ClientSession, width: int
) -> None:
    """Issue 20: the header's job id box and a changed #job/N open a job; times name their
    zone; at a phone's 390 px the page is no wider than the screen and the controls fit."""
    _, base = await start(make_server)
    api = Api(base, session, None)
    first = await api.enqueue(task="doomed", args=["first"])
    second = await api.enqueue(task="doomed", args=["second"])
    page, errors = await new_page(browser)
    await page.set_viewport_size({"width": width, "height": 900})
    await page.goto(base + "/")
    await page.locator("#jobs tbody tr").first.wait_for()

    await page.fill("#jump-id", str(first))
    await page.press("#jump-id", "Enter")
    await pw.expect(page.locator("#detail-title")).to_contain_text(f"Job {first} ")
    await page.evaluate(f"location.hash = '#job/{second}'")  # no reload: hashchange
    await pw.expect(page.locator("#detail-title")).to_contain_text(f"Job {second} ")
    created = await page.locator("#jobs tbody td.time").first.inner_text()
    assert re.search(r"\d\d:\d\d:\d\d (UTC|UTC[+-]\d\d:\d\d)$", created), created

    scroll_width = await page.evaluate("document.documentElement.scrollWidth")
    assert scroll_width <= width, f"the page is {scroll_width} px wide at {width} px"
    for control in ("#token-button", "#jump-id", "#dl-requeue-selected", "#dl-delete-matching"):
        box = await page.locator(control).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width, control
    detail = await page.locator("#detail").bounding_box()
    jobs = await page.locator("#jobs-card").bounding_box()
    assert detail is not None and jobs is not None
    if width < 700:  # a job's detail comes first on a phone, not below 50 rows
        assert detail["y"] < jobs["y"]
    assert errors == []


@pytest.mark.parametrize("width", WIDTHS)
async def test_requeue_all_matching_dead_letters_on_the_server(
    browser: Any, make_server: ServerFactory, session: aiohttp.ClientSession, width: int
) -> None:
    """'Requeue all matching' asks the server (one request, after a dry run for the count),
    not one request per loaded row: dead letters beyond the loaded page go too."""
    server, base = await start(make_server)
    api = Api(base, session, None)
    ids = [await api.enqueue(task="doomed", args=[f"r{i}"]) for i in range(60)]
    for job_id in ids:
        await server.wait_for(job_id, 10)
    page, errors = await new_page(browser)
    await page.set_viewport_size({"width": width, "height": 900})
    await page.goto(base + "/")
    await pw.expect(page.locator("#dead-letters tbody tr")).to_have_count(50)  # one page loaded
    await page.select_option("#dl-task", "doomed")
    asked: list[str] = []

    async def accept(dialog: Any) -> None:
        asked.append(dialog.message)
        await dialog.accept()

    page.on("dialog", accept)
    requests: list[str] = []
    page.on("request", lambda request: requests.append(f"{request.method} {request.url}"))
    await page.click("#dl-requeue-matching")
    await pw.expect(page.locator("#alerts")).to_contain_text("60 dead letters requeued")
    assert asked == ["Requeue 60 dead letters of task doomed?"]
    posts = [r for r in requests if r.startswith("POST")]
    assert posts == [f"POST {base}/dead-letters/requeue"] * 2  # the dry run, then the act
    jobs = (await api.get("/jobs?task=doomed&limit=1000"))["items"]
    assert len(jobs) == 120  # the 60 requeued as new jobs, beside the 60 that failed
    assert errors == []


@pytest.mark.parametrize("width", WIDTHS)
async def test_a_jobs_page_shows_its_attempts_and_runs_it_again_or_deletes_it(
    browser: Any, make_server: ServerFactory, session: aiohttp.ClientSession, width: int
) -> None:
    server, base = await start(make_server)
    api = Api(base, session, None)
    failed = await api.enqueue(task="doomed", args=["card declined"])
    await server.wait_for(failed, 10)
    page, errors = await new_page(browser)
    await page.set_viewport_size({"width": width, "height": 900})
    await page.goto(f"{base}/#job/{failed}")
    attempts = page.locator("#detail-attempts li")
    await pw.expect(attempts).to_have_count(1)
    await pw.expect(attempts.first).to_contain_text("PermanentError: card declined")
    await attempts.first.locator("summary").click()
    await pw.expect(attempts.first.locator("pre.traceback")).to_contain_text("Traceback")

    await page.click("#detail-again")
    notice = page.locator("#alerts .alert.ok", has_text=f"a copy of job {failed}")
    await notice.wait_for()
    copy = int(re.search(r"Job (\d+) enqueued", await notice.inner_text()).group(1))  # type: ignore[union-attr]
    assert (await api.get(f"/jobs/{copy}"))["args"] == ["card declined"]

    await page.evaluate(f"location.hash = '#job/{failed}'")
    await pw.expect(page.locator("#detail-title")).to_contain_text(f"Job {failed} ")
    page.once("dialog", lambda dialog: dialog.accept())
    await page.click("#detail-delete")
    await page.locator("#alerts .alert.ok", has_text=f"Job {failed} deleted").wait_for()
    assert (await api.call("GET", f"/jobs/{failed}"))[0] == 404
    assert errors == []


@pytest.mark.parametrize("width", WIDTHS)
async def test_search_finds_jobs_by_a_part_of_their_task_or_queue(
    browser: Any, make_server: ServerFactory, session: aiohttp.ClientSession, width: int
) -> None:
    """The task filter matched whole names only ('send' found none of 220 send_email jobs)."""
    _, base = await start(make_server)
    api = Api(base, session, None)
    doomed = await api.enqueue(task="doomed", args=["x"], queue="billing")
    echoed = await api.enqueue(task="echo", args=["y"], queue="Mail_Outbox")
    page, errors = await new_page(browser)
    await page.set_viewport_size({"width": width, "height": 900})
    await page.goto(base + "/")
    rows = page.locator("#jobs tbody tr")
    await pw.expect(rows).to_have_count(2)
    await page.fill("#f-search", "OOM")  # a part of "doomed", another case
    await page.press("#f-search", "Enter")
    await pw.expect(rows).to_have_count(1)
    await pw.expect(rows.first).to_have_attribute("data-id", str(doomed))
    await page.fill("#f-search", "mail_")  # a part of the queue's name
    await page.press("#f-search", "Enter")
    await pw.expect(rows).to_have_count(1)
    await pw.expect(rows.first).to_have_attribute("data-id", str(echoed))
    assert errors == []


@pytest.mark.parametrize("width", WIDTHS)
async def test_the_page_updates_from_the_event_stream_not_only_by_polling(
    browser: Any, make_server: ServerFactory, session: aiohttp.ClientSession, width: int
) -> None:
    """With a token (which EventSource could not send): once the stream is up the page polls
    every 15 s only, yet a job enqueued elsewhere shows within a few seconds."""
    _, base = await start(make_server, tokens=[TOKEN])
    api = Api(base, session, TOKEN)
    page, errors = await new_page(browser, width)
    await page.goto(base + "/")
    await sign_in(page, TOKEN)
    await page.locator('body[data-live="stream"]').wait_for(state="attached")
    await page.wait_for_timeout(500)  # past the refresh the sign-in set off
    job_id = await api.enqueue(task="echo", args=["pushed"])
    row = page.locator(f'#jobs tbody tr[data-id="{job_id}"]')
    await pw.expect(row).to_be_visible(timeout=4_000)  # the poll alone would take up to 15 s
    assert errors == []


@pytest.mark.parametrize("width", WIDTHS)
async def test_the_schedules_view(
    browser: Any, make_server: ServerFactory, session: aiohttp.ClientSession, width: int
) -> None:
    _, base = await start(make_server)
    api = Api(base, session, None)
    body = {"name": "nightly", "task": "echo", "cron": "0 3 * * *", "timezone": "Europe/Paris"}
    assert (await api.call("POST", "/schedules", body))[0] == 201
    page, errors = await new_page(browser)
    await page.set_viewport_size({"width": width, "height": 900})
    await page.goto(base + "/")
    row = page.locator('#schedules tbody tr[data-name="nightly"]')
    await pw.expect(row).to_contain_text("0 3 * * *")
    await pw.expect(row).to_contain_text("Europe/Paris")
    await pw.expect(row).to_contain_text("never")  # not fired yet
    assert (await api.call("DELETE", "/schedules/nightly"))[0] == 204
    await page.click("#refresh")
    await pw.expect(row).to_have_count(0)
    await pw.expect(page.locator("#schedules-empty")).to_be_visible()
    assert await page.evaluate("document.documentElement.scrollWidth") <= width
    assert errors == []


@pytest.mark.parametrize("width", WIDTHS)
async def test_the_workflow_view(
    browser: Any, make_server: ServerFactory, session: aiohttp.ClientSession, width: int
) -> None:
    server, base = await start(make_server)
    api = Api(base, session, None)
    flow = {"chain": [{"task": "echo", "args": ["a"]}, {"task": "echo", "args": ["b"]}]}
    status, made = await api.call("POST", "/workflows", flow)
    assert status == 202
    first, second = made["jobs"]
    await server.wait_for(second, 10)
    page, errors = await new_page(browser)
    await page.set_viewport_size({"width": width, "height": 900})
    await page.goto(f"{base}/#workflow/{made['id']}")
    await pw.expect(page.locator("#detail-title")).to_have_text(
        f"Workflow {made['id']} · succeeded"
    )
    rows = page.locator("#workflow-jobs tbody tr")
    await pw.expect(rows).to_have_count(2)
    await pw.expect(rows.first).to_have_attribute("data-id", str(first))
    await rows.nth(1).locator("a").click()  # a job of it
    await pw.expect(page.locator("#detail-title")).to_contain_text(f"Job {second} ")
    await page.locator("#detail a.workflow-link").click()  # and back to its workflow
    await pw.expect(rows).to_have_count(2)
    assert await page.evaluate("document.documentElement.scrollWidth") <= width
    assert errors == []


@pytest.mark.parametrize("width", WIDTHS)
async def test_the_throughput_chart_has_a_history_when_the_page_opens(
    browser: Any, make_server: ServerFactory, session: aiohttp.ClientSession, width: int
) -> None:
    """The chart was empty on open (its history lived in the browser): the server keeps it."""
    server, base = await start(make_server)
    api = Api(base, session, None)
    ids = [await api.enqueue(task="echo", args=[i]) for i in range(5)]
    for job_id in ids:
        await server.wait_for(job_id, 10)
    page, errors = await new_page(browser, width)
    await page.goto(base + "/")
    await pw.expect(page.locator("#chart polyline.line.ok")).to_have_count(1, timeout=3_000)
    await pw.expect(page.locator("#chart-now")).not_to_contain_text("collecting")
    assert errors == []


async def test_a_keyed_queue_shows_its_busiest_keys_and_a_job_its_key(
    browser: Any, make_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """Issue 21: the queues table names each queue's busiest fairness keys and its per-key
    limits; a job's detail names its key."""
    _, base = await start(make_server)
    api = Api(base, session, None)
    status, _ = await api.call("PATCH", "/queues/mail", {"key_concurrency_limit": 3})
    assert status == 200
    ids = [
        await api.enqueue(task="echo", queue="mail", fairness_key=key, delay=3600)
        for key in ("acme", "acme", "zeta")
    ]
    page, errors = await new_page(browser)
    await page.goto(base + "/")
    row = page.locator('#queues tbody tr[data-queue="mail"]')
    await pw.expect(row.locator(".keys")).to_contain_text("acme 2+0, zeta 1+0")
    await pw.expect(row.locator("td.limits")).to_contain_text("per key: concurrency 3")
    await page.evaluate(f"location.hash = '#job/{ids[0]}'")
    await pw.expect(page.locator("#detail-body")).to_contain_text("Fairness key")
    await pw.expect(page.locator("#detail-body dl")).to_contain_text("acme")
    assert errors == []


async def test_a_jobs_detail_lists_its_durable_steps(
    browser: Any, make_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """Issue 22: a job's steps (name, kind, status, kept result) in its detail."""
    server, base = await start(make_server)
    api = Api(base, session, None)
    job_id = await api.enqueue(task="stepped")
    await eventually(lambda: server.store.job_steps(job_id), lambda steps: len(steps) == 2)
    page, errors = await new_page(browser)
    await page.goto(f"{base}/#job/{job_id}")
    steps = page.locator("#detail-steps li")
    await pw.expect(steps).to_have_count(2)
    await pw.expect(steps.nth(0)).to_contain_text("fetch")
    await pw.expect(steps.nth(0)).to_contain_text('"rows": 3')
    await pw.expect(steps.nth(1)).to_contain_text("wait:go-ahead")
    await pw.expect(steps.nth(1)).to_have_attribute("data-status", "waiting")
    await server.signal("go-ahead", "now")
    await pw.expect(steps.nth(1)).to_have_attribute("data-status", "done")
    assert errors == []
