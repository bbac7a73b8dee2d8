//! The subject common name of a client certificate, read from its DER (RFC 5280 §4.1).
//!
//! rustls has already verified the chain to our CA when this runs, so this only has to find
//! one field, not judge the certificate. A focused reader of the few DER structures on the
//! path (Certificate → TBSCertificate → subject → RDN → AttributeTypeAndValue) keeps the
//! broker free of a general X.509 parser. Every length is checked against what is left.

/// DER encoding of the attribute type `id-at-commonName` (2.5.4.3, RFC 5280 appendix A).
const OID_COMMON_NAME: [u8; 3] = [0x55, 0x04, 0x03];

const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
const TAG_OID: u8 = 0x06;
const TAG_INTEGER: u8 = 0x02;
const TAG_VERSION: u8 = 0xA0;
const TAG_UTF8_STRING: u8 = 0x0C;
const TAG_PRINTABLE_STRING: u8 = 0x13;
const TAG_IA5_STRING: u8 = 0x16;

/// One DER tag-length-value: `(tag, contents, rest)`.
fn tlv(input: &[u8]) -> Result<(u8, &[u8], &[u8]), String> {
    let (&tag, rest) = input.split_first().ok_or("truncated: no tag")?;
    if tag & 0x1F == 0x1F {
        return Err("multi-byte tags are not used in certificates".into());
    }
    let (&first, rest) = rest.split_first().ok_or("truncated: no length")?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7F);
        if n == 0 || n > 4 || rest.len() < n {
            return Err(format!("bad length of {n} bytes"));
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return Err(format!("length {len} beyond the {} bytes left", rest.len()));
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

fn expect<'a>(input: &'a [u8], want: u8, what: &str) -> Result<(&'a [u8], &'a [u8]), String> {
    let (tag, contents, rest) = tlv(input)?;
    if tag != want {
        return Err(format!("{what}: tag {tag:#04x}, expected {want:#04x}"));
    }
    Ok((contents, rest))
}

/// The certificate's serial number as lowercase hex of its DER integer bytes (RFC 5280
/// §4.1.2.2): the key of the revocation list.
pub fn serial_hex(cert_der: &[u8]) -> Result<String, String> {
    let (cert, _) = expect(cert_der, TAG_SEQUENCE, "certificate")?;
    let (tbs, _) = expect(cert, TAG_SEQUENCE, "tbsCertificate")?;
    let mut rest = tbs;
    if rest.first() == Some(&TAG_VERSION) {
        rest = tlv(rest)?.2;
    }
    let (serial, _) = expect(rest, TAG_INTEGER, "serialNumber")?;
    if serial.is_empty() || serial.len() > 21 {
        return Err(format!("serial number of {} bytes", serial.len()));
    }
    Ok(serial.iter().map(|b| format!("{b:02x}")).collect())
}

/// The subject's common name; an error when there is none, more than one, or the DER is bad.
pub fn common_name(cert_der: &[u8]) -> Result<String, String> {
    let (cert, _) = expect(cert_der, TAG_SEQUENCE, "certificate")?;
    let (tbs, _) = expect(cert, TAG_SEQUENCE, "tbsCertificate")?;
    let mut rest = tbs;
    if rest.first() == Some(&TAG_VERSION) {
        rest = tlv(rest)?.2;
    }
    // serialNumber, signature, issuer, validity; then subject.
    for _ in 0..4 {
        rest = tlv(rest)?.2;
    }
    let (mut rdns, _) = expect(rest, TAG_SEQUENCE, "subject")?;
    let mut found: Option<String> = None;
    while !rdns.is_empty() {
        let (set, after) = expect(rdns, TAG_SET, "relative distinguished name")?;
        rdns = after;
        let mut attrs = set;
        while !attrs.is_empty() {
            let (attr, after) = expect(attrs, TAG_SEQUENCE, "attribute")?;
            attrs = after;
            let (oid, value) = expect(attr, TAG_OID, "attribute type")?;
            if oid != OID_COMMON_NAME {
                continue;
            }
            let (tag, text, _) = tlv(value)?;
            if !matches!(tag, TAG_UTF8_STRING | TAG_PRINTABLE_STRING | TAG_IA5_STRING) {
                return Err(format!("common name has string tag {tag:#04x}"));
            }
            let text = std::str::from_utf8(text).map_err(|_| "common name is not utf-8")?;
            if found.replace(text.to_owned()).is_some() {
                return Err("more than one common name".into());
            }
        }
    }
    found.ok_or_else(|| "no common name in the subject".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair};

    fn cert_with(names: &[(DnType, &str)]) -> Vec<u8> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (t, v) in names {
            params.distinguished_name.push(t.clone(), *v);
        }
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn finds_the_common_name_among_other_attributes() {
        let der = cert_with(&[
            (DnType::OrganizationName, "wattline"),
            (DnType::CommonName, "house-7"),
            (DnType::CountryName, "DE"),
        ]);
        assert_eq!(common_name(&der).unwrap(), "house-7");
    }

    #[test]
    fn serial_matches_the_one_rcgen_wrote() {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x01, 0xab, 0x00, 0x7f]));
        let key = KeyPair::generate().unwrap();
        let der = params.self_signed(&key).unwrap().der().to_vec();
        assert_eq!(serial_hex(&der).unwrap(), "01ab007f");
        for n in 0..der.len() {
            assert!(serial_hex(&der[..n]).is_err(), "prefix {n}");
        }
    }

    #[test]
    fn refuses_certificates_without_a_common_name() {
        let der = cert_with(&[(DnType::OrganizationName, "wattline")]);
        assert!(common_name(&der).unwrap_err().contains("no common name"));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let der = cert_with(&[(DnType::CommonName, "m1")]);
        for n in 0..der.len() {
            // A prefix can still hold a complete subject only if it cuts after it; either way
            // it must not panic, and the outer length check fails for every real prefix.
            assert!(common_name(&der[..n]).is_err(), "prefix {n}");
        }
        assert!(common_name(&[0x30, 0x84, 0xFF, 0xFF, 0xFF, 0xFF]).is_err());
        assert!(common_name(&[0x30, 0x85, 0, 0, 0, 0, 1]).is_err());
        assert!(common_name(&[0x1F, 0x01]).is_err());
    }
}
