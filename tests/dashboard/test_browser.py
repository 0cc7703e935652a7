"""The dashboard in a real browser: a headless Chromium (Debian's
``chromium``, which ``.ci/run`` installs) driven by Playwright opens the page
over a real queue, sees its depth change as items are put, opens the dead
letters, requeues one behind the confirmation, and sees it back."""

from __future__ import annotations

import os
import shutil

import pytest

import chute
from tests.dashboard.test_dashboard import bury, dashboard

pytestmark = [pytest.mark.timeout(120), pytest.mark.loops("asyncio")]

#: Where a browser may be: $CHUTE_CHROMIUM, then the usual names.
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def browser_binary() -> str:
    found = os.environ.get("CHUTE_CHROMIUM") or next(
        (path for name in BROWSERS if (path := shutil.which(name))), None
    )
    if found is None:
        message = (
            "the dashboard's browser test needs Chromium: install Debian's chromium "
            "(.ci/run does) or point CHUTE_CHROMIUM at one"
        )
        if os.environ.get("CHUTE_REQUIRE_BROWSER", "0") not in ("", "0"):
            pytest.fail(message)  # CI: a missing browser is a failure, not a skip
        pytest.skip(message)
    return found


async def test_a_user_sees_the_depth_move_and_requeues_a_dead_letter(tmp_path):
    from playwright.async_api import async_playwright, expect

    binary = browser_binary()
    url = f"sqlite:///{tmp_path}/q.db"
    async with chute.open(url, "emails", max_deliveries=1) as q:
        await bury(q, [{"to": "ada@example.com"}, {"to": "bob@example.com"}])
        await q.put({"to": "cy@example.com"})
        async with dashboard(url) as site, async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=binary, args=["--no-sandbox", "--disable-dev-shm-usage"]
            )
            try:
                page = await browser.new_page(viewport={"width": 1200, "height": 640})
                await page.goto(site)
                ready = page.locator('tr[data-queue="emails"] [data-n="ready"]')
                await expect(ready).to_have_text("1")
                await q.put_batch([{"to": f"user{i}@example.com"} for i in range(4)])
                await expect(ready).to_have_text("5", timeout=10_000)  # live, no reload
                await expect(page.locator('tr[data-queue="emails"] [data-n="dead"]')).to_have_text(
                    "2"
                )

                await page.click("text=emails")
                letters = page.locator("tr[data-letter]")
                await expect(letters).to_have_count(2)
                await expect(page.locator("table.letters")).to_contain_text("ValueError")
                bob = page.locator("tr[data-letter]", has_text="bob@example.com")
                await bob.locator("input.pick").check()
                await page.click("text=Requeue selected")
                dialog = page.locator("dialog#confirm")
                await expect(dialog).to_be_visible()
                await expect(dialog).to_contain_text("Requeue 1 dead letter of emails?")
                await dialog.locator("button[value=yes]").click()
                await expect(page.locator("#said")).to_have_text("Requeued 1 dead letter.")
                await expect(letters).to_have_count(1)
                await expect(page.locator('.numbers [data-n="ready"]')).to_have_text("6")
            finally:
                await browser.close()
        s = await q.astatistics()
        assert (s.size, s.dead_lettered) == (6, 1)
        got = await q.get_batch(10, timeout=10)
        assert {"to": "bob@example.com"} in got
