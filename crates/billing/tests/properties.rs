//! Property tests: bill arithmetic, split invariance (and where it fails), DST day lengths,
//! idempotent re-rating, projection convergence, prepaid debits adding up to the bill.

use billing::{
    Bill, BillStatus, Cycle, LineKind, Tariff, bill_to_date, day_length_s, prepaid, project,
    rate_cycle, rerate, start_of_day,
};
use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, Timelike};
use proptest::prelude::*;
use rust_decimal::Decimal;

use crate::{d, dec, input, readings, tariff};

/// A deterministic pseudo-random value per (seed, i): SplitMix64 (Steele, Lea, Flood 2014).
fn mix(seed: u64, i: u64) -> u64 {
    let mut z = seed.wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Energy that depends only on the local weekday and time of day (a weekly-periodic household).
fn weekly(seed: u64) -> impl Fn(NaiveDateTime) -> (u64, u64) {
    move |l| {
        let slot = u64::from(l.weekday().num_days_from_monday()) * 96
            + u64::from(l.hour() * 4 + l.minute() / 15);
        let v = mix(seed, slot);
        (v % 900, (v >> 20) % 400)
    }
}

/// Energy that varies with every interval.
fn noisy(seed: u64) -> impl Fn(NaiveDateTime) -> (u64, u64) {
    move |l| {
        let v = mix(seed, l.and_utc().timestamp() as u64);
        (v % 1200, (v >> 24) % 600)
    }
}

const EXAMPLES: [&str; 6] = [
    "gb_single_rate.toml",
    "mx_tarifa1_telescopic.toml",
    "in_slab_all_units.toml",
    "us_commercial_tou_demand.toml",
    "mx_net_metering.toml",
    "de_feed_in_gross.toml",
];

fn check_arithmetic(bill: &Bill) -> Result<(), TestCaseError> {
    let sum: Decimal = bill.lines.iter().map(|l| l.amount).sum();
    prop_assert_eq!(bill.total, sum);
    prop_assert_eq!(
        bill.subtotal,
        bill.lines
            .iter()
            .filter(|l| !l.kind.is_tax())
            .map(|l| l.amount)
            .sum::<Decimal>()
    );
    prop_assert_eq!(
        bill.taxes,
        bill.lines
            .iter()
            .filter(|l| l.kind.is_tax())
            .map(|l| l.amount)
            .sum::<Decimal>()
    );
    prop_assert_eq!(
        bill.amount_due,
        bill.previous_balance - bill.payments + bill.total
    );
    for l in &bill.lines {
        prop_assert_eq!(l.exact_amount, l.quantity * l.unit_price);
        prop_assert_eq!(l.amount, bill.currency.round(l.exact_amount));
    }
    // The CSV carries the same lines: its amount column sums to the total.
    let csv = bill.to_csv();
    let mut csv_sum = Decimal::ZERO;
    for row in csv.split("\r\n").skip(1).filter(|r| !r.is_empty()) {
        let kind = row.split(',').next().unwrap_or_default();
        if kind != "info" && kind != "summary" {
            csv_sum += row
                .rsplit(',')
                .next()
                .unwrap_or_default()
                .parse::<Decimal>()
                .unwrap();
        }
    }
    prop_assert_eq!(csv_sum, bill.total);
    Ok(())
}

fn cycle_from(offset_days: i64, len_days: i64) -> Cycle {
    let start = d(2026, 1, 1) + Duration::days(offset_days);
    Cycle::new(start, start + Duration::days(len_days))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn a_bills_total_equals_the_sum_of_its_lines(
        example in 0..EXAMPLES.len(),
        offset in 0i64..330,
        len in 1i64..35,
        seed in any::<u64>(),
        credit in 0u64..50_000,
        balance in -5000i64..5000,
        paid in 0i64..5000,
    ) {
        let t = tariff(EXAMPLES[example]);
        let cycle = cycle_from(offset, len);
        let mut inp = input(cycle, readings(&t, cycle.start, cycle.end, 15, noisy(seed)));
        inp.credit_carried_in_wh = credit;
        inp.previous_balance = Decimal::new(balance, 2);
        inp.payments = Decimal::new(paid, 2);
        let bill = rate_cycle(&t, &inp).unwrap();
        check_arithmetic(&bill)?;
    }

    /// Flat and time-of-use energy prices are linear in energy: rating the parts of a cycle and
    /// adding gives the whole cycle's exact energy charge. After per-line rounding the sums may
    /// differ by at most half a minor unit per line rounded.
    #[test]
    fn splitting_a_period_does_not_change_linear_energy_charges(
        example in prop::sample::select(vec!["gb_single_rate.toml", "us_commercial_tou_demand.toml", "de_feed_in_gross.toml"]),
        offset in 0i64..300,
        len in 2i64..40,
        cut_at in 1i64..39,
        seed in any::<u64>(),
    ) {
        let t = tariff(example);
        let whole = cycle_from(offset, len);
        let cut = whole.start + Duration::days(cut_at.min(len - 1));
        let energy = |c: Cycle| -> (Decimal, Decimal, usize) {
            let bill = rate_cycle(&t, &input(c, readings(&t, c.start, c.end, 15, noisy(seed)))).unwrap();
            let lines: Vec<_> = bill.lines.iter().filter(|l| matches!(l.kind, LineKind::Energy | LineKind::Export)).collect();
            (lines.iter().map(|l| l.exact_amount).sum(), lines.iter().map(|l| l.amount).sum(), lines.len())
        };
        let (exact, rounded, _) = energy(whole);
        let (exact_a, rounded_a, n_a) = energy(Cycle::new(whole.start, cut));
        let (exact_b, rounded_b, n_b) = energy(Cycle::new(cut, whole.end));
        prop_assert_eq!(exact, exact_a + exact_b);
        let half_unit = dec("0.005");
        prop_assert!((rounded - rounded_a - rounded_b).abs() <= half_unit * Decimal::from(n_a + n_b + 1));
    }

    #[test]
    fn dst_days_have_23_or_25_hours_and_rating_counts_every_hour(
        zone in prop::sample::select(vec!["Europe/Berlin", "Europe/London", "America/New_York", "Australia/Sydney"]),
        year in 2000i32..2037,
    ) {
        let tz: chrono_tz::Tz = zone.parse().unwrap();
        let mut short = Vec::new();
        let mut long = Vec::new();
        let mut day = NaiveDate::from_ymd_opt(year, 1, 1).unwrap();
        while day.year() == year {
            match day_length_s(tz, day) {
                86_400 => {}
                82_800 => short.push(day),
                90_000 => long.push(day),
                other => prop_assert!(false, "{day} in {zone} has {other} s"),
            }
            day = day.succ_opt().unwrap();
        }
        prop_assert_eq!(short.len(), 1, "23-hour days in {} {}: {:?}", zone, year, short);
        prop_assert_eq!(long.len(), 1, "25-hour days in {} {}: {:?}", zone, year, long);
        // Rating each DST day with 1 kWh per hour bills 23 and 25 kWh.
        let t = Tariff::from_toml(&format!(
            "id = \"dst\"\nname = \"dst\"\ncurrency = \"EUR\"\nrounding = \"half-even\"\ntime_zone = \"{zone}\"\n\
             [[versions]]\nvalid_from = 2000-01-01\nenergy = {{ type = \"flat\", price_per_kwh = 1 }}\n"
        )).unwrap();
        for (date, kwh) in [(short[0], "23"), (long[0], "25")] {
            let c = Cycle::new(date, date.succ_opt().unwrap());
            let bill = rate_cycle(&t, &input(c, readings(&t, c.start, c.end, 60, |_| (1000, 0)))).unwrap();
            prop_assert_eq!(bill.lines[0].quantity, dec(kwh));
            prop_assert_eq!(bill.energy.measured_s, day_length_s(tz, date));
        }
    }

    #[test]
    fn rerating_is_idempotent(new_price in 1u32..9999, seed in any::<u64>()) {
        let original = tariff("gb_single_rate.toml");
        let text = std::fs::read_to_string(format!("{}/testdata/gb_single_rate.toml", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let corrected_text = text.replace("price_per_kwh = 0.2573", &format!("price_per_kwh = {}", Decimal::new(i64::from(new_price), 4)));
        let corrected = Tariff::from_toml(&corrected_text).unwrap();
        let cycle = Cycle::new(d(2026, 3, 15), d(2026, 4, 15));
        let inp = input(cycle, readings(&original, cycle.start, cycle.end, 60, noisy(seed)));
        let issued = rate_cycle(&original, &inp).unwrap();

        let first = rerate(&corrected, &issued, &inp).unwrap();
        prop_assert_eq!(first.difference_total, first.corrected.total - issued.total);
        prop_assert_eq!(first.adjustment_line().amount, first.difference_total);
        // The March segment's lines were not corrected and do not show up as differences.
        prop_assert!(first.differences.iter().all(|l| l.description.contains("2026-04-01")));
        let second = rerate(&corrected, &first.corrected, &inp).unwrap();
        prop_assert_eq!(&second.corrected, &first.corrected);
        prop_assert!(second.differences.is_empty());
        prop_assert_eq!(second.difference_total, Decimal::ZERO);
        // Re-rating with the tariff the bill was issued under changes nothing.
        let same = rerate(&original, &issued, &inp).unwrap();
        prop_assert!(same.differences.is_empty());
    }

    /// With weekly-periodic consumption the same-weekday profile is exact once a full week has
    /// been seen; for any consumption the projection equals the final bill at the cycle's end.
    #[test]
    fn projected_bill_converges_to_the_actual_bill(
        example in 0..EXAMPLES.len(),
        offset in 0i64..300,
        len in 8i64..35,
        seed in any::<u64>(),
    ) {
        let t = tariff(EXAMPLES[example]);
        let tz = t.time_zone();
        let cycle = cycle_from(offset, len);
        let all = readings(&t, cycle.start, cycle.end, 15, weekly(seed));
        let actual = rate_cycle(&t, &input(cycle, all.clone())).unwrap();
        let known_until = |as_of| input(cycle, all.iter().copied().filter(|r| r.end <= as_of).collect());

        let after_a_week = start_of_day(tz, cycle.start + Duration::days(7));
        let p = project(&t, &known_until(after_a_week), after_a_week).unwrap();
        // A 23-hour spring-forward day in the first week leaves one hour of that weekday unseen;
        // the estimate for it then falls back to the mean over all days and is not exact.
        let first_week_complete = (0..7).all(|i| day_length_s(tz, cycle.start + Duration::days(i)) >= 86_400);
        if first_week_complete {
            prop_assert_eq!(p.projected.total, actual.total);
        }

        let end = start_of_day(tz, cycle.end);
        let p = project(&t, &known_until(end), end).unwrap();
        prop_assert_eq!(p.estimated_intervals, 0);
        prop_assert_eq!(&p.projected.lines, &actual.lines);
        prop_assert_eq!(p.projected.status, BillStatus::Projected { as_of: end });
        prop_assert_eq!(&p.to_date.lines, &actual.lines);
    }

    /// Prepaid debits are differences of cumulative bills to date, so any debit schedule adds up
    /// to the bill to date at the last debit, tiers and daily charges included.
    #[test]
    fn prepaid_debits_add_up_to_the_bill(
        example in 0..EXAMPLES.len(),
        cuts in prop::collection::vec(1i64..(30 * 96), 1..6),
        seed in any::<u64>(),
    ) {
        let t = tariff(EXAMPLES[example]);
        let cycle = Cycle::new(d(2026, 6, 1), d(2026, 7, 1));
        let all = readings(&t, cycle.start, cycle.end, 15, noisy(seed));
        let start = start_of_day(t.time_zone(), cycle.start);
        let mut instants: Vec<_> = cuts.iter().map(|q| start + Duration::minutes(15 * q)).collect();
        instants.sort();
        instants.dedup();
        let mut account = prepaid::PrepaidAccount { balance: dec("500"), zero_credit_since: None, protected: false };
        let mut charged_until = start;
        let mut debited = Decimal::ZERO;
        for now in &instants {
            let inp = input(cycle, all.iter().copied().filter(|r| r.end <= *now).collect());
            let debit = prepaid::debit(&t, &inp, &account, charged_until, *now).unwrap();
            debited += debit.amount;
            account.balance = debit.balance_after;
            account.zero_credit_since = debit.zero_credit_since;
            charged_until = *now;
        }
        let last = *instants.last().unwrap();
        let to_date = bill_to_date(&t, &input(cycle, all.iter().copied().filter(|r| r.end <= last).collect()), last).unwrap();
        prop_assert_eq!(debited, to_date.total);
        prop_assert_eq!(account.balance, dec("500") - to_date.total);
    }
}

/// Tier blocks are not linear: the same 150 kWh in one cycle or in two halves of it costs
/// differently, because each half gets half-size blocks and the consumption is uneven. The
/// engine therefore never splits a cycle except at a tariff change, where each segment's blocks
/// are prorated by calendar days (see `mx_tarifa1_partial_month_prorates_blocks_by_calendar_days`).
#[test]
fn tiered_energy_is_not_split_invariant_so_the_engine_rates_the_whole_cycle() {
    let t = tariff("mx_tarifa1_telescopic.toml");
    let whole = Cycle::new(d(2026, 4, 1), d(2026, 5, 1));
    let first = Cycle::new(d(2026, 4, 1), d(2026, 4, 16));
    let second = Cycle::new(d(2026, 4, 16), d(2026, 5, 1));
    // All 150 kWh in the first half.
    let energy = |l: NaiveDateTime| if l.day() <= 15 { (10_000, 0) } else { (0, 0) };
    let rate = |c: Cycle| {
        rate_cycle(&t, &input(c, readings(&t, c.start, c.end, 24 * 60, energy)))
            .unwrap()
            .total_of(LineKind::Energy)
    };
    // Whole April: 75 × 1.00 + 65 × 1.20 + 10 × 3.50 = 75.00 + 78.00 + 35.00 = 188.00
    assert_eq!(rate(whole), dec("188.00"));
    // First half alone, blocks × 15/30: 37.5 × 1.00 + 32.5 × 1.20 + 80 × 3.50 = 37.50 + 39.00 + 280.00
    assert_eq!(rate(first), dec("356.50"));
    assert_eq!(rate(second), dec("0.00"));
    assert_ne!(rate(first) + rate(second), rate(whole));
}

/// Random window lists: the loader either rejects them with an error naming `windows`, or
/// accepts a schedule in which every minute of every day type belongs to exactly one window.
fn window_list() -> impl Strategy<Value = Vec<(u32, u32, u8, bool)>> {
    // (from minute, to minute, day set, peak?) on a 30-minute grid, to keep tilings reachable.
    prop::collection::vec((0u32..48, 0u32..=48, 0u8..4, any::<bool>()), 1..6)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn tou_windows_are_accepted_only_when_they_tile_every_day(windows in window_list()) {
        let days = ["\"all\"", "\"weekdays\"", "\"weekend\", \"holiday\"", "\"mon\""];
        let hhmm = |half_hours: u32| format!("{:02}:{:02}", half_hours / 2, (half_hours % 2) * 30);
        let list: Vec<String> = windows
            .iter()
            .map(|(from, to, set, peak)| {
                format!(
                    "{{ days = [{}], from = \"{}\", to = \"{}\", period = \"{}\" }}",
                    days[*set as usize],
                    hhmm(*from),
                    hhmm(*to),
                    if *peak { "peak" } else { "off" }
                )
            })
            .collect();
        let text = format!(
            "id = \"p\"\nname = \"p\"\ncurrency = \"EUR\"\nrounding = \"half-up\"\ntime_zone = \"UTC\"\n\
             [[versions]]\nvalid_from = 2026-01-01\n[versions.energy]\ntype = \"time-of-use\"\n\
             periods = [{{ name = \"peak\", price_per_kwh = 2 }}, {{ name = \"off\", price_per_kwh = 1 }}]\n\
             windows = [{}]\n",
            list.join(", ")
        );
        // Coverage per day type (mon..sun, holiday) in half hours, computed independently.
        let mut cover = [[0u8; 48]; 8];
        for (from, to, set, _) in &windows {
            let members: &[usize] = match set {
                0 => &[0, 1, 2, 3, 4, 5, 6, 7],
                1 => &[0, 1, 2, 3, 4],
                2 => &[5, 6, 7],
                _ => &[0],
            };
            let halves: Vec<u32> = if from < to { (*from..*to).collect() } else { (*from..48).chain(0..*to).collect() };
            for m in members {
                for h in &halves {
                    cover[*m][*h as usize] += 1;
                }
            }
        }
        let valid_shape = windows.iter().all(|(from, to, _, _)| from != to && *from < 48);
        let tiles = cover.iter().all(|day| day.iter().all(|c| *c == 1));
        match Tariff::from_toml(&text) {
            Ok(_) => prop_assert!(valid_shape && tiles, "accepted a schedule that does not tile:\n{}", text),
            Err(e) => {
                prop_assert!(!(valid_shape && tiles), "rejected a tiling schedule: {}\n{}", e, text);
                prop_assert!(e.location().contains("windows"), "{}", e);
            }
        }
    }

    /// Whatever readings arrive (unsorted, overlapping, outside the cycle, crossing windows),
    /// rating returns a bill or an error; it never panics.
    #[test]
    fn rating_arbitrary_readings_never_panics(
        example in 0..EXAMPLES.len(),
        raw in prop::collection::vec((-2000i64..50_000, 1i64..200, 0u64..5000, 0u64..5000), 0..40),
    ) {
        let t = tariff(EXAMPLES[example]);
        let cycle = Cycle::new(d(2026, 3, 20), d(2026, 4, 10));
        let origin = start_of_day(t.time_zone(), cycle.start);
        let rs = raw
            .iter()
            .map(|(start_min, len_min, import_wh, export_wh)| billing::IntervalReading {
                start: origin + Duration::minutes(*start_min),
                end: origin + Duration::minutes(start_min + len_min),
                import_wh: *import_wh,
                export_wh: *export_wh,
            })
            .collect();
        let inp = input(cycle, rs);
        if let Ok(bill) = rate_cycle(&t, &inp) {
            check_arithmetic(&bill)?;
        }
        let _ = project(&t, &inp, origin + Duration::days(10));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Windows cut at random half hours around the clock (the last one crossing midnight unless
    /// a cut falls on 00:00) always tile the day; rating a day of half-hour readings puts each
    /// half hour in the period of its window.
    #[test]
    fn tiling_schedules_are_accepted_and_classify_every_half_hour(
        cuts in prop::collection::btree_set(0u32..48, 2..7),
        peaks in prop::collection::vec(any::<bool>(), 7),
    ) {
        let cuts: Vec<u32> = cuts.into_iter().collect();
        let hhmm = |half_hours: u32| format!("{:02}:{:02}", half_hours / 2, (half_hours % 2) * 30);
        let mut windows = Vec::new();
        let mut peak_half_hours = 0u32;
        for (i, from) in cuts.iter().enumerate() {
            let to = cuts[(i + 1) % cuts.len()];
            let name = if peaks[i] { "peak" } else { "off" };
            let end = if to == 0 { "24:00".to_owned() } else { hhmm(to) };
            windows.push(format!("{{ days = [\"all\"], from = \"{}\", to = \"{end}\", period = \"{name}\" }}", hhmm(*from)));
            if peaks[i] {
                peak_half_hours += (to + 48 - from) % 48;
            }
        }
        let text = format!(
            "id = \"p\"\nname = \"p\"\ncurrency = \"EUR\"\nrounding = \"half-up\"\ntime_zone = \"Europe/Paris\"\n\
             [[versions]]\nvalid_from = 2026-01-01\n[versions.energy]\ntype = \"time-of-use\"\n\
             periods = [{{ name = \"peak\", price_per_kwh = 2 }}, {{ name = \"off\", price_per_kwh = 1 }}]\n\
             windows = [{}]\n",
            windows.join(", ")
        );
        let t = Tariff::from_toml(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        let c = Cycle::new(d(2026, 5, 4), d(2026, 5, 5));
        let bill = rate_cycle(&t, &input(c, readings(&t, c.start, c.end, 30, |_| (1000, 0)))).unwrap();
        prop_assert_eq!(bill.lines[0].quantity, Decimal::from(peak_half_hours));
        prop_assert_eq!(bill.lines[1].quantity, Decimal::from(48 - peak_half_hours));
    }
}
