"""What `make fault` (scripts/fault.py) and `make chaos` (scripts/chaos.py) share: the HTTP call
their clients make, a wait that follows observed state, and the ledger invariants both check
after their faults — one list, so both attacks check the same ledger."""

import json
import time
import urllib.error
import urllib.request

# Each query counts the rows that break the rule: 0 everywhere, or the ledger is wrong.
INVARIANTS = {
    "balance = sum of entries": "SELECT count(*) FROM accounts a WHERE balance <> "
                                "(SELECT coalesce(sum(amount), 0) FROM entries e WHERE e.account_id = a.id)",
    "two entries summing to zero": "SELECT count(*) FROM (SELECT t.id FROM transfers t LEFT JOIN entries e "
                                   "ON e.transfer_id = t.id GROUP BY t.id "
                                   "HAVING count(e.id) <> 2 OR coalesce(sum(e.amount), 0) <> 0) s",
    "each currency sums to zero": "SELECT count(*) FROM (SELECT currency FROM accounts GROUP BY currency "
                                  "HAVING sum(balance) <> 0) s",
    "no customer balance below minus its overdraft limit":
        "SELECT count(*) FROM accounts WHERE kind = 'customer' AND balance < -overdraft_limit",
    "a closed account holds nothing": "SELECT count(*) FROM accounts WHERE status = 'closed' AND balance <> 0",
}


def broken_invariants(psql):
    """The names of the invariants that do not hold, `psql(sql)` answering each count."""
    return [name for name, sql in INVARIANTS.items() if psql(sql) != "0"]


def request(method, url, body=None, token=None, key=None, timeout=30):
    """(status, body, headers); status 0 when there was no HTTP answer at all. A body that is
    not JSON (a proxy's page) comes back as {"raw": its first 200 characters}."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if key:
        headers["Idempotency-Key"] = key
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null"), response.headers
    except urllib.error.HTTPError as error:
        raw = error.read()
        try:
            return error.code, json.loads(raw or b"null"), error.headers
        except ValueError:
            return error.code, {"raw": raw.decode(errors="replace")[:200]}, error.headers
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return 0, None, {}


def wait_for(what, predicate, seconds, fail):
    """Seconds until `predicate()` held, polled every 0.1 s; None (and `fail(...)`) if it did not
    within `seconds`."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.1)
    fail(f"{what} did not happen within {seconds} s")
    return None


def stop_clients(stop, threads, fail):
    """Sets `stop` and joins the client threads; one still running after 120 s never got a
    definite answer for its key (a keyed client repeats its key until it has one)."""
    stop.set()
    for thread in threads:
        thread.join(timeout=120)
        if thread.is_alive():
            fail("a client never got a definite answer for its key")
