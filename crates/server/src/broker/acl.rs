//! The per-meter topic ACL of DESIGN §3.3, bound to the identity from the client certificate.
//!
//! Exact topics only: a meter publishes on its own `up`, `relay` and `status` and subscribes to
//! its own `down`, nothing else — no wildcards, no `$SYS`, no other meter's topics.

use schema::{MeterId, topic};

/// May `meter` publish on `topic_name`?
pub fn may_publish(meter: &MeterId, topic_name: &str) -> bool {
    topic_name == topic::up(meter)
        || topic_name == topic::relay(meter)
        || topic_name == topic::status(meter)
}

/// May `meter` subscribe to `filter`?
pub fn may_subscribe(meter: &MeterId, filter: &str) -> bool {
    filter == topic::down(meter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_meter_publishes_and_subscribes_only_under_its_own_id() {
        let m = MeterId::parse("m1").unwrap();
        assert!(may_publish(&m, "wattline/v1/m/m1/up"));
        assert!(may_publish(&m, "wattline/v1/m/m1/relay"));
        assert!(may_publish(&m, "wattline/v1/m/m1/status"));
        for t in [
            "wattline/v1/m/m2/up",
            "wattline/v1/m/m1/down",
            "wattline/v1/m/m1/up/",
            "wattline/v1/m/m1",
            "wattline/v1/m/m10/up",
            "wattline/v1/m/+/up",
            "$SYS/broker",
        ] {
            assert!(!may_publish(&m, t), "{t}");
        }
        assert!(may_subscribe(&m, "wattline/v1/m/m1/down"));
        for f in [
            "wattline/v1/m/m2/down",
            "wattline/v1/m/+/down",
            "wattline/v1/m/m1/#",
            "#",
            "wattline/v1/m/m1/up",
            "$share/g/wattline/v1/m/m1/down",
        ] {
            assert!(!may_subscribe(&m, f), "{f}");
        }
    }
}
