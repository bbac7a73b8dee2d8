//! Rating rules on small inline tariffs: time of use on DST days, the three netting scopes and
//! what happens to excess export, bills to date.

use billing::{BillStatus, Cycle, LineKind, Tariff, bill_to_date, rate_cycle, start_of_day};
use chrono::{Duration, Timelike};

use crate::{d, dec, input, readings, tariff};

#[test]
fn time_of_use_on_dst_days_counts_wall_clock_hours() {
    let t = Tariff::from_toml(
        r#"
        id = "de-tou"
        name = "night and day"
        currency = "EUR"
        rounding = "half-even"
        time_zone = "Europe/Berlin"
        [[versions]]
        valid_from = 2026-01-01
        [versions.energy]
        type = "time-of-use"
        periods = [{ name = "day", price_per_kwh = 0.40 }, { name = "night", price_per_kwh = 0.20 }]
        windows = [
          { days = ["all"], from = "06:00", to = "22:00", period = "day" },
          { days = ["all"], from = "22:00", to = "06:00", period = "night" },
        ]
        "#,
    )
    .unwrap();
    // 1 kWh per real hour. 29 March (23 h): 02:00-03:00 does not exist, night = 5 + 2 = 7 h.
    // 25 October (25 h): 02:00-03:00 happens twice, night = 7 + 2 = 9 h. Day is 16 h on both.
    for (date, night) in [
        (d(2026, 3, 29), "7"),
        (d(2026, 10, 25), "9"),
        (d(2026, 6, 1), "8"),
    ] {
        let c = Cycle::new(date, date.succ_opt().unwrap());
        let bill = rate_cycle(
            &t,
            &input(c, readings(&t, c.start, c.end, 60, |_| (1000, 0))),
        )
        .unwrap();
        let q: Vec<_> = bill
            .lines
            .iter()
            .map(|l| l.quantity.normalize().to_string())
            .collect();
        assert_eq!(q, vec!["16".to_owned(), night.to_owned()], "{date}");
    }
}

fn net_tariff(netting: &str, excess: &str) -> Tariff {
    Tariff::from_toml(&format!(
        "id = \"net\"\nname = \"net\"\ncurrency = \"EUR\"\nrounding = \"half-even\"\ntime_zone = \"UTC\"\n\
         [[versions]]\nvalid_from = 2026-01-01\nenergy = {{ type = \"flat\", price_per_kwh = 0.30 }}\n\
         export = {{ metering = \"net\", netting = \"{netting}\", {excess} }}\n"
    ))
    .unwrap()
}

#[test]
fn netting_per_interval_day_and_cycle() {
    // Two days of hourly readings (UTC).
    // Day 1: 00-12 h import 1 kWh/h; 12-24 h export 1.5 kWh/h     → day net -6 kWh
    // Day 2: all day import 1 kWh/h; 00-12 h also export 0.5 kWh/h → day net +18 kWh
    //   interval: billable 12 + (12 × 0.5 + 12 × 1) = 30 kWh, excess 18 kWh
    //   day:      billable 18 kWh, excess 6 kWh
    //   cycle:    36 - 24 = 12 kWh billable, no excess
    let energy = |l: chrono::NaiveDateTime| {
        let first_day = l.date() == d(2026, 1, 5);
        match (first_day, l.hour() < 12) {
            (true, true) => (1000, 0),
            (true, false) => (0, 1500),
            (false, true) => (1000, 500),
            (false, false) => (1000, 0),
        }
    };
    let cycle = Cycle::new(d(2026, 1, 5), d(2026, 1, 7));
    let cases = [
        // netting, excess rule, billable kWh, energy amount, export line amount, carried out Wh
        (
            "interval",
            "excess = \"pay\", excess_price_per_kwh = 0.10",
            "30",
            "9.00",
            Some("-1.80"),
            0,
        ),
        (
            "day",
            "excess = \"pay\", excess_price_per_kwh = 0.10",
            "18",
            "5.40",
            Some("-0.60"),
            0,
        ),
        (
            "cycle",
            "excess = \"pay\", excess_price_per_kwh = 0.10",
            "12",
            "3.60",
            None,
            0,
        ),
        (
            "interval",
            "excess = \"forfeit\"",
            "30",
            "9.00",
            Some("0.00"),
            0,
        ),
        (
            "day",
            "excess = \"carry-over\"",
            "18",
            "5.40",
            Some("0.00"),
            6000,
        ),
    ];
    for (netting, excess, kwh, amount, export, carried) in cases {
        let t = net_tariff(netting, excess);
        let bill = rate_cycle(
            &t,
            &input(cycle, readings(&t, cycle.start, cycle.end, 60, energy)),
        )
        .unwrap();
        let energy_line = &bill.lines[0];
        assert_eq!(
            (energy_line.quantity, energy_line.amount),
            (dec(kwh), dec(amount)),
            "{netting} {excess}"
        );
        let export_line = bill
            .lines
            .iter()
            .find(|l| l.kind == LineKind::Export)
            .map(|l| l.amount.to_string());
        assert_eq!(export_line.as_deref(), export, "{netting} {excess}");
        assert_eq!(
            bill.energy.credit_carried_out_wh, carried,
            "{netting} {excess}"
        );
        assert_eq!(
            (bill.energy.import_wh, bill.energy.export_wh),
            (36_000, 24_000)
        );
    }
}

#[test]
fn bill_to_date_charges_the_days_begun_and_the_energy_known() {
    // GB single rate, January cycle, as of 10 January 12:00 (GMT = UTC in winter):
    //   energy 9.5 days × 24 h × 0.5 kWh = 114 kWh × 0.2450 = 27.93
    //   standing charge for the 10 days begun: 10 × 0.6010 = 6.01
    //   VAT 5 % of 33.94 = 1.697 → 1.70; total 35.64
    let t = tariff("gb_single_rate.toml");
    let cycle = Cycle::new(d(2026, 1, 1), d(2026, 2, 1));
    let as_of = start_of_day(t.time_zone(), d(2026, 1, 10)) + Duration::hours(12);
    let known: Vec<_> = readings(&t, cycle.start, cycle.end, 60, |_| (500, 0))
        .into_iter()
        .filter(|r| r.end <= as_of)
        .collect();
    let bill = bill_to_date(&t, &input(cycle, known), as_of).unwrap();
    assert_eq!(bill.status, BillStatus::ToDate { as_of });
    let amounts: Vec<_> = bill.lines.iter().map(|l| l.amount.to_string()).collect();
    assert_eq!(amounts, ["27.93", "6.01", "1.70"]);
    assert_eq!(bill.total, dec("35.64"));
}

#[test]
fn energy_price_at_an_instant_follows_windows_holidays_and_versions() {
    use chrono::TimeZone;
    let us = tariff("us_commercial_tou_demand.toml");
    let la = |m, day, h| {
        chrono_tz::America::Los_Angeles
            .with_ymd_and_hms(2026, m, day, h, 0, 0)
            .unwrap()
            .with_timezone(&chrono::Utc)
    };
    assert_eq!(
        us.energy_price_at(la(7, 7, 17)),
        Some((Some("peak"), dec("0.45")))
    );
    assert_eq!(
        us.energy_price_at(la(7, 7, 21)),
        Some((Some("off-peak"), dec("0.25")))
    );
    // Friday 3 July is a holiday: off-peak all day.
    assert_eq!(
        us.energy_price_at(la(7, 3, 17)),
        Some((Some("off-peak"), dec("0.25")))
    );

    let gb = tariff("gb_single_rate.toml");
    let at = |date| start_of_day(gb.time_zone(), date) + Duration::hours(12);
    assert_eq!(
        gb.energy_price_at(at(d(2026, 3, 31))),
        Some((None, dec("0.2450")))
    );
    assert_eq!(
        gb.energy_price_at(at(d(2026, 4, 1))),
        Some((None, dec("0.2573")))
    );
    assert_eq!(gb.energy_price_at(at(d(2025, 12, 31))), None);
    assert_eq!(
        tariff("mx_tarifa1_telescopic.toml").energy_price_at(at(d(2026, 4, 1))),
        None
    );
}
