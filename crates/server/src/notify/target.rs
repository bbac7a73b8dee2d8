//! Where a webhook may point: an `http(s)` URL whose host resolves only to public addresses.
//! A user who may save a webhook preference could otherwise make the server call its own
//! loopback services, the cloud metadata endpoint (169.254.169.254) or machines on the private
//! network behind it (server-side request forgery). The check runs when a preference is saved
//! and again at every delivery, because DNS answers change; delivery then connects only to the
//! addresses that were checked, so a second lookup cannot swap in a private one.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A webhook target that passed the check: the URL and the addresses it may be sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedTarget {
    /// The parsed URL.
    pub url: reqwest::Url,
    /// The host name as written in the URL (what the request's `Host` header carries).
    pub host: String,
    /// Every address the host resolved to; all of them passed.
    pub addrs: Vec<SocketAddr>,
}

/// Why an address is not a public one, or `None` when it is.
pub fn non_public_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => {
            // An IPv4-mapped address (::ffff:a.b.c.d) reaches the IPv4 host.
            if let Some(v4) = v6.to_ipv4_mapped() {
                return v4_reason(v4);
            }
            v6_reason(v6)
        }
    }
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        Some("unspecified")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private (RFC 1918)")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if ip.is_broadcast() {
        Some("broadcast")
    } else if ip.octets()[0] == 100 && (ip.octets()[1] & 0xc0) == 64 {
        // 100.64.0.0/10, RFC 6598: the carrier-grade NAT side of a provider's network.
        Some("shared address space (RFC 6598)")
    } else if ip.octets()[0] == 0 {
        Some("\"this network\" (0.0.0.0/8)")
    } else {
        None
    }
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    let seg = ip.segments();
    let first = seg[0];
    // Addresses that carry an IPv4 address a gateway forwards to: NAT64 (64:ff9b::/96, RFC
    // 6052) and 6to4 (2002::/16, RFC 3056). They reach whatever the embedded address reaches.
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return v4_reason(embedded(seg[6], seg[7]));
    }
    if first == 0x2002 {
        return v4_reason(embedded(seg[1], seg[2]));
    }
    if ip.is_unspecified() {
        Some("unspecified")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if (first & 0xfe00) == 0xfc00 {
        Some("unique local (RFC 4193)")
    } else if (first & 0xffc0) == 0xfe80 {
        Some("link-local")
    } else if (first & 0xffc0) == 0xfec0 {
        Some("site-local")
    } else {
        None
    }
}

/// Checks a webhook URL: scheme `http` or `https`, a host, and — unless `allow_private` — every
/// address the host resolves to public. The error says what is wrong in words a user can act on
/// (it never echoes the URL's path or query, which may hold a token).
pub async fn check_webhook_target(url: &str, allow_private: bool) -> Result<CheckedTarget, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "the scheme must be http or https, got {:?}",
            parsed.scheme()
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("credentials in the URL are not accepted".into());
    }
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or("the URL has no host")?
        .to_owned();
    let port = parsed
        .port_or_known_default()
        .ok_or("the URL has no port")?;
    // `host_str` keeps IPv6 literals in brackets; the resolver wants them bare.
    let bare = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((bare.as_str(), port))
            .await
            .map_err(|e| format!("host {host} does not resolve: {e}"))?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(format!("host {host} resolves to no address"));
    }
    if !allow_private {
        for a in &addrs {
            if let Some(why) = non_public_reason(a.ip()) {
                return Err(format!(
                    "host {host} resolves to {} ({why}); webhooks may only go to public addresses",
                    a.ip()
                ));
            }
        }
    }
    Ok(CheckedTarget {
        url: parsed,
        host: bare,
        addrs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_named() {
        for (ip, why) in [
            ("127.0.0.1", "loopback"),
            ("10.1.2.3", "private (RFC 1918)"),
            ("172.16.0.1", "private (RFC 1918)"),
            ("192.168.1.1", "private (RFC 1918)"),
            ("169.254.169.254", "link-local"),
            ("224.0.0.1", "multicast"),
            ("0.0.0.0", "unspecified"),
            ("100.64.1.1", "shared address space (RFC 6598)"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fd00::1", "unique local (RFC 4193)"),
            ("fe80::1", "link-local"),
            ("ff02::1", "multicast"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:192.168.0.1", "private (RFC 1918)"),
            ("64:ff9b::7f00:1", "loopback"),
            ("2002:a00:1::1", "private (RFC 1918)"),
        ] {
            assert_eq!(
                non_public_reason(ip.parse().unwrap()),
                Some(why),
                "{ip} should be {why}"
            );
        }
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "100.128.0.1",
            "64:ff9b::5db8:d822",
        ] {
            assert_eq!(non_public_reason(ip.parse().unwrap()), None, "{ip}");
        }
    }

    #[tokio::test]
    async fn loopback_targets_are_refused_unless_allowed() {
        for url in [
            "http://127.0.0.1:9/hook",
            "http://localhost:9/hook",
            "https://[::1]/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://10.0.0.7/x",
        ] {
            let e = check_webhook_target(url, false).await.unwrap_err();
            assert!(e.contains("public addresses"), "{url}: {e}");
        }
        let ok = check_webhook_target("http://127.0.0.1:9/hook?token=s3cret", true)
            .await
            .unwrap();
        assert_eq!(ok.addrs, vec!["127.0.0.1:9".parse().unwrap()]);
        // Literal public addresses need no lookup (no traffic leaves the machine here).
        let ok = check_webhook_target("https://93.184.216.34/hook", false)
            .await
            .unwrap();
        assert_eq!(ok.addrs, vec!["93.184.216.34:443".parse().unwrap()]);
    }

    #[tokio::test]
    async fn bad_schemes_and_credentials_are_refused() {
        for (url, want) in [
            ("ftp://93.184.216.34/x", "scheme"),
            ("file:///etc/passwd", "scheme"),
            ("gopher://93.184.216.34/x", "scheme"),
            ("https://user:pw@93.184.216.34/x", "credentials"),
            ("not a url", "not a URL"),
        ] {
            let e = check_webhook_target(url, true).await.unwrap_err();
            assert!(e.contains(want), "{url}: {e}");
        }
    }
}
