"""Key used from a browser (apiKey.usedFromBrowser): provenance signals, look-alikes, once per key per UTC day."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import pytest
from coretest import DAY, HOUR, MINUTE, T0, Cluster, solo

from keywatch.contract.alerts import Alert
from keywatch.contract.events import RequestRecord
from keywatch.core import browser
from keywatch.core.browser import Browser, BrowserConfig

FROM_BROWSER = "apiKey.usedFromBrowser"
CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"
IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E"
IE = "Mozilla/5.0 (Windows NT 10.0; Trident/7.0; rv:11.0) like Gecko"


def browser_alerts(alerts: list[Alert]) -> list[Alert]:
    """Only the used-from-browser alerts."""
    return [a for a in alerts if a.type == FROM_BROWSER]


@pytest.mark.parametrize("agent", [CHROME, FIREFOX, IPHONE, IE])
def test_browser_user_agents_are_browsers(agent: str) -> None:
    """Chrome, Firefox, Safari on iOS, Internet Explorer: a Mozilla/5.0 string with an engine token."""
    assert Browser(BrowserConfig()).is_browser_agent(agent)


@pytest.mark.parametrize(
    "agent",
    [
        "Mozilla/5.0 (compatible)",
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0) Chrome/116.0 Safari/537.36",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0 Safari/537.36",
        "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
        "Mozilla/5.0 (Windows NT 10.0) AppleWebKit/537.36 python-requests/2.31",
        "PostmanRuntime/7.36.0",
        "curl/8.5.0",
        "python-requests/2.31.0",
        "okhttp/4.12.0",
        "Go-http-client/2.0",
        "acme-billing/1.2.0 axios/1.6.7",
        "Safari/605 CFNetwork",  # an engine token without Mozilla/5.0
        "",
    ],
)
def test_sdks_bots_and_bare_mozilla_are_not_browsers(agent: str) -> None:
    """SDKs, tools, bots that say Mozilla/5.0, headless browsers and "Mozilla/5.0 (compatible)" are not browsers."""
    assert not Browser(BrowserConfig()).is_browser_agent(agent)


def test_token_lists_are_configurable() -> None:
    """A deployment can call its own headless tool a non-browser, or narrow the engines."""
    assert not Browser(BrowserConfig(non_browser_tokens=("chrome/124",))).is_browser_agent(CHROME)
    assert not Browser(BrowserConfig(engine_tokens=("trident",))).is_browser_agent(FIREFOX)


def test_the_user_agent_cache_is_bounded() -> None:
    """Verdicts are cached; a flood of distinct agents never holds more than the cache size."""
    detector = Browser(BrowserConfig(user_agent_cache=16))
    for i in range(100):
        assert detector.is_browser_agent(f"{CHROME} x{i}")
        assert len(detector._verdicts) <= 16


def test_a_browser_user_agent_alerts_high_with_evidence(
    cluster_factory: Callable[..., Cluster], request_factory: Callable[..., RequestRecord]
) -> None:
    """A browser user agent alone is provenance: one high alert with the sample, counts and first request."""
    cluster = cluster_factory()
    [alert] = browser_alerts(
        cluster.feed([request_factory(ts=T0 + HOUR, user_agent=CHROME, request_id="req-7", path="/v1/x?q=1")])
    )
    ev = alert.data.evidence
    assert alert.severity == "high"
    assert alert.data.runbook.endswith("#usedfrombrowser")
    assert ev["signals"] == ["user_agent"]
    assert (ev["first_request_id"], ev["path"], ev["network"], ev["day"]) == (
        "req-7",
        "/v1/x",
        "192.0.2.0/24",
        "2024-03-04",
    )
    assert ev["user_agents"] == [CHROME[:96] + "..."]
    assert (ev["browser_requests_total"], ev["distinct_networks"], ev["suppressed_since_last_alert"]) == (1, 1, 0)


def test_origin_and_sec_fetch_are_provenance_whatever_the_agent(
    cluster_factory: Callable[..., Cluster], request_factory: Callable[..., RequestRecord]
) -> None:
    """An extension (Origin chrome-extension://, a server-looking agent), a page with only Sec-Fetch-* headers."""
    cluster = cluster_factory()
    [ext] = browser_alerts(
        cluster.feed([request_factory(key_id="k-ext", origin="chrome-extension://abcdef", user_agent="okhttp/4")])
    )
    assert ext.data.evidence["signals"] == ["origin"]
    assert ext.data.evidence["origins"] == ["chrome-extension://abcdef"]
    [fetch] = browser_alerts(cluster.feed([request_factory(key_id="k-sf", sec_fetch_mode="cors", user_agent=None)]))
    assert fetch.data.evidence["signals"] == ["sec_fetch"]
    [spa] = browser_alerts(
        cluster.feed(
            [
                request_factory(
                    key_id="k-spa", origin="https://shop.example", referer="https://shop.example/cart?token=abc#x",
                    sec_fetch_site="cross-site", sec_fetch_mode="cors", user_agent=FIREFOX,
                )
            ]
        )
    )  # fmt: skip
    assert spa.data.evidence["signals"] == ["origin", "sec_fetch", "user_agent"]
    assert spa.data.evidence["referer"] == "https://shop.example"  # never the referer's path or query


@pytest.mark.parametrize(
    "agent",
    ["python-requests/2.31.0", "Mozilla/5.0 (compatible; Googlebot/2.1)", "Mozilla/5.0 (compatible)", None],
)
def test_servers_bots_and_proxies_without_browser_headers_are_quiet(
    cluster_factory: Callable[..., Cluster], request_factory: Callable[..., RequestRecord], agent: str | None
) -> None:
    """A server SDK, a bot saying Mozilla/5.0, a bare scanner, a proxy forwarding no browser headers: nothing,
    and no state kept."""
    cluster = cluster_factory()
    assert browser_alerts(cluster.feed([request_factory(ts=T0 + i * MINUTE, user_agent=agent) for i in range(5)])) == []
    assert browser.NAME not in cluster.states["acme/key-1"].detectors


def test_ignored_origins_and_disabled_signals(
    cluster_factory: Callable[..., Cluster], request_factory: Callable[..., RequestRecord]
) -> None:
    """A header logged as "-" or "" is not sent; an ignored origin is no provenance; each signal can be switched
    off."""
    logged_absent = [request_factory(origin="-", sec_fetch_site="", sec_fetch_mode="-", user_agent="okhttp/4")]
    assert browser_alerts(cluster_factory().feed(logged_absent)) == []  # how gateways log a header not sent
    cluster = cluster_factory(browser={"ignore_origins": ["https://Internal.example"], "sec_fetch": False})
    quiet = [request_factory(origin="https://internal.example"), request_factory(sec_fetch_site="same-origin")]
    assert browser_alerts(cluster.feed(quiet)) == []
    assert browser_alerts(cluster_factory(browser={"enabled": False}).feed([request_factory(origin="x")])) == []


def test_once_per_key_per_utc_day_and_counts_the_suppressed(
    cluster_factory: Callable[..., Cluster], request_factory: Callable[..., RequestRecord]
) -> None:
    """The first browser request of each UTC day alerts; the rest are counted into the next alert."""
    cluster = cluster_factory()
    day1 = [request_factory(ts=T0 + HOUR + i * MINUTE, user_agent=CHROME, ip=f"198.51.{i}.7") for i in range(20)]
    assert len(browser_alerts(cluster.feed(day1))) == 1
    [late] = browser_alerts(cluster.feed([request_factory(ts=T0 + DAY + 5 * MINUTE, origin="https://a.example")]))
    ev = late.data.evidence
    assert (ev["suppressed_since_last_alert"], ev["browser_requests_total"], ev["day"]) == (19, 21, "2024-03-05")
    assert (ev["distinct_networks"], ev["distinct_networks_capped"]) == (8, True)
    assert len(msgspec.msgpack.encode(cluster.states["acme/key-1"].detectors[browser.NAME])) < 600  # all capped


def test_a_late_record_of_the_day_before_alerts_once_then_never(
    cluster_factory: Callable[..., Cluster], request_factory: Callable[..., RequestRecord]
) -> None:
    """Records out of order around midnight: the earlier day alerts once under its own id, then stays quiet."""
    cluster = cluster_factory()
    first = browser_alerts(cluster.feed([request_factory(ts=T0 + DAY + MINUTE, user_agent=CHROME)]))
    before = browser_alerts(cluster.feed([request_factory(ts=T0 + DAY - MINUTE, user_agent=CHROME)]))
    again = browser_alerts(cluster.feed([request_factory(ts=T0 + DAY - 30_000, user_agent=CHROME)]))
    assert (len(first), len(before), again) == (1, 1, [])
    assert first[0].id != before[0].id


def test_ids_are_stable_under_reprocessing_and_depend_on_the_day_only(
    cluster_factory: Callable[..., Cluster], request_factory: Callable[..., RequestRecord]
) -> None:
    """Replaying the same records gives the same ids; a different first request of the same day, the same id."""
    runs = []
    for offset in (0, 0, 3 * HOUR):
        cluster = cluster_factory()
        records = [request_factory(ts=T0 + offset + HOUR + i * HOUR, user_agent=CHROME) for i in range(30)]
        runs.append([a.id for a in browser_alerts(cluster.feed(records))])
    assert runs[0] == runs[1]
    assert len(runs[0]) == 2  # two UTC days
    assert runs[2][0] == runs[0][0]


def test_solo_engine_runs_the_spec(request_factory: Callable[..., RequestRecord]) -> None:
    """The spec builds a working detector on its own."""
    engine = solo(browser.SPEC, Browser(BrowserConfig()))
    cluster = Cluster(engine)
    assert [a.type for a in cluster.feed([request_factory(sec_fetch_site="none")])] == [FROM_BROWSER]
