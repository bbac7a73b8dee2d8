//! Route tables the attacks run over. Placeholders: `{meter}` (a meter id), `{customer}` (a
//! customer id), `{bill}`, `{id}` (a numeric id). Add a row when an area adds a route: the
//! OpenAPI coverage test fails until every GET route with an id is listed here.

/// GET routes that show one meter's or one customer's data (IDOR targets). `{meter}` and
/// `{customer}` are filled with the victim's ids, `{command}` with the id of a command queued
/// for the victim's meter. Every row must serve its owner (the test fails otherwise, so a
/// renamed route cannot leave a row that passes by answering 404 to everyone).
pub const OWNED_GET: &[&str] = &[
    "/api/v1/meters/{meter}",
    "/api/v1/meters/{meter}/readings",
    "/api/v1/meters/{meter}/readings?resolution=raw",
    "/api/v1/meters/{meter}/events",
    "/api/v1/meters/{meter}/commands",
    "/api/v1/meters/{meter}/live",
    "/api/v1/live?meter={meter}",
    "/api/v1/commands/{command}",
    "/api/v1/customers/{customer}",
    "/api/v1/customers/{customer}/bills",
    "/api/v1/customers/{customer}/bill-to-date",
    "/api/v1/customers/{customer}/payments",
    "/my/meters/{meter}",
    "/my/meters/{meter}/readings.csv",
    "/web/meters/{meter}/series.json",
    "/web/meters/{meter}/profile.json",
    "/web/meters/{meter}/live",
];

/// GET routes that need a session or token at all: the API answers 401, the web pages send
/// the browser to the sign-in page. Every row must exist (an admin is served).
pub const PROTECTED_GET: &[&str] = &[
    "/api/v1/auth/me",
    "/api/v1/users",
    "/api/v1/tokens",
    "/api/v1/audit",
    "/api/v1/audit.csv",
    "/api/v1/meters",
    "/api/v1/customers",
    "/api/v1/live",
    "/api/v1/alarms",
    "/api/v1/cases",
    "/api/v1/cases/labels.csv",
    "/api/v1/quarantine",
    "/api/v1/tariffs",
    "/api/v1/notifications",
    "/api/v1/notifications/preferences",
    "/api/v1/openapi.json",
    "/fleet",
    "/alarms",
    "/register",
];

/// Unsafe routes that issue relay or limiter commands (operator only). Bodies are what the
/// command API accepts today; a customer must be refused whatever the body.
pub const COMMAND_POST: &[(&str, &str)] = &[
    (
        "/api/v1/meters/{meter}/commands",
        r#"{"kind":"relay_disconnect","reason":"attack"}"#,
    ),
    (
        "/api/v1/meters/{meter}/commands",
        r#"{"kind":"limiter_set","threshold_w":1,"duration_s":1,"reason":"attack"}"#,
    ),
    (
        "/api/v1/meters/{meter}/relay",
        r#"{"state":"open","reason":"attack"}"#,
    ),
    (
        "/api/v1/meters/{meter}/limiter",
        r#"{"limit_w":100,"reason":"attack"}"#,
    ),
];

/// Routes that hand out files, with `{name}` where a path-traversal string goes.
pub const DOWNLOADS: &[&str] = &[
    "/api/v1/bills/{name}/statement.pdf",
    "/api/v1/bills/{name}/statement.csv",
    "/api/v1/bills/{name}",
    "/api/v1/reports/{name}",
    "/api/v1/meters/{name}/export.csv",
    "/static/{name}",
    "/assets/{name}",
    "/{name}",
];

/// Query parameters of the GET routes outside the OpenAPI document (accounts, audit, alarms,
/// cases, billing, web pages) as their handlers read them (SQL-injection targets; the OpenAPI
/// routes' parameters are taken from the document itself). `{meter}` is the caller's own
/// meter, so the query reaches the database.
pub const QUERY_ROUTES: &[(&str, &[&str])] = &[
    (
        "/api/v1/audit",
        &[
            "actor",
            "action",
            "target",
            "outcome",
            "since_ms",
            "until_ms",
            "before_id",
            "limit",
        ],
    ),
    (
        "/api/v1/audit.csv",
        &[
            "actor", "action", "target", "outcome", "since_ms", "until_ms", "limit",
        ],
    ),
    ("/api/v1/tokens", &["all"]),
    (
        "/api/v1/alarms",
        &["meter", "kind", "status", "active", "since_ms", "limit"],
    ),
    ("/api/v1/cases", &["meter", "state", "limit"]),
    ("/api/v1/notifications", &["since_ms"]),
    ("/fleet", &["q", "status"]),
    ("/my", &["customer"]),
    (
        "/my/meters/{meter}/readings.csv",
        &["from", "to", "from_ms", "to_ms"],
    ),
    (
        "/web/meters/{meter}/series.json",
        &["from_ms", "to_ms", "days", "kind"],
    ),
];

/// Strings that break naive SQL (and a few other parsers).
pub const INJECTIONS: &[&str] = &[
    "' OR '1'='1",
    "'; DROP TABLE users; --",
    "\" OR 1=1 --",
    "1; DELETE FROM audit_log",
    "1 UNION SELECT password_hash FROM users",
    "alice'--",
    "%27%20OR%201%3D1",
    "\\'; SELECT pg_sleep(5); --",
    "0x27",
    "NULL",
    "-1",
    "99999999999999999999999",
    "../../../../etc/passwd",
    "\u{0}",
];

/// Path-traversal names.
pub const TRAVERSALS: &[&str] = &[
    "..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "..%2f..%2f..%2f..%2fetc%2fpasswd",
    "%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "....%2F%2F....%2F%2Fetc%2Fpasswd",
    "..%5C..%5C..%5Cwindows%5Cwin.ini",
    "%252e%252e%252fetc%252fpasswd",
    "wattline.sqlite3",
    "..%2Fwattline.sqlite3",
    "master.key",
];

/// Percent-encodes a query value.
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Fills the placeholders.
pub fn fill(template: &str, meter: &str, customer: &str) -> String {
    fill_command(template, meter, customer, 1)
}

/// Fills the placeholders, `{command}` with `command`.
pub fn fill_command(template: &str, meter: &str, customer: &str, command: i64) -> String {
    template
        .replace("{meter}", meter)
        .replace("{customer}", customer)
        .replace("{command}", &command.to_string())
        .replace("{bill}", "1")
        .replace("{id}", "1")
}

/// Whether a concrete OpenAPI path template (`/api/v1/meters/{id}/readings`) is covered by a
/// table row (placeholder names may differ).
pub fn covers(openapi_path: &str) -> bool {
    let shape = |p: &str| -> Vec<String> {
        p.split('?')
            .next()
            .unwrap_or("")
            .split('/')
            .map(|seg| {
                if seg.starts_with('{') {
                    "{}".to_owned()
                } else {
                    seg.to_owned()
                }
            })
            .collect()
    };
    let want = shape(openapi_path);
    OWNED_GET
        .iter()
        .chain(PROTECTED_GET)
        .chain(DOWNLOADS)
        .chain(QUERY_ROUTES.iter().map(|(p, _)| p))
        .any(|t| {
            let t = t.replace("{name}", "{x}");
            shape(&t) == want
        })
}
