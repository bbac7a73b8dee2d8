//! Bad tariffs and bad readings are rejected with an error that says what and where.

use billing::{Cycle, ErrorKind, IntervalReading, Tariff, rate_cycle};
use chrono::{Duration, TimeZone, Utc};

use crate::{d, input, readings, tariff};

const TOU_HEAD: &str = r#"
id = "t"
name = "t"
currency = "EUR"
rounding = "half-up"
time_zone = "Europe/Berlin"
[[versions]]
valid_from = 2026-01-01
[versions.energy]
type = "time-of-use"
periods = [{ name = "peak", price_per_kwh = 0.4 }, { name = "off", price_per_kwh = 0.2 }]
"#;

fn rejected(text: &str) -> billing::Error {
    match Tariff::from_toml(text) {
        Ok(_) => panic!("accepted a bad tariff:\n{text}"),
        Err(e) => e,
    }
}

fn assert_mentions(err: &billing::Error, parts: &[&str]) {
    let text = err.to_string();
    for p in parts {
        assert!(text.contains(p), "error {text:?} does not mention {p:?}");
    }
}

#[test]
fn overlapping_tou_windows_are_rejected_naming_both() {
    let err = rejected(&format!(
        "{TOU_HEAD}windows = [
          {{ days = [\"all\"], from = \"07:00\", to = \"22:00\", period = \"peak\" }},
          {{ days = [\"all\"], from = \"21:00\", to = \"07:00\", period = \"off\" }},
        ]"
    ));
    assert_eq!(err.kind(), ErrorKind::InvalidTariff);
    assert_mentions(
        &err,
        &[
            "versions[0].energy.windows[1]",
            "overlaps windows[0]",
            "on mon",
            "21:00",
        ],
    );
}

#[test]
fn gaps_in_tou_windows_are_rejected_naming_the_day_and_hours() {
    let err = rejected(&format!(
        "{TOU_HEAD}windows = [
          {{ days = [\"weekdays\", \"weekend\"], from = \"07:00\", to = \"22:00\", period = \"peak\" }},
          {{ days = [\"weekdays\", \"weekend\"], from = \"22:00\", to = \"07:00\", period = \"off\" }},
        ]"
    ));
    // Holidays are their own day type and nothing covers them.
    assert_mentions(
        &err,
        &[
            "versions[0].energy.windows",
            "holiday 00:00-24:00 is not covered",
        ],
    );
    let err = rejected(&format!(
        "{TOU_HEAD}windows = [
          {{ days = [\"all\"], from = \"07:00\", to = \"22:00\", period = \"peak\" }},
          {{ days = [\"all\"], from = \"22:30\", to = \"07:00\", period = \"off\" }},
        ]"
    ));
    assert_mentions(&err, &["mon 22:00-22:30 is not covered"]);
}

#[test]
fn a_window_crossing_midnight_is_accepted_and_covers_both_ends_of_the_day() {
    let t = Tariff::from_toml(&format!(
        "{TOU_HEAD}windows = [
          {{ days = [\"all\"], from = \"07:00\", to = \"22:00\", period = \"peak\" }},
          {{ days = [\"all\"], from = \"22:00\", to = \"07:00\", period = \"off\" }},
        ]"
    ))
    .unwrap();
    let cycle = Cycle::new(d(2026, 1, 5), d(2026, 1, 6));
    let bill = rate_cycle(
        &t,
        &input(
            cycle,
            readings(&t, cycle.start, cycle.end, 60, |_| (1000, 0)),
        ),
    )
    .unwrap();
    // 15 peak hours (07-22) and 9 off-peak hours (22-24 and 00-07).
    assert_eq!(bill.lines[0].quantity, crate::dec("15"));
    assert_eq!(bill.lines[1].quantity, crate::dec("9"));
}

#[test]
fn negative_prices_are_rejected_unless_allowed() {
    let flat = |extra: &str, price: &str| {
        format!(
            "id = \"t\"\nname = \"t\"\ncurrency = \"EUR\"\nrounding = \"half-up\"\ntime_zone = \"UTC\"\n\
             [[versions]]\nvalid_from = 2026-01-01\n{extra}energy = {{ type = \"flat\", price_per_kwh = {price} }}\n"
        )
    };
    let err = rejected(&flat("", "-0.05"));
    assert_mentions(
        &err,
        &[
            "versions[0].energy.price_per_kwh",
            "negative price -0.05",
            "allow_negative_prices",
        ],
    );
    assert!(Tariff::from_toml(&flat("allow_negative_prices = true\n", "-0.05")).is_ok());
}

#[test]
fn tiers_out_of_order_are_rejected() {
    let err = rejected(
        r#"
        id = "t"
        name = "t"
        currency = "MXN"
        rounding = "half-up"
        time_zone = "America/Mexico_City"
        [[versions]]
        valid_from = 2026-01-01
        [versions.energy]
        type = "tiered"
        pricing = "telescopic"
        proration = "none"
        blocks = [{ up_to_kwh = 150, price_per_kwh = 1 }, { up_to_kwh = 75, price_per_kwh = 2 }, { price_per_kwh = 3 }]
        "#,
    );
    assert_mentions(
        &err,
        &[
            "versions[0].energy.blocks[1].up_to_kwh",
            "75 kWh is not above the previous block's 150 kWh",
        ],
    );
}

#[test]
fn unknown_time_zones_fields_and_values_are_rejected() {
    let base = r#"
        id = "t"
        name = "t"
        currency = "EUR"
        rounding = "half-up"
        time_zone = "Europe/Atlantis"
        [[versions]]
        valid_from = 2026-01-01
        energy = { type = "flat", price_per_kwh = 0.3 }
    "#;
    let err = rejected(base);
    assert_mentions(
        &err,
        &["time_zone", "unknown time zone \"Europe/Atlantis\""],
    );

    let err = rejected(
        &base
            .replace("Europe/Atlantis", "UTC")
            .replace("name = \"t\"", "name = \"t\"\ncolour = \"red\""),
    );
    assert_eq!(err.kind(), ErrorKind::Syntax);
    assert_mentions(&err, &["unknown field `colour`", "line 4"]);

    let err = rejected(
        &base
            .replace("Europe/Atlantis", "UTC")
            .replace("half-up", "bankers"),
    );
    assert_mentions(&err, &["unknown variant `bankers`", "half-even"]);

    let err = rejected(
        &base
            .replace("Europe/Atlantis", "UTC")
            .replace("0.3", "\"abc\""),
    );
    assert_mentions(&err, &["\"abc\" is not a decimal number"]);
}

#[test]
fn versions_must_be_in_order_and_dates_plain() {
    let text = |second: &str| {
        format!(
            "id = \"t\"\nname = \"t\"\ncurrency = \"EUR\"\nrounding = \"half-up\"\ntime_zone = \"UTC\"\n\
             [[versions]]\nvalid_from = 2026-03-01\nenergy = {{ type = \"flat\", price_per_kwh = 0.3 }}\n\
             [[versions]]\nvalid_from = {second}\nenergy = {{ type = \"flat\", price_per_kwh = 0.3 }}\n"
        )
    };
    assert_mentions(
        &rejected(&text("2026-02-01")),
        &[
            "versions[1].valid_from",
            "not after the previous version's 2026-03-01",
        ],
    );
    assert_mentions(
        &rejected(&text("2026-04-01T00:00:00Z")),
        &["versions[1].valid_from", "must be a local date"],
    );
}

#[test]
fn a_cycle_before_the_first_version_has_no_tariff() {
    let t = tariff("gb_single_rate.toml");
    let cycle = Cycle::new(d(2025, 12, 1), d(2026, 1, 1));
    let err = rate_cycle(&t, &input(cycle, vec![])).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoTariffInForce);
    assert_mentions(&err, &["2025-12-01", "first starts on 2026-01-01"]);
}

#[test]
fn bad_readings_are_rejected_with_their_position() {
    let t = tariff("us_commercial_tou_demand.toml");
    let cycle = Cycle::new(d(2026, 7, 1), d(2026, 8, 1));
    let mut rs = readings(&t, cycle.start, cycle.end, 15, |_| (100, 0));
    rs.swap(10, 11);
    let err = rate_cycle(&t, &input(cycle, rs)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidReadings);
    assert_mentions(&err, &["readings[11]", "overlaps the previous reading"]);

    // Hourly readings are fine for energy but cannot give a 15-minute demand.
    let hourly = readings(&t, cycle.start, cycle.end, 60, |_| (100, 0));
    let err = rate_cycle(&t, &input(cycle, hourly)).unwrap_err();
    assert_mentions(&err, &["readings[0]", "15 minutes or shorter"]);

    // A reading across the 16:00 peak edge would need an invented split.
    let start = Utc.with_ymd_and_hms(2026, 7, 1, 22, 45, 0).unwrap(); // 15:45 PDT
    let across = vec![IntervalReading {
        start,
        end: start + Duration::minutes(30),
        import_wh: 10,
        export_wh: 0,
    }];
    let err = rate_cycle(&t, &input(cycle, across)).unwrap_err();
    assert_mentions(
        &err,
        &["crosses a time-of-use boundary at 2026-07-01 16:00"],
    );

    // Outside the cycle.
    let late = Utc.with_ymd_and_hms(2026, 8, 1, 12, 0, 0).unwrap();
    let outside = vec![IntervalReading {
        start: late,
        end: late + Duration::minutes(15),
        import_wh: 10,
        export_wh: 0,
    }];
    let err = rate_cycle(&t, &input(cycle, outside)).unwrap_err();
    assert_mentions(
        &err,
        &[
            "readings[0] (2026-08-01T12:00:00Z)",
            "outside the period rated",
        ],
    );
}

#[test]
fn a_reading_across_a_tariff_change_is_rejected() {
    let t = tariff("gb_single_rate.toml");
    let cycle = Cycle::new(d(2026, 3, 15), d(2026, 4, 15));
    // 23:00 UTC on 31 March is 00:00 BST on 1 April, the change; this reading runs 22:30-23:30.
    let start = Utc.with_ymd_and_hms(2026, 3, 31, 22, 30, 0).unwrap();
    let rs = vec![IntervalReading {
        start,
        end: start + Duration::hours(1),
        import_wh: 10,
        export_wh: 0,
    }];
    let err = rate_cycle(&t, &input(cycle, rs)).unwrap_err();
    assert_mentions(
        &err,
        &[
            "readings[0]",
            "crosses the tariff change at the start of 2026-04-01",
        ],
    );
}

#[test]
fn syntax_errors_are_one_line_with_line_and_column() {
    let text = "id = \"t\"\nname = \"t\"\ncurrency = \"EUR\"\nrounding = \"half-up\"\ntime_zone = \"UTC\"\n\
                [[versions]]\nvalid_from = 2026-01-01\n\
                energy = { type = \"flat\", price_per_kwh = 0.3, colour = 1 }\n";
    let err = rejected(text);
    assert_eq!(err.kind(), ErrorKind::Syntax);
    assert_eq!(err.location(), "tariff file line 8, column 10");
    assert!(err.message().contains("unknown field `colour`"), "{err}");
    assert!(!err.to_string().contains('\n'), "{err}");

    let err = rejected(
        &text
            .replace("type = \"flat\", ", "")
            .replace(", colour = 1", ""),
    );
    assert!(err.to_string().contains("missing field `type`"), "{err}");
    let err = rejected(
        &text
            .replace("\"flat\"", "\"spot\"")
            .replace(", colour = 1", ""),
    );
    assert!(
        err.to_string()
            .contains("unknown variant `spot`, expected one of `flat`, `tiered`, `time-of-use`"),
        "{err}"
    );
}
