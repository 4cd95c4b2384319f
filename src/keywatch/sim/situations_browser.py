"""Situations of issue #13 for the browser and key-management rules, added to a planned scenario.

Each situation is a function of the planner, run after the default scenario is planned (so the default part of
the plan is unchanged), on live keys of their own that carry server traffic from the start (learned by the time
anything happens), deterministic from the seed.

Positives (labelled):
- a key embedded in a single-page app: for 2-5 hours, visitors from 20-120 residential /24s in 4-8 residential
  /16s (one simulated ISP each) call the API with a browser user agent, `Origin`, `Referer` and
  `Sec-Fetch-Site`/`-Mode`. usedFromBrowser once per UTC day it spans (at its first browser request); the new
  networks are also usedFromNewIp's truth (two networks, then the fan-out, as with the hard network profile);
- a key in a browser extension or devtools snippet: `Origin: chrome-extension://...` (or `moz-extension://`),
  a browser user agent, no `Sec-Fetch-*`, from a developer machine in the key's own range, on most days;
- a key behind a webview with its own user agent: only `Sec-Fetch-*` headers, from the key's own range;
- a stolen key trying the key-management API: a little reconnaissance, then 2-5 attempts (POST /v1/keys,
  /v1/api-keys, /v1/credentials, /v1/tokens, rotate and patch calls, some with odd casing, doubled slashes or
  percent-encoding) answered 403/404/405; from a host of the key (a compromised workload) or from a new network
  (then also a usedFromNewIp label).
Negatives (unlabelled: they count against precision if they fire): server SDKs, bots that say Mozilla/5.0
(Googlebot, bingbot, AhrefsBot), a headless-Chrome renderer, "Mozilla/5.0 (compatible)" scanners and uptime
monitors, a server-side proxy that forwards only a `Referer`; paths that look like key management but are not
(/v1/keyboards, /v1/tokenization, /v1/customers/keys-report).
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from keywatch.sim.scenario import (
    DAY_MS,
    ENDPOINTS,
    FROM_BROWSER,
    HOUR_MS,
    KEY_MANAGEMENT,
    MINUTE_MS,
    NEW_IP,
    BrowserHeaders,
    KeyPlan,
    Request,
)
from keywatch.sim.situations_network import _BROWSERS, FANOUT_NETWORKS
from keywatch.sim.situations_rate import Situation, rng_rate

if TYPE_CHECKING:
    from keywatch.sim.scenario import _Planner

_SPA_PAGES = ("", "checkout", "account/orders", "dashboard", "cart", "settings/billing")
_BOTS = (
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)"
    " Chrome/116.0.1938.76 Safari/537.36",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/122.0.6261.94 Safari/537.36",
)
_SCANNERS = ("Mozilla/5.0 (compatible)", "Mozilla/5.0 (compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)")
_SDKS = ("PostmanRuntime/7.36.0", "axios/1.6.7", "node-fetch/3.3.2", "okhttp/4.12.0 Dalvik/2.1.0")
_KEY_MANAGEMENT_CALLS = (
    ("POST", "/v1/keys"), ("POST", "/v1/api-keys"), ("POST", "/v1/credentials"), ("GET", "/v1/keys"),
    ("POST", "/v1/tokens"), ("POST", "/v1/keys/{key}/rotate"), ("PATCH", "/v1/api-keys/{key}"),
    ("POST", "/v1//keys"), ("POST", "/V1/API-KEYS"), ("POST", "/v1/%6beys"), ("DELETE", "/v1/credentials/{key}"),
)  # fmt: skip
_RECON = ("/v1/account", "/v1/balance", "/v1/team/members", "/v1/account/settings")
_LOOKALIKE_PATHS = ("/v1/keyboards", "/v1/tokenization", "/v1/customers/keys-report", "/v1/tokenization/sessions")
_ATTACK_AGENTS = ("curl/8.5.0", "python-requests/2.31.0", "Go-http-client/1.1", "Mozilla/5.0 (compatible)")


def _count(p: _Planner) -> int:
    return max(2, p.c.per_type // 2)


def _key(p: _Planner, rate: float, agent: str | None = None) -> KeyPlan:
    """A live key of its own, existing before the window, always on, `rate` requests/min at its peak."""
    tenant = p.rng.choice(p.tenants)
    key = p.new_key(tenant, "live", p.t0)
    app = key.app
    app.peak_rate, app.trough, app.schedule = rate / p.c.scale, max(app.trough, 0.3), "always"
    if agent is not None:
        app.agents = [(p.t0 - DAY_MS, agent)]
    key.incident = True
    p.created_event(key, p.t0)
    return key


def _path(p: _Planner, key: KeyPlan) -> tuple[str, str]:
    method, template = p.rng.choice(ENDPOINTS[key.app.profile])[:2]
    return method, template.split("{", 1)[0].rstrip("/") or "/v1/customers"


def _near_host(p: _Planner, key: KeyPlan) -> str:
    """A new address in the range of one of the key's hosts (a developer machine next to the servers)."""
    net = ipaddress.ip_network(p.rng.choice(key.app.hosts).network)
    return p.host(net, {h.ip for h in key.app.hosts}, 0, 0).ip


def _label_days(p: _Planner, key: KeyPlan, records: list[tuple[int, Request]], what: str) -> None:
    """One usedFromBrowser label per UTC day of `records`, at its first record (the alert's request)."""
    days: dict[int, int] = {}
    for ts, _ in sorted(records, key=lambda r: r[0]):
        days.setdefault(ts // DAY_MS, ts)
    for ts in sorted(days.values()):
        p.add_incident(FROM_BROWSER, key, ts, ts, f"{what}: the first browser request of its UTC day.")


def single_page_app(p: _Planner) -> None:
    """A key in a single-page app, called by visitors' browsers from residential networks for 2-5 hours."""
    for number in range(min(_count(p), 6)):
        key, rng = _key(p, rng_rate(p, 1.0, 6.0)), p.rng
        when = rng.randrange(p.learn_end + HOUR_MS, max(p.learn_end + HOUR_MS + 1, p.end - 6 * HOUR_MS))
        duration = rng.randint(2, 5) * HOUR_MS
        nets, base = rng.randint(4, 8), 112 + 10 * number  # 100.112.0.0/16 and up: apart from the hard profile's
        for j in range(nets):
            p.networks.append(
                {"network": f"100.{base + j}.0.0/16", "asn": 64900 + base + j,
                 "org": f"residential ISP {base + j} (simulated)", "role": "residential"}
            )  # fmt: skip
        origin = f"https://app.{key.tenant.name}.example"
        records = []
        for j, third in rng.sample([(j, t) for j in range(nets) for t in range(256)], rng.randint(20, 120)):
            ip, agent = f"100.{base + j}.{third}.{rng.randint(2, 250)}", rng.choice(_BROWSERS)
            first = when + rng.randrange(duration)
            for _ in range(rng.randint(1, 6)):
                method, path = _path(p, key)
                page = rng.choice(_SPA_PAGES)
                headers: BrowserHeaders = (origin, f"{origin}/{page}", "cross-site", "cors")
                ts = first + rng.randrange(10 * MINUTE_MS)
                records.append(p.record(key, ts, ip, method, path, 200, rng.uniform(40, 300), agent, headers))
        records.sort(key=lambda r: r[0])
        what = f"Key embedded in the single-page app {origin}, called from {nets} residential /16s"
        _label_new_networks(p, key, records, what)
        _label_days(p, key, records, what)


def _label_new_networks(p: _Planner, key: KeyPlan, records: list[tuple[int, Request]], what: str) -> None:
    """usedFromNewIp's truth for browsers on new residential networks (as the hard network profile labels it):
    the first two networks, then the fan-out; the records go with the labels (emitted once)."""
    firsts: dict[str, int] = {}
    for ts, req in records:
        firsts.setdefault(".".join(req[3].split(".")[:2]), ts)
    labelled = sorted(firsts.items(), key=lambda kv: kv[1])[:FANOUT_NETWORKS]
    bounds = [ts for _, ts in labelled[1:]] + [records[-1][0] + 1]
    for i, (net, ts) in enumerate(labelled):
        part = [r for r in records if (i == 0 or ts <= r[0]) and r[0] < bounds[i]]
        text = f"network {i + 1}, {net}.0.0/16" if i < FANOUT_NETWORKS - 1 else f"the fan-out at {net}.0.0/16"
        p.add_incident(NEW_IP, key, ts, ts, f"{what}: {text}.", records=part)


def _sessions(p: _Planner, key: KeyPlan, ip: str, agent: str, headers: BrowserHeaders) -> list[tuple[int, Request]]:
    """A developer's browser sessions with the key on most days after the learning period: 3-25 requests over
    5-60 minutes each."""
    rng, records = p.rng, []
    day = p.learn_end - p.learn_end % DAY_MS
    while day < p.end:
        start_min, start_max = max(day, p.learn_end + 30 * MINUTE_MS), min(day + DAY_MS, p.end - HOUR_MS)
        if start_max > start_min and rng.random() < 0.85:
            start, minutes = rng.randrange(start_min, start_max), rng.randint(5, 60)
            for _ in range(rng.randint(3, 25)):
                method, path = _path(p, key)
                ts = start + rng.randrange(minutes * MINUTE_MS)
                records.append(p.record(key, ts, ip, method, path, 200, rng.uniform(30, 250), agent, headers))
        day += DAY_MS
    return records


def browser_extension(p: _Planner) -> None:
    """A key in a browser extension (or pasted into devtools): Origin of the extension, no Sec-Fetch-*."""
    for i in range(_count(p)):
        key, rng = _key(p, rng_rate(p, 1.0, 10.0)), p.rng
        extension = "".join(rng.choice("abcdefghijklmnop") for _ in range(32))
        scheme, agent = ("chrome-extension", _BROWSERS[0]) if i % 2 == 0 else ("moz-extension", _BROWSERS[2])
        headers: BrowserHeaders = (f"{scheme}://{extension}", None, None, None)
        records = _sessions(p, key, _near_host(p, key), agent, headers)
        if records:
            p.extra.append((key, records))
            _label_days(p, key, records, f"Key in the browser extension {scheme}://{extension[:8]}...")


def sec_fetch_only(p: _Planner) -> None:
    """A key used by an embedded webview with its own user agent: only the Sec-Fetch-* headers tell."""
    for _ in range(_count(p)):
        key, rng = _key(p, rng_rate(p, 1.0, 10.0)), p.rng
        site, mode = rng.choice((("same-site", "cors"), ("none", "navigate"), ("same-origin", "cors")))
        agent = f"{key.tenant.name}-portal-webview/2.{rng.randint(0, 9)}"
        records = _sessions(p, key, _near_host(p, key), agent, (None, None, site, mode))
        if records:
            p.extra.append((key, records))
            _label_days(p, key, records, f"Key in a webview ({agent}) sending Sec-Fetch-Site {site}")


def stolen_key_management(p: _Planner) -> None:
    """A stolen key trying to mint keys or rotate itself: recon, then 2-5 key-management calls (403/404/405)."""
    for i in range(max(2, p.c.per_type)):
        key, when, rng = _key(p, rng_rate(p, 1.0, 8.0)), p.random_time(), p.rng
        agent = rng.choice(_ATTACK_AGENTS)
        if i % 2 == 0:
            ip, where = rng.choice(key.app.hosts).ip, "a compromised host of the key"
        else:
            net = p.attacker_ranges.pop()
            ip, where = p.host(net, set(), 0, 0).ip, f"a new network ({net})"
        ts, records = when, []
        for _ in range(rng.randint(1, 3)):
            records.append(p.record(key, ts, ip, "GET", rng.choice(_RECON), 200, rng.uniform(20, 80), agent))
            ts += rng.randint(5, 120) * 1000
        for _ in range(rng.randint(2, 5)):
            method, path = rng.choice(_KEY_MANAGEMENT_CALLS)
            status = rng.choice((403, 404, 404, 405))
            records.append(p.record(key, ts, ip, method, path.replace("{key}", key.key_id), status, 9.0, agent))
            ts += rng.randint(10, 180) * 1000
        km = [r for r in records if r[1][5] not in _RECON]
        text = f"Stolen key used from {where} to call the key-management API ({len(km)} attempts)"
        if i % 2 == 0:
            p.add_incident(KEY_MANAGEMENT, key, km[0][0], km[-1][0], f"{text}.", records=records)
        else:
            p.add_incident(NEW_IP, key, records[0][0], records[-1][0], f"{text}: the new network.", records=records)
            p.add_incident(KEY_MANAGEMENT, key, km[0][0], km[-1][0], f"{text}.")


def _steady(p: _Planner, key: KeyPlan, paths: tuple[str, ...], agent: str, headers: BrowserHeaders | None) -> None:
    """Quiet: 100-400 requests from the key's own hosts, spread over the scenario."""
    rng = p.rng
    records = [
        p.record(key, rng.randrange(p.t0 + HOUR_MS, p.end), rng.choice(key.app.hosts).ip, "GET",
                 rng.choice(paths), 200, rng.uniform(20, 120), agent, headers)
        for _ in range(rng.randint(100, 400))
    ]  # fmt: skip
    p.extra.append((key, records))


def non_browser_agents(p: _Planner) -> None:
    """Negative: keys whose clients are server SDKs, bots that say Mozilla/5.0, a headless renderer, scanners."""
    for agent in (*_SDKS[: _count(p)], *_BOTS, *_SCANNERS):
        _key(p, rng_rate(p, 0.5, 6.0), agent=agent)
        p.count("non_browser_agents")


def server_proxy(p: _Planner) -> None:
    """Negative: a backend-for-frontend that holds the key and forwards only the page's Referer."""
    for _ in range(_count(p)):
        key = _key(p, rng_rate(p, 1.0, 6.0), agent="bff-gateway/1.4 node-fetch/3.3.2")
        referer = f"https://www.{key.tenant.name}.example/checkout"
        _steady(p, key, (_path(p, key)[1],), key.app.agents[0][1], (None, referer, None, None))
        p.count("server_proxies")


def lookalike_paths(p: _Planner) -> None:
    """Negative: endpoints whose names start like key management but are not (keyboards, tokenization...)."""
    for _ in range(_count(p)):
        key = _key(p, rng_rate(p, 1.0, 6.0))
        _steady(p, key, _LOOKALIKE_PATHS, key.app.agents[0][1], None)
        p.count("key_management_lookalikes")


SITUATIONS: tuple[Situation, ...] = (
    single_page_app,
    browser_extension,
    sec_fetch_only,
    stolen_key_management,
    non_browser_agents,
    server_proxy,
    lookalike_paths,
)
