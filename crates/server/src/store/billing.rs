//! Billing, payments, prepaid credit and notification tables (migrations 300–399) and the
//! [`BillingStore`] trait over SQLite and PostgreSQL.
//!
//! Money is never a float here: amounts are decimal TEXT in SQLite and NUMERIC in PostgreSQL,
//! read back as text and parsed into [`Decimal`]. Dates of cycles and tariff validity are local
//! calendar dates stored as ISO `YYYY-MM-DD` text (they sort and compare as dates).

use async_trait::async_trait;
use chrono::NaiveDate;
use rusqlite::{OptionalExtension, params};
use rust_decimal::Decimal;

use super::extensions::Migration;
use super::{PgStore, SqliteStore, postgres, sqlite};
use crate::Error;

pub(crate) const MIGRATIONS: &[Migration] = &[Migration {
    version: 300,
    sqlite: r#"
CREATE TABLE billing_tariffs (
    id TEXT NOT NULL,
    revision INTEGER NOT NULL,
    name TEXT NOT NULL,
    currency TEXT NOT NULL,
    toml TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (id, revision)
);
CREATE TABLE billing_assignments (
    customer TEXT NOT NULL,
    valid_from TEXT NOT NULL,
    tariff_id TEXT NOT NULL,
    payment_mode TEXT NOT NULL,
    protected INTEGER NOT NULL,
    PRIMARY KEY (customer, valid_from)
);
CREATE TABLE billing_bills (
    id TEXT PRIMARY KEY,
    customer TEXT NOT NULL,
    cycle_start TEXT NOT NULL,
    cycle_end TEXT NOT NULL,
    status TEXT NOT NULL,
    tariff_id TEXT NOT NULL,
    tariff_revision INTEGER NOT NULL,
    currency TEXT NOT NULL,
    subtotal TEXT NOT NULL,
    taxes TEXT NOT NULL,
    total TEXT NOT NULL,
    import_wh INTEGER NOT NULL,
    export_wh INTEGER NOT NULL,
    issued_ms INTEGER NOT NULL,
    due_date TEXT NOT NULL,
    adjustments TEXT NOT NULL,
    UNIQUE (customer, cycle_start)
);
CREATE TABLE billing_bill_lines (
    bill_id TEXT NOT NULL REFERENCES billing_bills(id),
    n INTEGER NOT NULL,
    kind TEXT NOT NULL,
    description TEXT NOT NULL,
    quantity TEXT NOT NULL,
    unit TEXT NOT NULL,
    unit_price TEXT NOT NULL,
    amount TEXT NOT NULL,
    PRIMARY KEY (bill_id, n)
);
CREATE TABLE billing_rerates (
    bill_id TEXT NOT NULL REFERENCES billing_bills(id),
    tariff_revision INTEGER NOT NULL,
    difference TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (bill_id, tariff_revision)
);
CREATE TABLE billing_payments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    customer TEXT NOT NULL,
    amount TEXT NOT NULL,
    method TEXT NOT NULL,
    reference TEXT NOT NULL,
    received_ms INTEGER NOT NULL,
    recorded_by TEXT NOT NULL
);
CREATE INDEX billing_payments_customer ON billing_payments (customer, received_ms);
CREATE TABLE billing_prepaid (
    customer TEXT PRIMARY KEY,
    balance TEXT NOT NULL,
    debited_through_ms INTEGER NOT NULL,
    zero_credit_since_ms INTEGER,
    warned_ms INTEGER,
    disconnected_ms INTEGER
);
CREATE TABLE notify_prefs (
    username TEXT NOT NULL,
    customer TEXT,
    rule TEXT NOT NULL,
    channel TEXT NOT NULL,
    target TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    PRIMARY KEY (username, rule, channel)
);
CREATE TABLE notify_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT NOT NULL,
    customer TEXT,
    rule TEXT NOT NULL,
    channel TEXT NOT NULL,
    target TEXT NOT NULL,
    incident TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    done_ms INTEGER,
    error TEXT
);
CREATE INDEX notify_messages_status ON notify_messages (status, id);
CREATE INDEX notify_messages_user ON notify_messages (username, channel, created_ms);
"#,
    postgres: r#"
CREATE TABLE billing_tariffs (
    id TEXT NOT NULL,
    revision BIGINT NOT NULL,
    name TEXT NOT NULL,
    currency TEXT NOT NULL,
    toml TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (id, revision)
);
CREATE TABLE billing_assignments (
    customer TEXT NOT NULL,
    valid_from TEXT NOT NULL,
    tariff_id TEXT NOT NULL,
    payment_mode TEXT NOT NULL,
    protected BOOLEAN NOT NULL,
    PRIMARY KEY (customer, valid_from)
);
CREATE TABLE billing_bills (
    id TEXT PRIMARY KEY,
    customer TEXT NOT NULL,
    cycle_start TEXT NOT NULL,
    cycle_end TEXT NOT NULL,
    status TEXT NOT NULL,
    tariff_id TEXT NOT NULL,
    tariff_revision BIGINT NOT NULL,
    currency TEXT NOT NULL,
    subtotal NUMERIC NOT NULL,
    taxes NUMERIC NOT NULL,
    total NUMERIC NOT NULL,
    import_wh BIGINT NOT NULL,
    export_wh BIGINT NOT NULL,
    issued_ms BIGINT NOT NULL,
    due_date TEXT NOT NULL,
    adjustments NUMERIC NOT NULL,
    UNIQUE (customer, cycle_start)
);
CREATE TABLE billing_bill_lines (
    bill_id TEXT NOT NULL REFERENCES billing_bills(id),
    n BIGINT NOT NULL,
    kind TEXT NOT NULL,
    description TEXT NOT NULL,
    quantity NUMERIC NOT NULL,
    unit TEXT NOT NULL,
    unit_price NUMERIC NOT NULL,
    amount NUMERIC NOT NULL,
    PRIMARY KEY (bill_id, n)
);
CREATE TABLE billing_rerates (
    bill_id TEXT NOT NULL REFERENCES billing_bills(id),
    tariff_revision BIGINT NOT NULL,
    difference NUMERIC NOT NULL,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (bill_id, tariff_revision)
);
CREATE TABLE billing_payments (
    id BIGSERIAL PRIMARY KEY,
    customer TEXT NOT NULL,
    amount NUMERIC NOT NULL,
    method TEXT NOT NULL,
    reference TEXT NOT NULL,
    received_ms BIGINT NOT NULL,
    recorded_by TEXT NOT NULL
);
CREATE INDEX billing_payments_customer ON billing_payments (customer, received_ms);
CREATE TABLE billing_prepaid (
    customer TEXT PRIMARY KEY,
    balance NUMERIC NOT NULL,
    debited_through_ms BIGINT NOT NULL,
    zero_credit_since_ms BIGINT,
    warned_ms BIGINT,
    disconnected_ms BIGINT
);
CREATE TABLE notify_prefs (
    username TEXT NOT NULL,
    customer TEXT,
    rule TEXT NOT NULL,
    channel TEXT NOT NULL,
    target TEXT NOT NULL,
    enabled BOOLEAN NOT NULL,
    PRIMARY KEY (username, rule, channel)
);
CREATE TABLE notify_messages (
    id BIGSERIAL PRIMARY KEY,
    username TEXT NOT NULL,
    customer TEXT,
    rule TEXT NOT NULL,
    channel TEXT NOT NULL,
    target TEXT NOT NULL,
    incident TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    done_ms BIGINT,
    error TEXT
);
CREATE INDEX notify_messages_status ON notify_messages (status, id);
CREATE INDEX notify_messages_user ON notify_messages (username, channel, created_ms);
"#,
}];

/// One stored revision of a tariff: the TOML text as the admin wrote it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTariff {
    /// The tariff's id (the `id` inside the TOML).
    pub id: String,
    /// 1 for the first text, +1 per correction.
    pub revision: i64,
    /// Display name from the TOML.
    pub name: String,
    /// ISO 4217 code.
    pub currency: String,
    /// The TOML text (parsed again with [`billing::Tariff::from_toml`] when rating).
    pub toml: String,
    /// When it was stored, Unix ms UTC.
    pub created_ms: i64,
    /// Who stored it.
    pub created_by: String,
}

/// Whether a customer pays before (prepaid credit) or after (bills per cycle) consumption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentMode {
    /// Bills per cycle, due date, cut-off.
    Postpaid,
    /// Credit balance debited as energy is used.
    Prepaid,
}

impl PaymentMode {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentMode::Postpaid => "postpaid",
            PaymentMode::Prepaid => "prepaid",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Result<Self, Error> {
        match s {
            "postpaid" => Ok(PaymentMode::Postpaid),
            "prepaid" => Ok(PaymentMode::Prepaid),
            other => Err(Error::invalid(format!(
                "payment mode {other:?} is neither \"postpaid\" nor \"prepaid\""
            ))),
        }
    }
}

/// Which tariff a customer is on from a local date on (until the next assignment).
#[derive(Debug, Clone, PartialEq)]
pub struct TariffAssignment {
    /// The customer.
    pub customer: String,
    /// First local day the assignment holds.
    pub valid_from: NaiveDate,
    /// The tariff id (its newest revision is used).
    pub tariff_id: String,
    /// Prepaid or postpaid.
    pub payment_mode: PaymentMode,
    /// Never disconnected for lack of credit (medical equipment, social protection).
    pub protected: bool,
}

/// A bill's place in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BillState {
    /// Issued and not yet settled.
    Issued,
    /// Settled by payments.
    Paid,
    /// Past its due date and not settled.
    Overdue,
}

impl BillState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            BillState::Issued => "issued",
            BillState::Paid => "paid",
            BillState::Overdue => "overdue",
        }
    }

    fn parse(s: &str) -> Result<Self, Error> {
        match s {
            "issued" => Ok(BillState::Issued),
            "paid" => Ok(BillState::Paid),
            "overdue" => Ok(BillState::Overdue),
            other => Err(Error::invalid(format!("unknown bill status {other:?}"))),
        }
    }
}

/// One stored bill line (the billing crate's `BillLine`, flattened).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredBillLine {
    /// `energy`, `demand`, `fixed`, `export`, `levy`, `tax`, `adjustment`.
    pub kind: String,
    /// What the line charges for.
    pub description: String,
    /// Quantity charged.
    pub quantity: Decimal,
    /// Unit symbol (`kWh`, `kW`, `day`, ...).
    pub unit: String,
    /// Price per unit.
    pub unit_price: Decimal,
    /// Rounded amount.
    pub amount: Decimal,
}

/// An issued bill with its lines.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredBill {
    /// 128 random bits in hex: not guessable, so a customer cannot reach another's bill by
    /// counting.
    pub id: String,
    /// The customer billed.
    pub customer: String,
    /// First local day of the cycle.
    pub cycle_start: NaiveDate,
    /// Local day after the cycle.
    pub cycle_end: NaiveDate,
    /// Issued, paid or overdue.
    pub status: BillState,
    /// Tariff id used.
    pub tariff_id: String,
    /// Tariff revision the current lines were rated with.
    pub tariff_revision: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// Sum of the non-tax lines.
    pub subtotal: Decimal,
    /// Sum of levies and taxes.
    pub taxes: Decimal,
    /// Sum of all lines.
    pub total: Decimal,
    /// Energy imported in the cycle, Wh.
    pub import_wh: i64,
    /// Energy exported in the cycle, Wh.
    pub export_wh: i64,
    /// When it was issued, Unix ms UTC.
    pub issued_ms: i64,
    /// Last day to pay.
    pub due_date: NaiveDate,
    /// Sum of re-rating differences applied since issue (already inside `total`).
    pub adjustments: Decimal,
    /// The itemised lines, in order.
    pub lines: Vec<StoredBillLine>,
}

/// A payment as an operator records it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPayment {
    /// The paying customer.
    pub customer: String,
    /// Amount received (positive; a refund is negative).
    pub amount: Decimal,
    /// `cash`, `bank-transfer`, `card`, `mobile-money`, ...
    pub method: String,
    /// Receipt or transaction reference.
    pub reference: String,
    /// When it was received, Unix ms UTC.
    pub received_ms: i64,
    /// The operator who recorded it.
    pub recorded_by: String,
}

/// A stored payment.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPayment {
    /// Store-assigned id.
    pub id: i64,
    /// The payment.
    pub payment: NewPayment,
}

/// A prepaid customer's credit.
#[derive(Debug, Clone, PartialEq)]
pub struct PrepaidState {
    /// The customer.
    pub customer: String,
    /// Credit left (may go below zero during the grace period).
    pub balance: Decimal,
    /// Consumption up to this instant is debited, Unix ms UTC.
    pub debited_through_ms: i64,
    /// Since when the credit is at or below zero.
    pub zero_credit_since_ms: Option<i64>,
    /// When the last low-credit warning went out.
    pub warned_ms: Option<i64>,
    /// When the supply was disconnected for lack of credit (cleared on top-up).
    pub disconnected_ms: Option<i64>,
}

/// A user's choice for one notification rule on one channel.
#[derive(Debug, Clone, PartialEq)]
pub struct NotificationPref {
    /// The user (account name).
    pub username: String,
    /// For a customer's user: only events about this customer reach them. `None` (operators):
    /// events about every customer.
    pub customer: Option<String>,
    /// The rule (`overload`, `tamper`, `offline`, `low-credit`, `bill-issued`, `peak-consumption`,
    /// `power-quality`).
    pub rule: String,
    /// `email`, `webhook` or `inapp`.
    pub channel: String,
    /// Mail address or webhook URL; empty for in-app.
    pub target: String,
    /// Whether messages are sent.
    pub enabled: bool,
}

/// A message to deliver (or, for in-app, to show).
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    /// The recipient.
    pub username: String,
    /// The customer it concerns.
    pub customer: Option<String>,
    /// The rule that fired.
    pub rule: String,
    /// `email`, `webhook` or `inapp`.
    pub channel: String,
    /// Mail address or webhook URL.
    pub target: String,
    /// What it is about (`meter:house-7:overload`): repeated firings of one incident are merged.
    pub incident: String,
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub body: String,
    /// When it was created, Unix ms UTC.
    pub created_ms: i64,
}

/// Delivery state of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageStatus {
    /// Waiting for the sender.
    Pending,
    /// Delivered (for in-app: visible to the user).
    Sent,
    /// Merged into a digest or dropped by the rate limit (counted, never silently lost).
    Suppressed,
    /// Gave up after retries.
    Failed,
}

impl MessageStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Pending => "pending",
            MessageStatus::Sent => "sent",
            MessageStatus::Suppressed => "suppressed",
            MessageStatus::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<Self, Error> {
        Ok(match s {
            "pending" => MessageStatus::Pending,
            "sent" => MessageStatus::Sent,
            "suppressed" => MessageStatus::Suppressed,
            "failed" => MessageStatus::Failed,
            other => return Err(Error::invalid(format!("unknown message status {other:?}"))),
        })
    }
}

/// A stored message.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    /// Store-assigned id.
    pub id: i64,
    /// The message.
    pub message: NewMessage,
    /// Where it is.
    pub status: MessageStatus,
    /// Delivery attempts so far.
    pub attempts: i64,
    /// When it was sent, suppressed or given up.
    pub done_ms: Option<i64>,
    /// The last delivery error.
    pub error: Option<String>,
}

/// The billing, payments, prepaid and notification tables.
#[async_trait]
pub trait BillingStore: Send + Sync {
    /// Stores a new revision of a tariff's TOML text; returns the revision number.
    async fn put_tariff(
        &self,
        id: &str,
        name: &str,
        currency: &str,
        toml: &str,
        by: &str,
        at_ms: i64,
    ) -> Result<i64, Error>;
    /// The newest revision of a tariff.
    async fn tariff(&self, id: &str) -> Result<Option<StoredTariff>, Error>;
    /// Every revision of a tariff, oldest first.
    async fn tariff_revisions(&self, id: &str) -> Result<Vec<StoredTariff>, Error>;
    /// The newest revision of every tariff, by id.
    async fn tariffs(&self) -> Result<Vec<StoredTariff>, Error>;

    /// Creates or replaces the assignment starting on `valid_from`.
    async fn assign_tariff(&self, a: &TariffAssignment) -> Result<(), Error>;
    /// A customer's assignments, oldest first.
    async fn assignments(&self, customer: &str) -> Result<Vec<TariffAssignment>, Error>;
    /// Every customer with a tariff assignment, by id.
    async fn billed_customers(&self) -> Result<Vec<String>, Error>;

    /// Stores a new bill with its lines. Returns false (and stores nothing) when the customer
    /// already has a bill for that cycle: bill runs are idempotent.
    async fn insert_bill(&self, bill: &StoredBill) -> Result<bool, Error>;
    /// Replaces a bill's lines and totals after re-rating with `tariff_revision`, recording the
    /// difference once per revision. Returns false when that revision was already applied.
    async fn rerate_bill(
        &self,
        bill: &StoredBill,
        difference: Decimal,
        at_ms: i64,
    ) -> Result<bool, Error>;
    /// A bill with its lines.
    async fn bill(&self, id: &str) -> Result<Option<StoredBill>, Error>;
    /// A customer's bills with their lines, newest cycle first.
    async fn bills(&self, customer: &str) -> Result<Vec<StoredBill>, Error>;
    /// Sets a bill's status.
    async fn set_bill_status(&self, id: &str, status: BillState) -> Result<(), Error>;

    /// Records a payment.
    async fn record_payment(&self, p: &NewPayment) -> Result<StoredPayment, Error>;
    /// A customer's payments, newest first.
    async fn payments(&self, customer: &str) -> Result<Vec<StoredPayment>, Error>;

    /// A prepaid customer's credit.
    async fn prepaid(&self, customer: &str) -> Result<Option<PrepaidState>, Error>;
    /// Creates or replaces a prepaid customer's credit.
    async fn put_prepaid(&self, s: &PrepaidState) -> Result<(), Error>;

    /// Creates or replaces a preference.
    async fn set_pref(&self, p: &NotificationPref) -> Result<(), Error>;
    /// Enabled preferences for a rule, every user.
    async fn prefs_for_rule(&self, rule: &str) -> Result<Vec<NotificationPref>, Error>;
    /// A user's preferences.
    async fn prefs(&self, username: &str) -> Result<Vec<NotificationPref>, Error>;

    /// Queues a message with `status`.
    async fn add_message(&self, m: &NewMessage, status: MessageStatus) -> Result<i64, Error>;
    /// Messages of one status, oldest first, at most `limit`.
    async fn messages_with_status(
        &self,
        status: MessageStatus,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, Error>;
    /// A user's messages on one channel created at or after `since_ms`, newest first.
    async fn user_messages(
        &self,
        username: &str,
        channel: &str,
        since_ms: i64,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, Error>;
    /// Every message of a user and channel since `since_ms` that was not suppressed (what the
    /// rate limit and the merge window count), newest first. Unbounded on purpose: suppressed
    /// messages of a flood must not push the counted ones out of a `LIMIT`.
    async fn unsuppressed_messages(
        &self,
        username: &str,
        channel: &str,
        since_ms: i64,
    ) -> Result<Vec<StoredMessage>, Error>;
    /// Moves a message on: counts an attempt, sets status, time and error.
    async fn finish_message(
        &self,
        id: i64,
        status: MessageStatus,
        error: Option<&str>,
        at_ms: i64,
    ) -> Result<(), Error>;
}

fn parse_dec(s: &str, what: &str) -> Result<Decimal, Error> {
    s.parse::<Decimal>()
        .map_err(|e| Error::invalid(format!("stored {what} {s:?} is not a decimal: {e}")))
}

fn parse_date(s: &str, what: &str) -> Result<NaiveDate, Error> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|e| Error::invalid(format!("stored {what} {s:?} is not a date: {e}")))
}

fn date_text(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

/// A bill row before its lines are attached (both backends read it as text columns).
struct BillRow {
    id: String,
    customer: String,
    cycle_start: String,
    cycle_end: String,
    status: String,
    tariff_id: String,
    tariff_revision: i64,
    currency: String,
    subtotal: String,
    taxes: String,
    total: String,
    import_wh: i64,
    export_wh: i64,
    issued_ms: i64,
    due_date: String,
    adjustments: String,
}

impl BillRow {
    fn into_bill(self, lines: Vec<StoredBillLine>) -> Result<StoredBill, Error> {
        Ok(StoredBill {
            cycle_start: parse_date(&self.cycle_start, "cycle start")?,
            cycle_end: parse_date(&self.cycle_end, "cycle end")?,
            status: BillState::parse(&self.status)?,
            subtotal: parse_dec(&self.subtotal, "subtotal")?,
            taxes: parse_dec(&self.taxes, "taxes")?,
            total: parse_dec(&self.total, "total")?,
            due_date: parse_date(&self.due_date, "due date")?,
            adjustments: parse_dec(&self.adjustments, "adjustments")?,
            id: self.id,
            customer: self.customer,
            tariff_id: self.tariff_id,
            tariff_revision: self.tariff_revision,
            currency: self.currency,
            import_wh: self.import_wh,
            export_wh: self.export_wh,
            issued_ms: self.issued_ms,
            lines,
        })
    }
}

fn line_from(
    kind: String,
    description: String,
    quantity: &str,
    unit: String,
    unit_price: &str,
    amount: &str,
) -> Result<StoredBillLine, Error> {
    Ok(StoredBillLine {
        kind,
        description,
        quantity: parse_dec(quantity, "line quantity")?,
        unit,
        unit_price: parse_dec(unit_price, "line unit price")?,
        amount: parse_dec(amount, "line amount")?,
    })
}

struct MessageRow {
    id: i64,
    username: String,
    customer: Option<String>,
    rule: String,
    channel: String,
    target: String,
    incident: String,
    subject: String,
    body: String,
    created_ms: i64,
    status: String,
    attempts: i64,
    done_ms: Option<i64>,
    error: Option<String>,
}

impl MessageRow {
    fn into_message(self) -> Result<StoredMessage, Error> {
        Ok(StoredMessage {
            id: self.id,
            status: MessageStatus::parse(&self.status)?,
            attempts: self.attempts,
            done_ms: self.done_ms,
            error: self.error,
            message: NewMessage {
                username: self.username,
                customer: self.customer,
                rule: self.rule,
                channel: self.channel,
                target: self.target,
                incident: self.incident,
                subject: self.subject,
                body: self.body,
                created_ms: self.created_ms,
            },
        })
    }
}

const MESSAGE_COLUMNS: &str = "id, username, customer, rule, channel, target, incident, subject, body, created_ms, status, attempts, done_ms, error";

// ---------------------------------------------------------------------------------------------
// SQLite

const SQ_BILL_COLUMNS: &str = "id, customer, cycle_start, cycle_end, status, tariff_id, tariff_revision, currency, subtotal, taxes, total, import_wh, export_wh, issued_ms, due_date, adjustments";

fn sq_bill_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BillRow> {
    Ok(BillRow {
        id: r.get(0)?,
        customer: r.get(1)?,
        cycle_start: r.get(2)?,
        cycle_end: r.get(3)?,
        status: r.get(4)?,
        tariff_id: r.get(5)?,
        tariff_revision: r.get(6)?,
        currency: r.get(7)?,
        subtotal: r.get(8)?,
        taxes: r.get(9)?,
        total: r.get(10)?,
        import_wh: r.get(11)?,
        export_wh: r.get(12)?,
        issued_ms: r.get(13)?,
        due_date: r.get(14)?,
        adjustments: r.get(15)?,
    })
}

fn sq_lines(conn: &rusqlite::Connection, bill_id: &str) -> Result<Vec<StoredBillLine>, Error> {
    let mut st = conn
        .prepare_cached(
            "SELECT kind, description, quantity, unit, unit_price, amount FROM billing_bill_lines WHERE bill_id = ?1 ORDER BY n",
        )
        .map_err(sqlite::db("reading bill lines"))?;
    let rows = st
        .query_map([bill_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
            ))
        })
        .map_err(sqlite::db("reading bill lines"))?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(sqlite::db("reading bill lines"))?;
    rows.into_iter()
        .map(|(k, d, q, u, p, a)| line_from(k, d, &q, u, &p, &a))
        .collect()
}

fn sq_write_lines(tx: &rusqlite::Transaction<'_>, bill: &StoredBill) -> Result<(), Error> {
    tx.execute(
        "DELETE FROM billing_bill_lines WHERE bill_id = ?1",
        [&bill.id],
    )
    .map_err(sqlite::db("replacing bill lines"))?;
    for (n, l) in bill.lines.iter().enumerate() {
        tx.execute(
            "INSERT INTO billing_bill_lines (bill_id, n, kind, description, quantity, unit, unit_price, amount) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                bill.id,
                n as i64,
                l.kind,
                l.description,
                l.quantity.to_string(),
                l.unit,
                l.unit_price.to_string(),
                l.amount.to_string()
            ],
        )
        .map_err(sqlite::db("writing a bill line"))?;
    }
    Ok(())
}

fn sq_tariff(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredTariff> {
    Ok(StoredTariff {
        id: r.get(0)?,
        revision: r.get(1)?,
        name: r.get(2)?,
        currency: r.get(3)?,
        toml: r.get(4)?,
        created_ms: r.get(5)?,
        created_by: r.get(6)?,
    })
}

fn sq_message(r: &rusqlite::Row<'_>) -> rusqlite::Result<MessageRow> {
    Ok(MessageRow {
        id: r.get(0)?,
        username: r.get(1)?,
        customer: r.get(2)?,
        rule: r.get(3)?,
        channel: r.get(4)?,
        target: r.get(5)?,
        incident: r.get(6)?,
        subject: r.get(7)?,
        body: r.get(8)?,
        created_ms: r.get(9)?,
        status: r.get(10)?,
        attempts: r.get(11)?,
        done_ms: r.get(12)?,
        error: r.get(13)?,
    })
}

#[async_trait]
impl BillingStore for SqliteStore {
    async fn put_tariff(
        &self,
        id: &str,
        name: &str,
        currency: &str,
        toml: &str,
        by: &str,
        at_ms: i64,
    ) -> Result<i64, Error> {
        let (id, name, currency, toml, by) = (
            id.to_owned(),
            name.to_owned(),
            currency.to_owned(),
            toml.to_owned(),
            by.to_owned(),
        );
        self.run(true, move |conn| {
            let tx = conn
                .transaction()
                .map_err(sqlite::db("storing a tariff"))?;
            let rev: i64 = tx
                .query_row(
                    "SELECT COALESCE(MAX(revision), 0) + 1 FROM billing_tariffs WHERE id = ?1",
                    [&id],
                    |r| r.get(0),
                )
                .map_err(sqlite::db("numbering a tariff revision"))?;
            tx.execute(
                "INSERT INTO billing_tariffs (id, revision, name, currency, toml, created_ms, created_by) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![id, rev, name, currency, toml, at_ms, by],
            )
            .map_err(sqlite::db("storing a tariff"))?;
            tx.commit().map_err(sqlite::db("storing a tariff"))?;
            Ok(rev)
        })
        .await
    }

    async fn tariff(&self, id: &str) -> Result<Option<StoredTariff>, Error> {
        let id = id.to_owned();
        self.run(false, move |conn| {
            conn.query_row(
                "SELECT id, revision, name, currency, toml, created_ms, created_by FROM billing_tariffs WHERE id = ?1 ORDER BY revision DESC LIMIT 1",
                [&id],
                sq_tariff,
            )
            .optional()
            .map_err(sqlite::db("reading a tariff"))
        })
        .await
    }

    async fn tariff_revisions(&self, id: &str) -> Result<Vec<StoredTariff>, Error> {
        let id = id.to_owned();
        self.run(false, move |conn| {
            let mut st = conn
                .prepare("SELECT id, revision, name, currency, toml, created_ms, created_by FROM billing_tariffs WHERE id = ?1 ORDER BY revision")
                .map_err(sqlite::db("reading tariff revisions"))?;
            st.query_map([&id], sq_tariff)
                .map_err(sqlite::db("reading tariff revisions"))?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(sqlite::db("reading tariff revisions"))
        })
        .await
    }

    async fn tariffs(&self) -> Result<Vec<StoredTariff>, Error> {
        self.run(false, move |conn| {
            let mut st = conn
                .prepare("SELECT t.id, t.revision, t.name, t.currency, t.toml, t.created_ms, t.created_by FROM billing_tariffs t WHERE t.revision = (SELECT MAX(revision) FROM billing_tariffs u WHERE u.id = t.id) ORDER BY t.id")
                .map_err(sqlite::db("listing tariffs"))?;
            st.query_map([], sq_tariff)
                .map_err(sqlite::db("listing tariffs"))?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(sqlite::db("listing tariffs"))
        })
        .await
    }

    async fn assign_tariff(&self, a: &TariffAssignment) -> Result<(), Error> {
        let a = a.clone();
        self.run(true, move |conn| {
            conn.execute(
                "INSERT INTO billing_assignments (customer, valid_from, tariff_id, payment_mode, protected) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (customer, valid_from) DO UPDATE SET tariff_id = excluded.tariff_id, payment_mode = excluded.payment_mode, protected = excluded.protected",
                params![a.customer, date_text(a.valid_from), a.tariff_id, a.payment_mode.as_str(), a.protected],
            )
            .map_err(sqlite::db("assigning a tariff"))?;
            Ok(())
        })
        .await
    }

    async fn assignments(&self, customer: &str) -> Result<Vec<TariffAssignment>, Error> {
        let customer = customer.to_owned();
        let rows = self
            .run(false, move |conn| {
                let mut st = conn
                    .prepare("SELECT customer, valid_from, tariff_id, payment_mode, protected FROM billing_assignments WHERE customer = ?1 ORDER BY valid_from")
                    .map_err(sqlite::db("reading tariff assignments"))?;
                st.query_map([&customer], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, bool>(4)?,
                    ))
                })
                .map_err(sqlite::db("reading tariff assignments"))?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(sqlite::db("reading tariff assignments"))
            })
            .await?;
        rows.into_iter()
            .map(|(customer, from, tariff_id, mode, protected)| {
                Ok(TariffAssignment {
                    customer,
                    valid_from: parse_date(&from, "assignment start")?,
                    tariff_id,
                    payment_mode: PaymentMode::parse(&mode)?,
                    protected,
                })
            })
            .collect()
    }

    async fn billed_customers(&self) -> Result<Vec<String>, Error> {
        self.run(false, move |conn| {
            let mut st = conn
                .prepare("SELECT DISTINCT customer FROM billing_assignments ORDER BY customer")
                .map_err(sqlite::db("listing billed customers"))?;
            st.query_map([], |r| r.get::<_, String>(0))
                .map_err(sqlite::db("listing billed customers"))?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(sqlite::db("listing billed customers"))
        })
        .await
    }

    async fn insert_bill(&self, bill: &StoredBill) -> Result<bool, Error> {
        let b = bill.clone();
        self.run(true, move |conn| {
            let tx = conn.transaction().map_err(sqlite::db("storing a bill"))?;
            let n = tx
                .execute(
                    "INSERT INTO billing_bills (id, customer, cycle_start, cycle_end, status, tariff_id, tariff_revision, currency, subtotal, taxes, total, import_wh, export_wh, issued_ms, due_date, adjustments)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16) ON CONFLICT (customer, cycle_start) DO NOTHING",
                    params![
                        b.id, b.customer, date_text(b.cycle_start), date_text(b.cycle_end), b.status.as_str(),
                        b.tariff_id, b.tariff_revision, b.currency, b.subtotal.to_string(), b.taxes.to_string(),
                        b.total.to_string(), b.import_wh, b.export_wh, b.issued_ms, date_text(b.due_date),
                        b.adjustments.to_string()
                    ],
                )
                .map_err(sqlite::db("storing a bill"))?;
            if n == 0 {
                return Ok(false);
            }
            sq_write_lines(&tx, &b)?;
            tx.commit().map_err(sqlite::db("storing a bill"))?;
            Ok(true)
        })
        .await
    }

    async fn rerate_bill(
        &self,
        bill: &StoredBill,
        difference: Decimal,
        at_ms: i64,
    ) -> Result<bool, Error> {
        let b = bill.clone();
        self.run(true, move |conn| {
            let tx = conn.transaction().map_err(sqlite::db("re-rating a bill"))?;
            let n = tx
                .execute(
                    "INSERT INTO billing_rerates (bill_id, tariff_revision, difference, at_ms) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                    params![b.id, b.tariff_revision, difference.to_string(), at_ms],
                )
                .map_err(sqlite::db("recording a re-rating"))?;
            if n == 0 {
                return Ok(false);
            }
            tx.execute(
                "UPDATE billing_bills SET tariff_revision = ?2, subtotal = ?3, taxes = ?4, total = ?5, import_wh = ?6, export_wh = ?7, adjustments = ?8 WHERE id = ?1",
                params![
                    b.id, b.tariff_revision, b.subtotal.to_string(), b.taxes.to_string(), b.total.to_string(),
                    b.import_wh, b.export_wh, b.adjustments.to_string()
                ],
            )
            .map_err(sqlite::db("re-rating a bill"))?;
            sq_write_lines(&tx, &b)?;
            tx.commit().map_err(sqlite::db("re-rating a bill"))?;
            Ok(true)
        })
        .await
    }

    async fn bill(&self, id: &str) -> Result<Option<StoredBill>, Error> {
        let id = id.to_owned();
        self.run(false, move |conn| {
            let row = conn
                .query_row(
                    &format!("SELECT {SQ_BILL_COLUMNS} FROM billing_bills WHERE id = ?1"),
                    [&id],
                    sq_bill_row,
                )
                .optional()
                .map_err(sqlite::db("reading a bill"))?;
            match row {
                Some(row) => {
                    let lines = sq_lines(conn, &row.id)?;
                    row.into_bill(lines).map(Some)
                }
                None => Ok(None),
            }
        })
        .await
    }

    async fn bills(&self, customer: &str) -> Result<Vec<StoredBill>, Error> {
        let customer = customer.to_owned();
        self.run(false, move |conn| {
            let rows = {
                let mut st = conn
                    .prepare(&format!("SELECT {SQ_BILL_COLUMNS} FROM billing_bills WHERE customer = ?1 ORDER BY cycle_start DESC"))
                    .map_err(sqlite::db("listing bills"))?;
                st.query_map([&customer], sq_bill_row)
                    .map_err(sqlite::db("listing bills"))?
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(sqlite::db("listing bills"))?
            };
            rows.into_iter()
                .map(|row| {
                    let lines = sq_lines(conn, &row.id)?;
                    row.into_bill(lines)
                })
                .collect()
        })
        .await
    }

    async fn set_bill_status(&self, id: &str, status: BillState) -> Result<(), Error> {
        let id = id.to_owned();
        self.run(true, move |conn| {
            let n = conn
                .execute(
                    "UPDATE billing_bills SET status = ?2 WHERE id = ?1",
                    params![id, status.as_str()],
                )
                .map_err(sqlite::db("setting a bill's status"))?;
            if n == 0 {
                return Err(Error::new(crate::ErrorKind::NotFound(format!("bill {id}"))));
            }
            Ok(())
        })
        .await
    }

    async fn record_payment(&self, p: &NewPayment) -> Result<StoredPayment, Error> {
        let p = p.clone();
        self.run(true, move |conn| {
            conn.execute(
                "INSERT INTO billing_payments (customer, amount, method, reference, received_ms, recorded_by) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![p.customer, p.amount.to_string(), p.method, p.reference, p.received_ms, p.recorded_by],
            )
            .map_err(sqlite::db("recording a payment"))?;
            Ok(StoredPayment {
                id: conn.last_insert_rowid(),
                payment: p,
            })
        })
        .await
    }

    async fn payments(&self, customer: &str) -> Result<Vec<StoredPayment>, Error> {
        let customer = customer.to_owned();
        let rows = self
            .run(false, move |conn| {
                let mut st = conn
                    .prepare("SELECT id, customer, amount, method, reference, received_ms, recorded_by FROM billing_payments WHERE customer = ?1 ORDER BY received_ms DESC, id DESC")
                    .map_err(sqlite::db("listing payments"))?;
                st.query_map([&customer], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, i64>(5)?,
                        r.get::<_, String>(6)?,
                    ))
                })
                .map_err(sqlite::db("listing payments"))?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(sqlite::db("listing payments"))
            })
            .await?;
        rows.into_iter()
            .map(
                |(id, customer, amount, method, reference, received_ms, recorded_by)| {
                    Ok(StoredPayment {
                        id,
                        payment: NewPayment {
                            customer,
                            amount: parse_dec(&amount, "payment amount")?,
                            method,
                            reference,
                            received_ms,
                            recorded_by,
                        },
                    })
                },
            )
            .collect()
    }

    async fn prepaid(&self, customer: &str) -> Result<Option<PrepaidState>, Error> {
        let customer = customer.to_owned();
        let row = self
            .run(false, move |conn| {
                conn.query_row(
                    "SELECT customer, balance, debited_through_ms, zero_credit_since_ms, warned_ms, disconnected_ms FROM billing_prepaid WHERE customer = ?1",
                    [&customer],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, Option<i64>>(3)?,
                            r.get::<_, Option<i64>>(4)?,
                            r.get::<_, Option<i64>>(5)?,
                        ))
                    },
                )
                .optional()
                .map_err(sqlite::db("reading prepaid credit"))
            })
            .await?;
        row.map(|(customer, balance, through, zero, warned, disc)| {
            Ok(PrepaidState {
                customer,
                balance: parse_dec(&balance, "prepaid balance")?,
                debited_through_ms: through,
                zero_credit_since_ms: zero,
                warned_ms: warned,
                disconnected_ms: disc,
            })
        })
        .transpose()
    }

    async fn put_prepaid(&self, s: &PrepaidState) -> Result<(), Error> {
        let s = s.clone();
        self.run(true, move |conn| {
            conn.execute(
                "INSERT INTO billing_prepaid (customer, balance, debited_through_ms, zero_credit_since_ms, warned_ms, disconnected_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (customer) DO UPDATE SET balance = excluded.balance, debited_through_ms = excluded.debited_through_ms,
                 zero_credit_since_ms = excluded.zero_credit_since_ms, warned_ms = excluded.warned_ms, disconnected_ms = excluded.disconnected_ms",
                params![s.customer, s.balance.to_string(), s.debited_through_ms, s.zero_credit_since_ms, s.warned_ms, s.disconnected_ms],
            )
            .map_err(sqlite::db("storing prepaid credit"))?;
            Ok(())
        })
        .await
    }

    async fn set_pref(&self, p: &NotificationPref) -> Result<(), Error> {
        let p = p.clone();
        self.run(true, move |conn| {
            conn.execute(
                "INSERT INTO notify_prefs (username, customer, rule, channel, target, enabled) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (username, rule, channel) DO UPDATE SET customer = excluded.customer, target = excluded.target, enabled = excluded.enabled",
                params![p.username, p.customer, p.rule, p.channel, p.target, p.enabled],
            )
            .map_err(sqlite::db("storing a notification preference"))?;
            Ok(())
        })
        .await
    }

    async fn prefs_for_rule(&self, rule: &str) -> Result<Vec<NotificationPref>, Error> {
        let rule = rule.to_owned();
        self.run(false, move |conn| {
            let mut st = conn
                .prepare("SELECT username, customer, rule, channel, target, enabled FROM notify_prefs WHERE rule = ?1 AND enabled ORDER BY username, channel")
                .map_err(sqlite::db("reading notification preferences"))?;
            st.query_map([&rule], sq_pref)
                .map_err(sqlite::db("reading notification preferences"))?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(sqlite::db("reading notification preferences"))
        })
        .await
    }

    async fn prefs(&self, username: &str) -> Result<Vec<NotificationPref>, Error> {
        let username = username.to_owned();
        self.run(false, move |conn| {
            let mut st = conn
                .prepare("SELECT username, customer, rule, channel, target, enabled FROM notify_prefs WHERE username = ?1 ORDER BY rule, channel")
                .map_err(sqlite::db("reading notification preferences"))?;
            st.query_map([&username], sq_pref)
                .map_err(sqlite::db("reading notification preferences"))?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(sqlite::db("reading notification preferences"))
        })
        .await
    }

    async fn add_message(&self, m: &NewMessage, status: MessageStatus) -> Result<i64, Error> {
        let m = m.clone();
        self.run(true, move |conn| {
            let done = (status != MessageStatus::Pending).then_some(m.created_ms);
            conn.execute(
                "INSERT INTO notify_messages (username, customer, rule, channel, target, incident, subject, body, created_ms, status, attempts, done_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 0, ?11)",
                params![m.username, m.customer, m.rule, m.channel, m.target, m.incident, m.subject, m.body, m.created_ms, status.as_str(), done],
            )
            .map_err(sqlite::db("queueing a notification"))?;
            Ok(conn.last_insert_rowid())
        })
        .await
    }

    async fn messages_with_status(
        &self,
        status: MessageStatus,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, Error> {
        let rows = self
            .run(false, move |conn| {
                let mut st = conn
                    .prepare(&format!("SELECT {MESSAGE_COLUMNS} FROM notify_messages WHERE status = ?1 ORDER BY id LIMIT ?2"))
                    .map_err(sqlite::db("reading notifications"))?;
                st.query_map(params![status.as_str(), limit], sq_message)
                    .map_err(sqlite::db("reading notifications"))?
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(sqlite::db("reading notifications"))
            })
            .await?;
        rows.into_iter().map(MessageRow::into_message).collect()
    }

    async fn user_messages(
        &self,
        username: &str,
        channel: &str,
        since_ms: i64,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, Error> {
        let (username, channel) = (username.to_owned(), channel.to_owned());
        let rows = self
            .run(false, move |conn| {
                let mut st = conn
                    .prepare(&format!("SELECT {MESSAGE_COLUMNS} FROM notify_messages WHERE username = ?1 AND channel = ?2 AND created_ms >= ?3 ORDER BY created_ms DESC, id DESC LIMIT ?4"))
                    .map_err(sqlite::db("reading a user's notifications"))?;
                st.query_map(params![username, channel, since_ms, limit], sq_message)
                    .map_err(sqlite::db("reading a user's notifications"))?
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(sqlite::db("reading a user's notifications"))
            })
            .await?;
        rows.into_iter().map(MessageRow::into_message).collect()
    }

    async fn unsuppressed_messages(
        &self,
        username: &str,
        channel: &str,
        since_ms: i64,
    ) -> Result<Vec<StoredMessage>, Error> {
        let (username, channel) = (username.to_owned(), channel.to_owned());
        let suppressed = MessageStatus::Suppressed.as_str();
        let rows = self
            .run(false, move |conn| {
                let mut st = conn
                    .prepare(&format!("SELECT {MESSAGE_COLUMNS} FROM notify_messages WHERE username = ?1 AND channel = ?2 AND created_ms >= ?3 AND status <> ?4 ORDER BY created_ms DESC, id DESC"))
                    .map_err(sqlite::db("reading a user's counted notifications"))?;
                st.query_map(params![username, channel, since_ms, suppressed], sq_message)
                    .map_err(sqlite::db("reading a user's counted notifications"))?
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(sqlite::db("reading a user's counted notifications"))
            })
            .await?;
        rows.into_iter().map(MessageRow::into_message).collect()
    }

    async fn finish_message(
        &self,
        id: i64,
        status: MessageStatus,
        error: Option<&str>,
        at_ms: i64,
    ) -> Result<(), Error> {
        let error = error.map(str::to_owned);
        self.run(true, move |conn| {
            conn.execute(
                "UPDATE notify_messages SET status = ?2, attempts = attempts + 1, error = ?3, done_ms = CASE WHEN ?2 = 'pending' THEN NULL ELSE ?4 END WHERE id = ?1",
                params![id, status.as_str(), error, at_ms],
            )
            .map_err(sqlite::db("updating a notification"))?;
            Ok(())
        })
        .await
    }
}

fn sq_pref(r: &rusqlite::Row<'_>) -> rusqlite::Result<NotificationPref> {
    Ok(NotificationPref {
        username: r.get(0)?,
        customer: r.get(1)?,
        rule: r.get(2)?,
        channel: r.get(3)?,
        target: r.get(4)?,
        enabled: r.get(5)?,
    })
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

const PG_BILL_COLUMNS: &str = "id, customer, cycle_start, cycle_end, status, tariff_id, tariff_revision, currency, subtotal::TEXT, taxes::TEXT, total::TEXT, import_wh, export_wh, issued_ms, due_date, adjustments::TEXT";

fn pg_bill_row(r: &tokio_postgres::Row) -> BillRow {
    BillRow {
        id: r.get(0),
        customer: r.get(1),
        cycle_start: r.get(2),
        cycle_end: r.get(3),
        status: r.get(4),
        tariff_id: r.get(5),
        tariff_revision: r.get(6),
        currency: r.get(7),
        subtotal: r.get(8),
        taxes: r.get(9),
        total: r.get(10),
        import_wh: r.get(11),
        export_wh: r.get(12),
        issued_ms: r.get(13),
        due_date: r.get(14),
        adjustments: r.get(15),
    }
}

fn pg_tariff(r: &tokio_postgres::Row) -> StoredTariff {
    StoredTariff {
        id: r.get(0),
        revision: r.get(1),
        name: r.get(2),
        currency: r.get(3),
        toml: r.get(4),
        created_ms: r.get(5),
        created_by: r.get(6),
    }
}

fn pg_pref(r: &tokio_postgres::Row) -> NotificationPref {
    NotificationPref {
        username: r.get(0),
        customer: r.get(1),
        rule: r.get(2),
        channel: r.get(3),
        target: r.get(4),
        enabled: r.get(5),
    }
}

fn pg_message(r: &tokio_postgres::Row) -> Result<StoredMessage, Error> {
    MessageRow {
        id: r.get(0),
        username: r.get(1),
        customer: r.get(2),
        rule: r.get(3),
        channel: r.get(4),
        target: r.get(5),
        incident: r.get(6),
        subject: r.get(7),
        body: r.get(8),
        created_ms: r.get(9),
        status: r.get(10),
        attempts: r.get(11),
        done_ms: r.get(12),
        error: r.get(13),
    }
    .into_message()
}

impl PgStore {
    async fn billing_client(&self) -> Result<deadpool_postgres::Object, Error> {
        self.pool
            .get()
            .await
            .map_err(|e| Error::new(crate::ErrorKind::Unavailable(format!("postgres pool: {e}"))))
    }
}

async fn pg_lines(c: &tokio_postgres::Client, bill_id: &str) -> Result<Vec<StoredBillLine>, Error> {
    let rows = c
        .query(
            "SELECT kind, description, quantity::TEXT, unit, unit_price::TEXT, amount::TEXT FROM billing_bill_lines WHERE bill_id = $1 ORDER BY n",
            &[&bill_id],
        )
        .await
        .map_err(postgres::db("reading bill lines"))?;
    rows.iter()
        .map(|r| {
            line_from(
                r.get(0),
                r.get(1),
                r.get::<_, &str>(2),
                r.get(3),
                r.get::<_, &str>(4),
                r.get::<_, &str>(5),
            )
        })
        .collect()
}

async fn pg_write_lines(
    tx: &deadpool_postgres::Transaction<'_>,
    bill: &StoredBill,
) -> Result<(), Error> {
    tx.execute(
        "DELETE FROM billing_bill_lines WHERE bill_id = $1",
        &[&bill.id],
    )
    .await
    .map_err(postgres::db("replacing bill lines"))?;
    for (n, l) in bill.lines.iter().enumerate() {
        tx.execute(
            "INSERT INTO billing_bill_lines (bill_id, n, kind, description, quantity, unit, unit_price, amount)
             VALUES ($1, $2, $3, $4, CAST($5::TEXT AS NUMERIC), $6, CAST($7::TEXT AS NUMERIC), CAST($8::TEXT AS NUMERIC))",
            &[
                &bill.id,
                &(n as i64),
                &l.kind,
                &l.description,
                &l.quantity.to_string(),
                &l.unit,
                &l.unit_price.to_string(),
                &l.amount.to_string(),
            ],
        )
        .await
        .map_err(postgres::db("writing a bill line"))?;
    }
    Ok(())
}

#[async_trait]
impl BillingStore for PgStore {
    async fn put_tariff(
        &self,
        id: &str,
        name: &str,
        currency: &str,
        toml: &str,
        by: &str,
        at_ms: i64,
    ) -> Result<i64, Error> {
        let mut c = self.billing_client().await?;
        let tx = c
            .transaction()
            .await
            .map_err(postgres::db("storing a tariff"))?;
        // Serialises revision numbering of one tariff id across server instances.
        tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&id])
            .await
            .map_err(postgres::db("locking a tariff"))?;
        let rev: i64 = tx
            .query_one(
                "SELECT COALESCE(MAX(revision), 0) + 1 FROM billing_tariffs WHERE id = $1",
                &[&id],
            )
            .await
            .map_err(postgres::db("numbering a tariff revision"))?
            .get(0);
        tx.execute(
            "INSERT INTO billing_tariffs (id, revision, name, currency, toml, created_ms, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[&id, &rev, &name, &currency, &toml, &at_ms, &by],
        )
        .await
        .map_err(postgres::db("storing a tariff"))?;
        tx.commit()
            .await
            .map_err(postgres::db("storing a tariff"))?;
        Ok(rev)
    }

    async fn tariff(&self, id: &str) -> Result<Option<StoredTariff>, Error> {
        let c = self.billing_client().await?;
        let row = c
            .query_opt(
                "SELECT id, revision, name, currency, toml, created_ms, created_by FROM billing_tariffs WHERE id = $1 ORDER BY revision DESC LIMIT 1",
                &[&id],
            )
            .await
            .map_err(postgres::db("reading a tariff"))?;
        Ok(row.as_ref().map(pg_tariff))
    }

    async fn tariff_revisions(&self, id: &str) -> Result<Vec<StoredTariff>, Error> {
        let c = self.billing_client().await?;
        let rows = c
            .query(
                "SELECT id, revision, name, currency, toml, created_ms, created_by FROM billing_tariffs WHERE id = $1 ORDER BY revision",
                &[&id],
            )
            .await
            .map_err(postgres::db("reading tariff revisions"))?;
        Ok(rows.iter().map(pg_tariff).collect())
    }

    async fn tariffs(&self) -> Result<Vec<StoredTariff>, Error> {
        let c = self.billing_client().await?;
        let rows = c
            .query(
                "SELECT DISTINCT ON (id) id, revision, name, currency, toml, created_ms, created_by FROM billing_tariffs ORDER BY id, revision DESC",
                &[],
            )
            .await
            .map_err(postgres::db("listing tariffs"))?;
        Ok(rows.iter().map(pg_tariff).collect())
    }

    async fn assign_tariff(&self, a: &TariffAssignment) -> Result<(), Error> {
        let c = self.billing_client().await?;
        c.execute(
            "INSERT INTO billing_assignments (customer, valid_from, tariff_id, payment_mode, protected) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (customer, valid_from) DO UPDATE SET tariff_id = excluded.tariff_id, payment_mode = excluded.payment_mode, protected = excluded.protected",
            &[&a.customer, &date_text(a.valid_from), &a.tariff_id, &a.payment_mode.as_str(), &a.protected],
        )
        .await
        .map_err(postgres::db("assigning a tariff"))?;
        Ok(())
    }

    async fn assignments(&self, customer: &str) -> Result<Vec<TariffAssignment>, Error> {
        let c = self.billing_client().await?;
        let rows = c
            .query(
                "SELECT customer, valid_from, tariff_id, payment_mode, protected FROM billing_assignments WHERE customer = $1 ORDER BY valid_from",
                &[&customer],
            )
            .await
            .map_err(postgres::db("reading tariff assignments"))?;
        rows.iter()
            .map(|r| {
                Ok(TariffAssignment {
                    customer: r.get(0),
                    valid_from: parse_date(r.get(1), "assignment start")?,
                    tariff_id: r.get(2),
                    payment_mode: PaymentMode::parse(r.get(3))?,
                    protected: r.get(4),
                })
            })
            .collect()
    }

    async fn billed_customers(&self) -> Result<Vec<String>, Error> {
        let c = self.billing_client().await?;
        let rows = c
            .query(
                "SELECT DISTINCT customer FROM billing_assignments ORDER BY customer",
                &[],
            )
            .await
            .map_err(postgres::db("listing billed customers"))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn insert_bill(&self, b: &StoredBill) -> Result<bool, Error> {
        let mut c = self.billing_client().await?;
        let tx = c
            .transaction()
            .await
            .map_err(postgres::db("storing a bill"))?;
        let n = tx
            .execute(
                "INSERT INTO billing_bills (id, customer, cycle_start, cycle_end, status, tariff_id, tariff_revision, currency, subtotal, taxes, total, import_wh, export_wh, issued_ms, due_date, adjustments)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, CAST($9::TEXT AS NUMERIC), CAST($10::TEXT AS NUMERIC), CAST($11::TEXT AS NUMERIC), $12, $13, $14, $15, CAST($16::TEXT AS NUMERIC))
                 ON CONFLICT (customer, cycle_start) DO NOTHING",
                &[
                    &b.id, &b.customer, &date_text(b.cycle_start), &date_text(b.cycle_end), &b.status.as_str(),
                    &b.tariff_id, &b.tariff_revision, &b.currency, &b.subtotal.to_string(), &b.taxes.to_string(),
                    &b.total.to_string(), &b.import_wh, &b.export_wh, &b.issued_ms, &date_text(b.due_date),
                    &b.adjustments.to_string(),
                ],
            )
            .await
            .map_err(postgres::db("storing a bill"))?;
        if n == 0 {
            return Ok(false);
        }
        pg_write_lines(&tx, b).await?;
        tx.commit().await.map_err(postgres::db("storing a bill"))?;
        Ok(true)
    }

    async fn rerate_bill(
        &self,
        b: &StoredBill,
        difference: Decimal,
        at_ms: i64,
    ) -> Result<bool, Error> {
        let mut c = self.billing_client().await?;
        let tx = c
            .transaction()
            .await
            .map_err(postgres::db("re-rating a bill"))?;
        let n = tx
            .execute(
                "INSERT INTO billing_rerates (bill_id, tariff_revision, difference, at_ms) VALUES ($1, $2, CAST($3::TEXT AS NUMERIC), $4) ON CONFLICT DO NOTHING",
                &[&b.id, &b.tariff_revision, &difference.to_string(), &at_ms],
            )
            .await
            .map_err(postgres::db("recording a re-rating"))?;
        if n == 0 {
            return Ok(false);
        }
        tx.execute(
            "UPDATE billing_bills SET tariff_revision = $2, subtotal = CAST($3::TEXT AS NUMERIC), taxes = CAST($4::TEXT AS NUMERIC), total = CAST($5::TEXT AS NUMERIC), import_wh = $6, export_wh = $7, adjustments = CAST($8::TEXT AS NUMERIC) WHERE id = $1",
            &[
                &b.id, &b.tariff_revision, &b.subtotal.to_string(), &b.taxes.to_string(), &b.total.to_string(),
                &b.import_wh, &b.export_wh, &b.adjustments.to_string(),
            ],
        )
        .await
        .map_err(postgres::db("re-rating a bill"))?;
        pg_write_lines(&tx, b).await?;
        tx.commit()
            .await
            .map_err(postgres::db("re-rating a bill"))?;
        Ok(true)
    }

    async fn bill(&self, id: &str) -> Result<Option<StoredBill>, Error> {
        let c = self.billing_client().await?;
        let row = c
            .query_opt(
                &format!("SELECT {PG_BILL_COLUMNS} FROM billing_bills WHERE id = $1"),
                &[&id],
            )
            .await
            .map_err(postgres::db("reading a bill"))?;
        match row {
            Some(r) => {
                let row = pg_bill_row(&r);
                let lines = pg_lines(&c, &row.id).await?;
                row.into_bill(lines).map(Some)
            }
            None => Ok(None),
        }
    }

    async fn bills(&self, customer: &str) -> Result<Vec<StoredBill>, Error> {
        let c = self.billing_client().await?;
        let rows = c
            .query(
                &format!("SELECT {PG_BILL_COLUMNS} FROM billing_bills WHERE customer = $1 ORDER BY cycle_start DESC"),
                &[&customer],
            )
            .await
            .map_err(postgres::db("listing bills"))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let row = pg_bill_row(r);
            let lines = pg_lines(&c, &row.id).await?;
            out.push(row.into_bill(lines)?);
        }
        Ok(out)
    }

    async fn set_bill_status(&self, id: &str, status: BillState) -> Result<(), Error> {
        let c = self.billing_client().await?;
        let n = c
            .execute(
                "UPDATE billing_bills SET status = $2 WHERE id = $1",
                &[&id, &status.as_str()],
            )
            .await
            .map_err(postgres::db("setting a bill's status"))?;
        if n == 0 {
            return Err(Error::new(crate::ErrorKind::NotFound(format!("bill {id}"))));
        }
        Ok(())
    }

    async fn record_payment(&self, p: &NewPayment) -> Result<StoredPayment, Error> {
        let c = self.billing_client().await?;
        let id: i64 = c
            .query_one(
                "INSERT INTO billing_payments (customer, amount, method, reference, received_ms, recorded_by) VALUES ($1, CAST($2::TEXT AS NUMERIC), $3, $4, $5, $6) RETURNING id",
                &[&p.customer, &p.amount.to_string(), &p.method, &p.reference, &p.received_ms, &p.recorded_by],
            )
            .await
            .map_err(postgres::db("recording a payment"))?
            .get(0);
        Ok(StoredPayment {
            id,
            payment: p.clone(),
        })
    }

    async fn payments(&self, customer: &str) -> Result<Vec<StoredPayment>, Error> {
        let c = self.billing_client().await?;
        let rows = c
            .query(
                "SELECT id, customer, amount::TEXT, method, reference, received_ms, recorded_by FROM billing_payments WHERE customer = $1 ORDER BY received_ms DESC, id DESC",
                &[&customer],
            )
            .await
            .map_err(postgres::db("listing payments"))?;
        rows.iter()
            .map(|r| {
                Ok(StoredPayment {
                    id: r.get(0),
                    payment: NewPayment {
                        customer: r.get(1),
                        amount: parse_dec(r.get(2), "payment amount")?,
                        method: r.get(3),
                        reference: r.get(4),
                        received_ms: r.get(5),
                        recorded_by: r.get(6),
                    },
                })
            })
            .collect()
    }

    async fn prepaid(&self, customer: &str) -> Result<Option<PrepaidState>, Error> {
        let c = self.billing_client().await?;
        let row = c
            .query_opt(
                "SELECT customer, balance::TEXT, debited_through_ms, zero_credit_since_ms, warned_ms, disconnected_ms FROM billing_prepaid WHERE customer = $1",
                &[&customer],
            )
            .await
            .map_err(postgres::db("reading prepaid credit"))?;
        row.map(|r| {
            Ok(PrepaidState {
                customer: r.get(0),
                balance: parse_dec(r.get(1), "prepaid balance")?,
                debited_through_ms: r.get(2),
                zero_credit_since_ms: r.get(3),
                warned_ms: r.get(4),
                disconnected_ms: r.get(5),
            })
        })
        .transpose()
    }

    async fn put_prepaid(&self, s: &PrepaidState) -> Result<(), Error> {
        let c = self.billing_client().await?;
        c.execute(
            "INSERT INTO billing_prepaid (customer, balance, debited_through_ms, zero_credit_since_ms, warned_ms, disconnected_ms) VALUES ($1, CAST($2::TEXT AS NUMERIC), $3, $4, $5, $6)
             ON CONFLICT (customer) DO UPDATE SET balance = excluded.balance, debited_through_ms = excluded.debited_through_ms,
             zero_credit_since_ms = excluded.zero_credit_since_ms, warned_ms = excluded.warned_ms, disconnected_ms = excluded.disconnected_ms",
            &[&s.customer, &s.balance.to_string(), &s.debited_through_ms, &s.zero_credit_since_ms, &s.warned_ms, &s.disconnected_ms],
        )
        .await
        .map_err(postgres::db("storing prepaid credit"))?;
        Ok(())
    }

    async fn set_pref(&self, p: &NotificationPref) -> Result<(), Error> {
        let c = self.billing_client().await?;
        c.execute(
            "INSERT INTO notify_prefs (username, customer, rule, channel, target, enabled) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (username, rule, channel) DO UPDATE SET customer = excluded.customer, target = excluded.target, enabled = excluded.enabled",
            &[&p.username, &p.customer, &p.rule, &p.channel, &p.target, &p.enabled],
        )
        .await
        .map_err(postgres::db("storing a notification preference"))?;
        Ok(())
    }

    async fn prefs_for_rule(&self, rule: &str) -> Result<Vec<NotificationPref>, Error> {
        let c = self.billing_client().await?;
        let rows = c
            .query(
                "SELECT username, customer, rule, channel, target, enabled FROM notify_prefs WHERE rule = $1 AND enabled ORDER BY username, channel",
                &[&rule],
            )
            .await
            .map_err(postgres::db("reading notification preferences"))?;
        Ok(rows.iter().map(pg_pref).collect())
    }

    async fn prefs(&self, username: &str) -> Result<Vec<NotificationPref>, Error> {
        let c = self.billing_client().await?;
        let rows = c
            .query(
                "SELECT username, customer, rule, channel, target, enabled FROM notify_prefs WHERE username = $1 ORDER BY rule, channel",
                &[&username],
            )
            .await
            .map_err(postgres::db("reading notification preferences"))?;
        Ok(rows.iter().map(pg_pref).collect())
    }

    async fn add_message(&self, m: &NewMessage, status: MessageStatus) -> Result<i64, Error> {
        let c = self.billing_client().await?;
        let done = (status != MessageStatus::Pending).then_some(m.created_ms);
        let id: i64 = c
            .query_one(
                "INSERT INTO notify_messages (username, customer, rule, channel, target, incident, subject, body, created_ms, status, attempts, done_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0, $11) RETURNING id",
                &[&m.username, &m.customer, &m.rule, &m.channel, &m.target, &m.incident, &m.subject, &m.body, &m.created_ms, &status.as_str(), &done],
            )
            .await
            .map_err(postgres::db("queueing a notification"))?
            .get(0);
        Ok(id)
    }

    async fn messages_with_status(
        &self,
        status: MessageStatus,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, Error> {
        let c = self.billing_client().await?;
        let rows = c
            .query(
                &format!("SELECT {MESSAGE_COLUMNS} FROM notify_messages WHERE status = $1 ORDER BY id LIMIT $2"),
                &[&status.as_str(), &i64::from(limit)],
            )
            .await
            .map_err(postgres::db("reading notifications"))?;
        rows.iter().map(pg_message).collect()
    }

    async fn user_messages(
        &self,
        username: &str,
        channel: &str,
        since_ms: i64,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, Error> {
        let c = self.billing_client().await?;
        let rows = c
            .query(
                &format!("SELECT {MESSAGE_COLUMNS} FROM notify_messages WHERE username = $1 AND channel = $2 AND created_ms >= $3 ORDER BY created_ms DESC, id DESC LIMIT $4"),
                &[&username, &channel, &since_ms, &i64::from(limit)],
            )
            .await
            .map_err(postgres::db("reading a user's notifications"))?;
        rows.iter().map(pg_message).collect()
    }

    async fn unsuppressed_messages(
        &self,
        username: &str,
        channel: &str,
        since_ms: i64,
    ) -> Result<Vec<StoredMessage>, Error> {
        let c = self.billing_client().await?;
        let rows = c
            .query(
                &format!("SELECT {MESSAGE_COLUMNS} FROM notify_messages WHERE username = $1 AND channel = $2 AND created_ms >= $3 AND status <> $4 ORDER BY created_ms DESC, id DESC"),
                &[&username, &channel, &since_ms, &MessageStatus::Suppressed.as_str()],
            )
            .await
            .map_err(postgres::db("reading a user's counted notifications"))?;
        rows.iter().map(pg_message).collect()
    }

    async fn finish_message(
        &self,
        id: i64,
        status: MessageStatus,
        error: Option<&str>,
        at_ms: i64,
    ) -> Result<(), Error> {
        let c = self.billing_client().await?;
        let done = (status != MessageStatus::Pending).then_some(at_ms);
        c.execute(
            "UPDATE notify_messages SET status = $2, attempts = attempts + 1, error = $3, done_ms = $4 WHERE id = $1",
            &[&id, &status.as_str(), &error, &done],
        )
        .await
        .map_err(postgres::db("updating a notification"))?;
        Ok(())
    }
}
