"""The scenario simulator behind `keywatch simulate` and `keywatch evaluate`.

One seed draws the whole scenario (same seed and options, byte-identical files). Defaults: 20 tenants,
200 keys at the start (~65% live, ~35% sandbox; rotations and new keys add ~10%), 4 days from
2026-01-05T00:00:00Z (a Monday), of which the first 2 are the learning history: no incident starts
before the end of day 2. About 3.5 million requests and 40 labelled incidents (10 per type).

Traffic (benign by construction)
- Per key a peak rate from quiet (0.2/min) to busy (160/min), log-uniform within tiers (sandbox keys are
  quieter); a daily cosine cycle peaking in the tenant's local afternoon (tenant timezones from UTC-8 to
  UTC+10) with a trough of 6-35% of the peak; Poisson counts per minute; `--scale` multiplies every rate.
  Some keys only work business hours (08-19 local, ~3% outside), some are hourly cron jobs (a burst of
  15-60 requests once an hour: far below any spike floor). Weekends (if --days reaches them) are quieter.
- Each key is used by one client app from 1-3 networks of its tenant (IPv4 /24s in 10.<tenant>.0.0/16,
  IPv6 /64s in 2001:db8:<0x100+tenant>::/48 for dual-stack tenants) with 1-5 hosts each; sandbox apps (test, CI,
  staging) run on networks of their own (the first third of the tenant's /24s, its first /64 when it has two),
  apart from the production hosts of its live apps. Every host checks
  in when it starts and every ~6 h (GET /v1/account), so each network a key uses appears in its history.
- Status mix: mostly 200/201; 0.6-2.5% 4xx spread over 400/401/403/404/429 (404 most common), 0.05-0.3%
  5xx (504 at ~30 s). Realistic paths (/v1/customers/{id}, /v1/orders, /v1/payments/{id}/capture, ...) with
  per-app id pools, methods, per-endpoint lognormal latencies, user agents `<tenant>-<service>/<ver> <lib>`.
- Lifecycle: keys that existed before the window get `apiKey.created` at t0; ~15% of the initial keys
  are created during the learning days (traffic 2-45 min later); a few brand-new keys after the learning
  period (from networks their tenant already uses).
- Benign changes: rotations (~10% of keys: new key with replaces_key_id, same app and hosts, traffic moves
  over in 2-30 min, old key revoked 17 min-18 h after its last request (a quarter within 40 min: prompt clean-ups), so
  no benign revocation has requests in the 15 minutes before it); scope changes
  (~5%, half followed by 4-25 stray 403s from a client not yet updated); decommissions (traffic stops, key
  revoked later); idle gaps of 12-30 h; deploys (x1.5-2 for 3-10 min, often with a client version bump);
  autoscaling (new host addresses inside networks the key already uses; an old host retires).

Injected incidents (labels.jsonl; each on its own key, keys with >= 12 h of history, after the learning
period; the first of each type lands 10-46 min after it, handy for the live demo)
- apiKey.usedFromNewIp: a leaked key used from 1-2 addresses in a network no tenant uses (a documentation
  /24, a 172.16.0.0/12 /24 or a 2001:db8:fxxx::/64), 5-40 reconnaissance GETs over 1-20 min with a
  scripting user agent. Label: first to last of those requests.
- apiKey.4xxCluster: 60-250 responses of one kind within 1.5-4.6 min from a known host: 401 credential
  stuffing, 403 scope probing (admin/keys/payouts paths), or 404 id enumeration (distinct unknown ids).
  Spread below ~75/min so that it is not also a request spike. A scope probe that tries GET/POST /v1/keys is
  also an apiKey.keyManagementAttempt (label: its first to last key-management request).
- apiKey.requestSpike: 5-20 min at max(12-20 x the key's normal rate for that time, 172/min) on keys with
  >= 3 req/min normally at that time, mostly successful calls to one or two endpoints from one or two hosts.
- apiKey.usedAfterRevoke: a key revoked (after a rotation, or decommissioned), then 8 min-3 h later a
  forgotten job on one of its hosts makes 3-20 requests (401) 20-90 s apart.

Profiles (`keywatch simulate --profile`, `keywatch.sim.profiles`): `default` is the scenario above, plus, after it
is planned and on keys (and tenants) of their own, the key hygiene situations of issue #13, each with quiet
look-alikes:
- `situations_browser`: usedFromBrowser (single-page apps on residential networks, extensions, Sec-Fetch-only
  webviews) and keyManagementAttempt (stolen keys calling the key API);
- `situations_lifecycle`: privilegeEscalated (widening scope changes and rotations), managedOutsidePortal (API
  channel, no MFA), lifecycleBurst (a compromised admin minting and re-scoping keys in minutes);
- `situations_hygiene_age`: rotationOverdue (keys created 95-250 days before the start, still used) and unused
  (a tenant whose sparse request history starts 40-60 days before the start);
- `situations_rotation`: rotationStalled (a new key never deployed, a service left on the old key) and
  revokedWhileInUse (revocations of keys in use);
- `situations_environment`: environmentMismatch (a sandbox key on production hosts, a live key on CI hosts) and
  usedFromNewIp for keys stolen the day they were created;
- `situations_sharing`: sharedAcrossServices (a key shared by two services, or copied into an integration).
`hard` adds those and the situations of `keywatch.sim.situations_rate`: credential stuffing (15-40 401/min on
quiet keys), slow 404 enumeration (15/min), a 403 probe at 6/min on a busy key (200-400 requests/min), ramps (x1
-> x8 over 30 min, 30 min flat; labelled from the first minute at x3, the lowest multiple a spike rule alerts
at), and unlabelled negatives: daily batch jobs (x8 for 15 min at the same UTC hour every day), x1.6 deploy
bumps, and 2 minutes of 40% 5xx after a bad deploy. The audit's thresholds below are the default profile's: the
slow situations of `hard` are below its 4xx floor on purpose.

`keywatch.sim.audit` checks a generated scenario against these promises (every label detectable, nothing
unlabelled crossing the same thresholds); `keywatch simulate --audit` runs it.

Modules: `scenario` (the plan, drawn from the seed), `generator` (records, minute by minute, in the
contract's JSON form), `labels`, `audit`, `evaluate` (scoring alerts against labels), `kafka` (producer).
"""
