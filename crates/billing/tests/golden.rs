//! Golden bills for the example tariffs in `testdata/`, with the expected amounts computed by
//! hand in the comments (rounding: per line, to the minor unit, with the tariff's rule).

use billing::{Cycle, LineKind, Unit, rate_cycle};
use chrono::{Datelike, Timelike, Weekday};

use crate::{d, dec, input, readings, tariff};

fn amounts(bill: &billing::Bill) -> Vec<(LineKind, String)> {
    bill.lines
        .iter()
        .map(|l| (l.kind, l.amount.to_string()))
        .collect()
}

#[test]
fn gb_single_rate_cycle_spanning_a_price_change_and_a_dst_day() {
    // Cycle 15 March - 15 April 2026, 500 Wh every hour, Europe/London.
    // Segment 1 (old prices), 15-31 March = 17 days; 29 March has 23 hours (BST starts), so
    //   407 hours × 0.5 kWh = 203.5 kWh × 0.2450 = 49.8575 → 49.86
    //   standing charge 17 days × 0.6010 = 10.217 → 10.22
    //   VAT 5 % of (49.86 + 10.22 = 60.08) = 3.004 → 3.00
    // Segment 2 (new prices), 1-14 April = 14 days = 336 hours = 168 kWh × 0.2573 = 43.2264 → 43.23
    //   standing charge 14 × 0.5380 = 7.532 → 7.53
    //   VAT 5 % of (43.23 + 7.53 = 50.76) = 2.538 → 2.54
    // Total 60.08 + 3.00 + 50.76 + 2.54 = 116.38
    let t = tariff("gb_single_rate.toml");
    let cycle = Cycle::new(d(2026, 3, 15), d(2026, 4, 15));
    let bill = rate_cycle(
        &t,
        &input(
            cycle,
            readings(&t, cycle.start, cycle.end, 60, |_| (500, 0)),
        ),
    )
    .unwrap();
    assert_eq!(
        amounts(&bill),
        vec![
            (LineKind::Energy, "49.86".into()),
            (LineKind::Fixed, "10.22".into()),
            (LineKind::Tax, "3.00".into()),
            (LineKind::Energy, "43.23".into()),
            (LineKind::Fixed, "7.53".into()),
            (LineKind::Tax, "2.54".into()),
        ]
    );
    assert_eq!(bill.lines[0].quantity, dec("203.5"));
    assert!(
        bill.lines[0].description.contains("tariff from 2026-01-01"),
        "{}",
        bill.lines[0].description
    );
    assert!(
        bill.lines[3].description.contains("tariff from 2026-04-01"),
        "{}",
        bill.lines[3].description
    );
    assert_eq!(bill.subtotal, dec("110.84"));
    assert_eq!(bill.taxes, dec("5.54"));
    assert_eq!(bill.total, dec("116.38"));
    assert_eq!(bill.energy.import_wh, 371_500);
}

#[test]
fn mx_tarifa1_telescopic_full_month() {
    // February 2026 (a whole month, blocks unscaled), 10 kWh a day × 28 = 280 kWh:
    //   básico 75 kWh × 1.00 = 75.00; intermedio 65 kWh × 1.20 = 78.00;
    //   excedente 140 kWh × 3.50 = 490.00; energy 643.00; IVA 16 % = 102.88; total 745.88
    let t = tariff("mx_tarifa1_telescopic.toml");
    let cycle = Cycle::new(d(2026, 2, 1), d(2026, 3, 1));
    let bill = rate_cycle(
        &t,
        &input(
            cycle,
            readings(&t, cycle.start, cycle.end, 24 * 60, |_| (10_000, 0)),
        ),
    )
    .unwrap();
    let energy: Vec<_> = bill
        .lines
        .iter()
        .filter(|l| l.kind == LineKind::Energy)
        .map(|l| (l.quantity, l.amount))
        .collect();
    assert_eq!(
        energy,
        vec![
            (dec("75"), dec("75.00")),
            (dec("65"), dec("78.00")),
            (dec("140"), dec("490.00"))
        ]
    );
    assert_eq!(bill.taxes, dec("102.88"));
    assert_eq!(bill.total, dec("745.88"));
}

#[test]
fn mx_tarifa1_partial_month_prorates_blocks_by_calendar_days() {
    // Cycle 10-31 March 2026 = 22 of 31 days: factor 22/31.
    //   block limits 75 × 22/31 = 53.2258… → 53.226 kWh; 140 × 22/31 = 99.3548… → 99.355 kWh
    // 5 kWh a day for 20 days, nothing the last 2 days = 100 kWh:
    //   53.226 × 1.00 = 53.226 → 53.23
    //   (99.355 - 53.226) = 46.129 × 1.20 = 55.3548 → 55.35
    //   (100 - 99.355) = 0.645 × 3.50 = 2.2575 → 2.26
    //   energy 110.84; IVA 16 % = 17.7344 → 17.73; total 128.57
    let t = tariff("mx_tarifa1_telescopic.toml");
    let cycle = Cycle::new(d(2026, 3, 10), d(2026, 4, 1));
    let rs = readings(&t, cycle.start, cycle.end, 24 * 60, |l| {
        if l.day() < 30 { (5_000, 0) } else { (0, 0) }
    });
    let bill = rate_cycle(&t, &input(cycle, rs)).unwrap();
    let energy: Vec<_> = bill
        .lines
        .iter()
        .filter(|l| l.kind == LineKind::Energy)
        .map(|l| (l.quantity, l.amount))
        .collect();
    assert_eq!(
        energy,
        vec![
            (dec("53.226"), dec("53.23")),
            (dec("46.129"), dec("55.35")),
            (dec("0.645"), dec("2.26"))
        ]
    );
    assert!(
        bill.lines[0].description.contains("0-53.226 kWh"),
        "{}",
        bill.lines[0].description
    );
    assert_eq!(bill.total, dec("128.57"));
}

#[test]
fn in_slab_all_units_prices_everything_at_the_slab_reached() {
    // January 2026, 5 kWh a day for 30 days = 150 kWh, in slab 2 (100-200 kWh):
    //   150 × 4.50 = 675.00; fixed 50 × 1 month = 50.00; duty 5 % of 675.00 = 33.75; total 758.75
    let t = tariff("in_slab_all_units.toml");
    let cycle = Cycle::new(d(2026, 1, 1), d(2026, 2, 1));
    let bill = rate_cycle(
        &t,
        &input(
            cycle,
            readings(&t, cycle.start, cycle.end, 24 * 60, |l| {
                if l.day() <= 30 { (5_000, 0) } else { (0, 0) }
            }),
        ),
    )
    .unwrap();
    assert_eq!(
        amounts(&bill),
        vec![
            (LineKind::Energy, "675.00".into()),
            (LineKind::Fixed, "50.00".into()),
            (LineKind::Tax, "33.75".into())
        ]
    );
    assert_eq!(bill.lines[1].unit, Unit::Month);
    assert_eq!(bill.total, dec("758.75"));

    // The slab edge: exactly 100 kWh stays in slab 1 (100 × 3.00 = 300.00, duty 15.00,
    // total 365.00); one more Wh reaches slab 2 for every unit: 100.001 × 4.50 = 450.0045 →
    // 450.00 (half-up at the cent), duty 22.50, total 522.50.
    let one_day = |wh: u64| {
        readings(&t, cycle.start, cycle.end, 24 * 60, move |l| {
            if l.day() == 1 { (wh, 0) } else { (0, 0) }
        })
    };
    let at_edge = rate_cycle(&t, &input(cycle, one_day(100_000))).unwrap();
    assert_eq!(at_edge.total, dec("365.00"));
    let past_edge = rate_cycle(&t, &input(cycle, one_day(100_001))).unwrap();
    assert_eq!(past_edge.total, dec("522.50"));
}

#[test]
fn us_commercial_tou_with_peak_demand_and_a_holiday() {
    // July 2026, America/Los_Angeles, 15-minute readings. Base load 250 Wh per quarter hour
    // (1 kW); weekdays 16:00-21:00 add 250 Wh (2 kW). Spikes: Wed 15 July 17:00 (peak) 1500 Wh
    // = 6 kW; Thu 16 July 10:00 (off-peak) 2500 Wh = 10 kW, which the peak demand ignores.
    // Weekdays in July 2026: 23, less the observed holiday Fri 3 July = 22 peak days.
    //   peak: 22 days × 5 h × 2 kWh + 1 kWh spike excess = 221 kWh × 0.45 = 99.45
    //   off-peak: (744 - 110) h × 1 kWh + 2.25 kWh spike excess = 636.25 kWh × 0.25
    //     = 159.0625 → 159.06 (half-up)
    //   demand: 6 kW × 18.00 = 108.00 (the 10 kW off-peak spike does not count)
    //   customer charge: 1 month × 25.00 = 25.00
    //   subtotal 391.51; users tax 5 % = 19.5755 → 19.58; total 411.09
    let t = tariff("us_commercial_tou_demand.toml");
    let cycle = Cycle::new(d(2026, 7, 1), d(2026, 8, 1));
    let rs = readings(&t, cycle.start, cycle.end, 15, |l| {
        let weekday = !matches!(l.weekday(), Weekday::Sat | Weekday::Sun) && l.day() != 3;
        if l.day() == 15 && l.hour() == 17 && l.minute() == 0 {
            return (1500, 0);
        }
        if l.day() == 16 && l.hour() == 10 && l.minute() == 0 {
            return (2500, 0);
        }
        if weekday && (16..21).contains(&l.hour()) {
            (500, 0)
        } else {
            (250, 0)
        }
    });
    let bill = rate_cycle(&t, &input(cycle, rs)).unwrap();
    let lines: Vec<_> = bill
        .lines
        .iter()
        .map(|l| {
            (
                l.kind,
                l.quantity.normalize().to_string(),
                l.amount.to_string(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        vec![
            (LineKind::Energy, "221".into(), "99.45".into()),
            (LineKind::Energy, "636.25".into(), "159.06".into()),
            (LineKind::Demand, "6".into(), "108.00".into()),
            (LineKind::Fixed, "1".into(), "25.00".into()),
            (LineKind::Tax, "391.51".into(), "19.58".into()),
        ]
    );
    assert!(
        bill.lines[2]
            .description
            .contains("in peak at 2026-07-15 17:00"),
        "{}",
        bill.lines[2].description
    );
    assert_eq!(bill.total, dec("411.09"));
}

#[test]
fn mx_net_metering_nets_the_cycle_and_banks_excess() {
    // February 2026, 20 days of 20 kWh import and 12.5 kWh export: 400 kWh in, 250 kWh out,
    // 30 kWh of banked credit carried in. Net 150 kWh - 30 kWh credit = 120 kWh on the blocks:
    //   75 × 1.00 = 75.00; 45 × 1.20 = 54.00; energy 129.00; IVA 16 % = 20.64; total 149.64
    let t = tariff("mx_net_metering.toml");
    let cycle = Cycle::new(d(2026, 2, 1), d(2026, 3, 1));
    let mut inp = input(
        cycle,
        readings(&t, cycle.start, cycle.end, 24 * 60, |l| {
            if l.day() <= 20 {
                (20_000, 12_500)
            } else {
                (0, 0)
            }
        }),
    );
    inp.credit_carried_in_wh = 30_000;
    let bill = rate_cycle(&t, &inp).unwrap();
    assert_eq!(bill.total, dec("149.64"));
    assert_eq!(bill.energy.billed_import_wh, 120_000);
    assert_eq!(bill.energy.credit_used_wh, 30_000);
    assert_eq!(bill.energy.credit_carried_out_wh, 0);
    assert!(
        bill.lines
            .iter()
            .any(|l| l.kind == LineKind::Export && l.quantity == dec("30") && l.amount.is_zero())
    );

    // A sunny month: 200 kWh in, 260 kWh out. Net -60 kWh: nothing billed, the 30 kWh credit
    // is untouched and 60 kWh more is banked: 90 kWh carried out; total 0.00.
    let mut sunny = input(
        cycle,
        readings(&t, cycle.start, cycle.end, 24 * 60, |l| {
            if l.day() <= 20 {
                (10_000, 13_000)
            } else {
                (0, 0)
            }
        }),
    );
    sunny.credit_carried_in_wh = 30_000;
    let bill = rate_cycle(&t, &sunny).unwrap();
    assert_eq!(bill.total, dec("0.00"));
    assert_eq!(bill.energy.credit_carried_out_wh, 90_000);
}

#[test]
fn de_feed_in_gross_bills_import_and_credits_export() {
    // June 2026: 25 days × 10 kWh import = 250 kWh; 20 days × 20 kWh export = 400 kWh.
    //   energy 250 × 0.32 = 80.00; Grundpreis 1 month × 12.00 = 12.00;
    //   export 400 × -0.0786 = -31.44; MwSt 19 % of (80.00 + 12.00) = 17.48;
    //   total 80.00 + 12.00 - 31.44 + 17.48 = 78.04
    let t = tariff("de_feed_in_gross.toml");
    let cycle = Cycle::new(d(2026, 6, 1), d(2026, 7, 1));
    let rs = readings(&t, cycle.start, cycle.end, 24 * 60, |l| {
        (
            if l.day() <= 25 { 10_000 } else { 0 },
            if l.day() <= 20 { 20_000 } else { 0 },
        )
    });
    let bill = rate_cycle(&t, &input(cycle, rs)).unwrap();
    assert_eq!(
        amounts(&bill),
        vec![
            (LineKind::Energy, "80.00".into()),
            (LineKind::Export, "-31.44".into()),
            (LineKind::Fixed, "12.00".into()),
            (LineKind::Tax, "17.48".into()),
        ]
    );
    assert_eq!(bill.total, dec("78.04"));
}

#[test]
fn golden_bill_renders_as_csv() {
    let t = tariff("de_feed_in_gross.toml");
    let cycle = Cycle::new(d(2026, 6, 1), d(2026, 7, 1));
    let rs = readings(&t, cycle.start, cycle.end, 24 * 60, |l| {
        (
            if l.day() <= 25 { 10_000 } else { 0 },
            if l.day() <= 20 { 20_000 } else { 0 },
        )
    });
    let mut inp = input(cycle, rs);
    inp.previous_balance = dec("10.00");
    inp.payments = dec("10.00");
    let csv = rate_cycle(&t, &inp).unwrap().to_csv();
    let expected = "kind,description,quantity,unit,unit_price,amount\r\n\
        info,account: A-100,,,,\r\n\
        info,tariff: de-feed-in,,,,\r\n\
        info,cycle: 2026-06-01 to 2026-07-01 (end exclusive),,,,\r\n\
        info,status: final,,,,\r\n\
        info,currency: EUR,,,,\r\n\
        energy,energy,250,kWh,0.32,80.00\r\n\
        export,export sold,400,kWh,-0.0786,-31.44\r\n\
        fixed,Grundpreis,1,month,12,12.00\r\n\
        tax,\"MwSt 19 % of energy, fixed\",92,EUR,0.19,17.48\r\n\
        summary,subtotal,,,,60.56\r\n\
        summary,taxes,,,,17.48\r\n\
        summary,total,,,,78.04\r\n\
        summary,previous balance,,,,10.00\r\n\
        summary,payments,,,,10.00\r\n\
        summary,amount due,,,,78.04\r\n";
    assert_eq!(csv, expected);
}

#[test]
fn dk_levy_per_kwh_with_vat_on_the_levy() {
    // January 2026, 10 kWh a day × 31 = 310 kWh:
    //   energy 310 × 1.10 = 341.00; abonnement 1 month × 25.00 = 25.00
    //   elafgift 310 × 0.72 = 223.20 (levy, counted in taxes)
    //   moms 25 % of (341.00 + 25.00 + 223.20 = 589.20) = 147.30
    //   subtotal 366.00, taxes 370.50, total 736.50
    let t = tariff("dk_levy_vat.toml");
    let cycle = Cycle::new(d(2026, 1, 1), d(2026, 2, 1));
    let bill = rate_cycle(
        &t,
        &input(
            cycle,
            readings(&t, cycle.start, cycle.end, 24 * 60, |_| (10_000, 0)),
        ),
    )
    .unwrap();
    assert_eq!(
        amounts(&bill),
        vec![
            (LineKind::Energy, "341.00".into()),
            (LineKind::Fixed, "25.00".into()),
            (LineKind::Levy, "223.20".into()),
            (LineKind::Tax, "147.30".into()),
        ]
    );
    assert_eq!(
        (bill.subtotal, bill.taxes, bill.total),
        (dec("366.00"), dec("370.50"), dec("736.50"))
    );
}

#[test]
fn qc_compound_tax_is_computed_on_the_earlier_tax() {
    // January 2026, 30 kWh a day × 31 = 930 kWh:
    //   energy 930 × 0.07 = 65.10; access charge 31 days × 0.40 = 12.40; supply 77.50
    //   GST 5 % of 77.50 = 3.875 → 3.88 (half-up)
    //   QST 9.5 % of (77.50 + 3.88 = 81.38) = 7.7311 → 7.73
    //   total 77.50 + 3.88 + 7.73 = 89.11
    let t = tariff("qc_compound_taxes.toml");
    let cycle = Cycle::new(d(2026, 1, 1), d(2026, 2, 1));
    let bill = rate_cycle(
        &t,
        &input(
            cycle,
            readings(&t, cycle.start, cycle.end, 24 * 60, |_| (30_000, 0)),
        ),
    )
    .unwrap();
    let taxes: Vec<_> = bill
        .lines
        .iter()
        .filter(|l| l.kind == LineKind::Tax)
        .map(|l| (l.quantity, l.amount))
        .collect();
    assert_eq!(
        taxes,
        vec![(dec("77.50"), dec("3.88")), (dec("81.38"), dec("7.73"))]
    );
    assert_eq!(bill.total, dec("89.11"));
}

#[test]
fn gb_rerating_after_a_price_correction() {
    // The April unit rate was published wrongly as 0.2573 and corrected to 0.2473.
    // Issued bill (see gb_single_rate_cycle_spanning_a_price_change_and_a_dst_day): 116.38.
    // Corrected April segment: 168 kWh × 0.2473 = 41.5464 → 41.55 (was 43.23, -1.68);
    //   VAT 5 % of (41.55 + 7.53 = 49.08) = 2.454 → 2.45 (was 2.54, -0.09).
    // Corrected total 60.08 + 3.00 + 49.08 + 2.45 = 114.61; difference -1.77.
    let original = tariff("gb_single_rate.toml");
    let text = std::fs::read_to_string(format!(
        "{}/testdata/gb_single_rate.toml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let corrected = billing::Tariff::from_toml(&text.replace("0.2573", "0.2473")).unwrap();
    let cycle = Cycle::new(d(2026, 3, 15), d(2026, 4, 15));
    let inp = input(
        cycle,
        readings(&original, cycle.start, cycle.end, 60, |_| (500, 0)),
    );
    let issued = rate_cycle(&original, &inp).unwrap();
    assert_eq!(issued.total, dec("116.38"));
    let r = billing::rerate(&corrected, &issued, &inp).unwrap();
    assert_eq!(r.corrected.total, dec("114.61"));
    assert_eq!(r.difference_total, dec("-1.77"));
    let diffs: Vec<_> = r
        .differences
        .iter()
        .map(|l| (l.kind, l.amount.to_string()))
        .collect();
    assert_eq!(
        diffs,
        vec![
            (LineKind::Energy, "-1.68".into()),
            (LineKind::Tax, "-0.09".into())
        ]
    );
    let adjustment = r.adjustment_line();
    assert_eq!(
        (adjustment.kind, adjustment.amount),
        (LineKind::Adjustment, dec("-1.77"))
    );
    assert!(
        adjustment.description.contains("2026-03-15..2026-04-15"),
        "{}",
        adjustment.description
    );
}
