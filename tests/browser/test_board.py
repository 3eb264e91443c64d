"""The plant board in a real browser: Debian's Chromium driven by Playwright, against the whole
stack of `make demo` (PostgreSQL, Temporal, the simulated plant's four protocol peers, ingest,
workers, API). A screenshot per step goes to test-artifacts/board/ (docs/operations.md,
"Plant board")."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import yaml
from playwright.async_api import ConsoleMessage, Page, async_playwright
from temporalio.client import Client

from dev.demo.environment import Demo, demo_settings
from dev.fakes.twilio import post_inbound
from dev.simulator.signals import FaultKind
from factorylm.api_tokens import Role, TokenStore
from factorylm.settings import PROJECT_ROOT, Settings
from helpers import plant_with_free_ports, until

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "board"
WORKFLOW = "drift-demo-plant-conveyor-1-vibration"


async def _shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def _attr(page: Page, selector: str, name: str) -> str | None:
    value: str | None = await page.get_attribute(selector, name)
    return value


async def test_board_in_chromium_follows_the_drift_scenario_live(
    tmp_path: Path, settings: Settings, client: Client
) -> None:
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: apt-get install chromium (scripts/setup.sh)"  # noqa: ASYNC240
    _, plant_file = plant_with_free_ports(tmp_path)
    # What the board must list, read from the plant file itself (not through the product).
    raw: dict[str, Any] = yaml.safe_load(plant_file.read_text())
    plc_ids = [p["id"] for p in raw["plcs"]]
    queue = f"board-{uuid.uuid4().hex[:8]}"
    s = demo_settings(
        settings.model_copy(
            update={
                "plant_file": plant_file,
                "task_queue": queue,
                "plc_task_queue": f"{queue}-edge",
            }
        )
    )
    demo = Demo(s)
    try:
        await demo.up()
        assert demo.stack is not None and demo.stack.pool is not None
        assert demo.twilio is not None
        settings_up = demo.settings
        url = settings_up.api_url
        tokens = TokenStore(demo.stack.pool)
        viewer = await tokens.add(
            f"board-{uuid.uuid4().hex[:6]}", Role.VIEWER, approvers=list(settings_up.approvers)
        )
        uploader = await tokens.add(
            f"up-{uuid.uuid4().hex[:6]}", Role.UPLOADER, approvers=list(settings_up.approvers)
        )

        # Without a token, with a wrong one, or with one whose role may not read: no data.
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            anon = await http.get("/")
            assert anon.status_code == 401 and 'name="token"' in anon.text
            assert not any(plc in anon.text for plc in plc_ids)
            for path in ("/board/data", "/board/events"):
                assert (await http.get(path)).status_code == 401
                wrong = await http.get(path, headers={"Cookie": "flm_board=flm_not-a-token"})
                assert wrong.status_code == 401
                bearer = await http.get(path, headers={"Authorization": f"Bearer {uploader}"})
                assert bearer.status_code == 403
            refused = await http.post("/board/login", data={"token": uploader})
            assert refused.status_code == 403 and "set-cookie" not in refused.headers

        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
            try:
                anon_page = await (await browser.new_context()).new_page()
                first = await anon_page.goto(url + "/")
                assert first is not None and first.status == 401
                await anon_page.fill("#token", "flm_wrong-token")
                await anon_page.click("button[type=submit]")
                await anon_page.wait_for_selector("p.error")
                assert "not accepted" in (await anon_page.inner_text("p.error"))
                refused_html = await anon_page.content()
                assert not any(plc in refused_html for plc in plc_ids)
                await _shot(anon_page, "01-login-refused")

                context = await browser.new_context(viewport={"width": 1600, "height": 1000})
                page = await context.new_page()
                errors: list[str] = []

                def on_console(msg: ConsoleMessage) -> None:
                    if msg.type == "error":
                        errors.append(msg.text)

                await page.goto(url + "/")
                await page.fill("#token", viewer)
                # From here on: the sign-in page's own 401 is by design, the board's are not.
                page.on("console", on_console)
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                requested: list[str] = []
                page.on("request", lambda req: requested.append(req.url))
                await page.click("button[type=submit]")
                await page.wait_for_selector("#plcs")
                cookies = await context.cookies()
                board_cookie = next(c for c in cookies if c["name"] == "flm_board")
                assert board_cookie["httpOnly"] and board_cookie["sameSite"] == "Strict"

                # Every PLC of the plant file, each with a collector that reports ok.
                for plc in plc_ids:
                    row = f'#plcs tr[data-plc="{plc}"]'
                    await page.wait_for_selector(f"{row} td.state-ok", timeout=30_000)
                    assert "ago" in await page.inner_text(f"{row} td.age")
                await until("the board to say it is live", lambda: _live(page))
                await _shot(page, "02-board-live")

                # A trend advances as samples arrive, without reloading the page.
                fig = 'figure[data-series="conveyor-1/vibration"]'
                before = float(await _attr(page, fig, "data-last-t") or 0)

                async def advanced() -> bool:
                    return float(await _attr(page, fig, "data-last-t") or 0) >= before + 3

                await until("conveyor-1's vibration trend to advance", advanced)
                await _shot(page, "03-trend-advanced")

                # The fault: a drift marker on the chart and the approval it waits for.
                demo.sims["conveyor-1"].inject("vibration", FaultKind.STEP, 6.0)

                async def marked() -> bool:
                    return int(await _attr(page, fig, "data-markers") or 0) > 0

                await until("a drift marker on conveyor-1's vibration", marked, timeout_s=60)
                card = f'#responses article[data-workflow="{WORKFLOW}"]'
                await page.wait_for_selector(card, timeout=60_000)
                approver = settings_up.approvers[0].removeprefix("whatsapp:")

                async def waiting() -> str | None:
                    text = await page.inner_text(card)
                    return text if "left" in text else None

                text = await until("the response to wait for approval", waiting, timeout_s=60)
                assert f"waiting for {approver} to approve shutdown_motor" in text
                assert re.search(r"\d+:\d\d left", text)
                history = await _attr(page, f"{card} a", "href")
                assert history is not None and history.startswith(settings_up.temporal_ui_url)
                assert WORKFLOW in history
                code_sent = await until(
                    "the WhatsApp request",
                    lambda: next(
                        (m for m in demo.twilio.to(settings_up.approvers[0]) if "YES" in m.body),  # type: ignore[union-attr]
                        None,
                    ),
                )
                code = re.search(r"YES (\d{4})", code_sent.body)
                assert code is not None
                assert code[1] not in text  # the approval code is for the approver only
                await page.locator(fig).scroll_into_view_if_needed()
                await _shot(page, "04-drift-pending-approval")

                # The approver answers; the write and the work order appear on the board.
                answer = await post_inbound(
                    url,
                    settings_up.public_url,
                    demo.twilio.auth_token,
                    settings_up.approvers[0],
                    f"YES {code[1]}",
                )
                answer.raise_for_status()
                wo_row = "#work-orders tbody tr"

                async def work_order() -> str | None:
                    if await page.locator(wo_row).count() == 0:
                        return None
                    first_row = await page.inner_text(wo_row)
                    return first_row if "vibration drift on conveyor-1" in first_row else None

                row_text = await until("the work order on the board", work_order, timeout_s=60)
                assert re.search(r"WO-\d{6}", row_text)
                write_text = await page.inner_text("#writes tbody tr")
                assert "shutdown_motor" in write_text
                assert "1.00 → 0.00 → 0.00" in write_text and "verified" in write_text
                assert approver in write_text

                async def answered() -> bool:
                    if await page.locator(card).count() == 0:
                        return True  # the response finished
                    return "waiting for" not in await page.inner_text(card)

                await until("the response to stop waiting for approval", answered)
                messages = await page.inner_text("#messages")
                assert approver in messages
                await page.locator("#work-orders").scroll_into_view_if_needed()
                await _shot(page, "05-work-order")

                # The controls are reachable from the keyboard, in order.
                await page.keyboard.press("Tab")
                assert await page.evaluate("document.activeElement.id") == "range"
                # The range selector reloads the trends from the server, bucketed to the
                # chart's width: 24 h in buckets nearly 96 times as long as 15 min's, so the
                # minutes this test ran fill at most two.
                step_15m = int(await _attr(page, "#trends", "data-step") or 0)
                assert 1 <= step_15m <= 15
                await page.select_option("#range", "24h")
                await page.wait_for_selector(f'#trends:not([data-step="{step_15m}"])')
                step_24h = int(await _attr(page, "#trends", "data-step") or 0)
                assert step_24h > 50 * step_15m
                assert 1 <= int(await _attr(page, fig, "data-points") or 0) <= 2
                assert errors == [], errors
                # Everything the page loaded came from the API itself.
                assert requested and all(u.startswith(url + "/") for u in requested), requested

                # A phone: one column, the same board.
                phone = await browser.new_context(
                    viewport={"width": 390, "height": 844}, device_scale_factor=2
                )
                await phone.add_cookies([board_cookie])  # type: ignore[list-item]
                phone_page = await phone.new_page()
                await phone_page.goto(url + "/")
                await phone_page.wait_for_selector('#plcs tr[data-plc="pump-1"] td.state-ok')
                await until("the phone's board to be live", lambda: _live(phone_page))
                await _shot(phone_page, "06-phone")
            finally:
                await browser.close()
    finally:
        await demo.down()


async def _live(page: Page) -> bool:
    return (await page.inner_text("#live")) == "live"
