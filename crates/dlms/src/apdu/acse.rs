//! ACSE association APDUs (AARQ, AARE, RLRQ, RLRE; BER-encoded, Green Book 9.4.2 / 11.2) and the
//! xDLMS initiate request/response they carry as user-information (A-XDR, Green Book 9.5).

use alloc::vec::Vec;

use super::codes::{
    ApplicationContext, AssociationResult, Mechanism, ReleaseReason, UserDiagnostic,
};
use crate::cursor::{Reader, put_length};
use crate::error::{Error, Result};

/// APDU tags of the ACSE and initiate PDUs.
pub mod tag {
    pub const AARQ: u8 = 0x60;
    pub const AARE: u8 = 0x61;
    pub const RLRQ: u8 = 0x62;
    pub const RLRE: u8 = 0x63;
    pub const INITIATE_REQUEST: u8 = 0x01;
    pub const INITIATE_RESPONSE: u8 = 0x08;
    pub const CONFIRMED_SERVICE_ERROR: u8 = 0x0E;
    pub const GLO_INITIATE_REQUEST: u8 = 0x21;
    pub const GLO_INITIATE_RESPONSE: u8 = 0x28;
}

/// The DLMS object identifier prefix `2.16.756.5.8` (joint-iso-ccitt country(16) ch(756)
/// identified-organization(5) dlms-ua(8)), BER-encoded.
const DLMS_UA_OID: [u8; 5] = [0x60, 0x85, 0x74, 0x05, 0x08];

/// Conformance block (Green Book 9.5, `Conformance` BIT STRING of 24 bits, bit 0 first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Conformance(pub u32);

impl Conformance {
    const fn bit(n: u32) -> u32 {
        0x80_0000 >> n
    }
    pub const GENERAL_PROTECTION: Conformance = Conformance(Self::bit(1));
    pub const GENERAL_BLOCK_TRANSFER: Conformance = Conformance(Self::bit(2));
    pub const ATTRIBUTE0_WITH_SET: Conformance = Conformance(Self::bit(8));
    pub const PRIORITY_MANAGEMENT: Conformance = Conformance(Self::bit(9));
    pub const ATTRIBUTE0_WITH_GET: Conformance = Conformance(Self::bit(10));
    pub const BLOCK_TRANSFER_WITH_GET: Conformance = Conformance(Self::bit(11));
    pub const BLOCK_TRANSFER_WITH_SET: Conformance = Conformance(Self::bit(12));
    pub const BLOCK_TRANSFER_WITH_ACTION: Conformance = Conformance(Self::bit(13));
    pub const MULTIPLE_REFERENCES: Conformance = Conformance(Self::bit(14));
    pub const DATA_NOTIFICATION: Conformance = Conformance(Self::bit(16));
    pub const GET: Conformance = Conformance(Self::bit(19));
    pub const SET: Conformance = Conformance(Self::bit(20));
    pub const SELECTIVE_ACCESS: Conformance = Conformance(Self::bit(21));
    pub const EVENT_NOTIFICATION: Conformance = Conformance(Self::bit(22));
    pub const ACTION: Conformance = Conformance(Self::bit(23));

    /// What a server of this crate offers.
    pub const SERVER_DEFAULT: Conformance = Conformance(
        Self::PRIORITY_MANAGEMENT.0
            | Self::BLOCK_TRANSFER_WITH_GET.0
            | Self::BLOCK_TRANSFER_WITH_SET.0
            | Self::MULTIPLE_REFERENCES.0
            | Self::GET.0
            | Self::SET.0
            | Self::SELECTIVE_ACCESS.0
            | Self::ACTION.0,
    );

    /// True if every bit of `other` is set.
    pub const fn contains(self, other: Conformance) -> bool {
        self.0 & other.0 == other.0
    }

    /// Bits set in both.
    pub const fn intersect(self, other: Conformance) -> Conformance {
        Conformance(self.0 & other.0)
    }

    fn read(r: &mut Reader<'_>) -> Result<Self> {
        const CTX: &str = "conformance block";
        let head = r.take(4, CTX)?;
        if head != [0x5F, 0x1F, 0x04, 0x00] {
            return Err(Error::malformed("expected 5F 1F 04 00", CTX));
        }
        let b = r.take(3, CTX)?;
        Ok(Conformance(u32::from_be_bytes([0, b[0], b[1], b[2]])))
    }

    fn emit(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[0x5F, 0x1F, 0x04, 0x00]);
        out.extend_from_slice(&self.0.to_be_bytes()[1..]);
    }
}

/// xDLMS InitiateRequest (Green Book 9.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitiateRequest {
    pub dedicated_key: Option<Vec<u8>>,
    /// `response-allowed`, BOOLEAN DEFAULT TRUE.
    pub response_allowed: bool,
    pub proposed_quality_of_service: Option<u8>,
    pub proposed_dlms_version: u8,
    pub proposed_conformance: Conformance,
    pub client_max_receive_pdu_size: u16,
}

impl InitiateRequest {
    const CTX: &'static str = "initiate-request";

    pub fn parse(buf: &[u8]) -> Result<Self> {
        let mut r = Reader::new(buf);
        let t = r.u8(Self::CTX)?;
        if t != tag::INITIATE_REQUEST {
            return Err(Error::tag(t, Self::CTX));
        }
        let dedicated_key = if r.bool(Self::CTX)? {
            let n = r.bounded_length(Self::CTX)?;
            Some(r.take(n, Self::CTX)?.to_vec())
        } else {
            None
        };
        let response_allowed = if r.bool(Self::CTX)? {
            r.bool(Self::CTX)?
        } else {
            true
        };
        let proposed_quality_of_service = if r.bool(Self::CTX)? {
            Some(r.u8(Self::CTX)?)
        } else {
            None
        };
        let proposed_dlms_version = r.u8(Self::CTX)?;
        let proposed_conformance = Conformance::read(&mut r)?;
        let client_max_receive_pdu_size = r.u16(Self::CTX)?;
        r.finish(Self::CTX)?;
        Ok(InitiateRequest {
            dedicated_key,
            response_allowed,
            proposed_quality_of_service,
            proposed_dlms_version,
            proposed_conformance,
            client_max_receive_pdu_size,
        })
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        out.push(tag::INITIATE_REQUEST);
        match &self.dedicated_key {
            Some(k) => {
                out.push(1);
                put_length(out, k.len());
                out.extend_from_slice(k);
            }
            None => out.push(0),
        }
        if self.response_allowed {
            out.push(0);
        } else {
            out.extend_from_slice(&[1, 0]);
        }
        match self.proposed_quality_of_service {
            Some(q) => out.extend_from_slice(&[1, q]),
            None => out.push(0),
        }
        out.push(self.proposed_dlms_version);
        self.proposed_conformance.emit(out);
        out.extend_from_slice(&self.client_max_receive_pdu_size.to_be_bytes());
    }

    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.emit(&mut v);
        v
    }
}

/// xDLMS InitiateResponse (Green Book 9.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitiateResponse {
    pub negotiated_quality_of_service: Option<u8>,
    pub negotiated_dlms_version: u8,
    pub negotiated_conformance: Conformance,
    pub server_max_receive_pdu_size: u16,
    /// 0x0007 for logical name referencing.
    pub vaa_name: u16,
}

impl InitiateResponse {
    const CTX: &'static str = "initiate-response";

    pub fn parse(buf: &[u8]) -> Result<Self> {
        let mut r = Reader::new(buf);
        let t = r.u8(Self::CTX)?;
        if t != tag::INITIATE_RESPONSE {
            return Err(Error::tag(t, Self::CTX));
        }
        let negotiated_quality_of_service = if r.bool(Self::CTX)? {
            Some(r.u8(Self::CTX)?)
        } else {
            None
        };
        let negotiated_dlms_version = r.u8(Self::CTX)?;
        let negotiated_conformance = Conformance::read(&mut r)?;
        let server_max_receive_pdu_size = r.u16(Self::CTX)?;
        let vaa_name = r.u16(Self::CTX)?;
        r.finish(Self::CTX)?;
        Ok(InitiateResponse {
            negotiated_quality_of_service,
            negotiated_dlms_version,
            negotiated_conformance,
            server_max_receive_pdu_size,
            vaa_name,
        })
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        out.push(tag::INITIATE_RESPONSE);
        match self.negotiated_quality_of_service {
            Some(q) => out.extend_from_slice(&[1, q]),
            None => out.push(0),
        }
        out.push(self.negotiated_dlms_version);
        self.negotiated_conformance.emit(out);
        out.extend_from_slice(&self.server_max_receive_pdu_size.to_be_bytes());
        out.extend_from_slice(&self.vaa_name.to_be_bytes());
    }

    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.emit(&mut v);
        v
    }
}

/// AARQ: the client's association request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aarq {
    pub application_context: ApplicationContext,
    /// The client system title (needed for ciphering and HLS-GMAC).
    pub calling_ap_title: Option<Vec<u8>>,
    /// Present when the client authenticates (sender-acse-requirements + mechanism-name).
    pub mechanism: Option<Mechanism>,
    /// Password (LLS) or challenge CtoS (HLS).
    pub calling_authentication_value: Option<Vec<u8>>,
    /// The xDLMS InitiateRequest, plain or glo-ciphered, as bytes.
    pub user_information: Option<Vec<u8>>,
}

/// AARE result-source-diagnostic: from the ACSE service user or provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Diagnostic {
    User(UserDiagnostic),
    /// `acse-service-provider` codes (0 null, 1 no-reason-given, 2 no-common-acse-version).
    Provider(u8),
}

/// AARE: the server's association response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aare {
    pub application_context: ApplicationContext,
    pub result: AssociationResult,
    pub diagnostic: Diagnostic,
    /// The server system title.
    pub responding_ap_title: Option<Vec<u8>>,
    pub mechanism: Option<Mechanism>,
    /// StoC challenge for HLS.
    pub responding_authentication_value: Option<Vec<u8>>,
    /// InitiateResponse, glo-initiateResponse or confirmedServiceError, as bytes. Some meters
    /// reject without it; that is accepted.
    pub user_information: Option<Vec<u8>>,
}

/// RLRQ (release request); `user_information` carries a (possibly ciphered) InitiateRequest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rlrq {
    pub reason: Option<ReleaseReason>,
    pub user_information: Option<Vec<u8>>,
}

/// RLRE (release response).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rlre {
    pub reason: Option<ReleaseReason>,
    pub user_information: Option<Vec<u8>>,
}

/// One BER TLV inside an ACSE APDU.
struct Tlv<'a> {
    tag: u8,
    value: &'a [u8],
}

fn read_tlvs<'a>(body: &'a [u8], ctx: &'static str) -> Result<Vec<Tlv<'a>>> {
    let mut r = Reader::new(body);
    let mut out = Vec::new();
    while !r.is_empty() {
        let tag = r.u8(ctx)?;
        let n = r.bounded_length(ctx)?;
        out.push(Tlv {
            tag,
            value: r.take(n, ctx)?,
        });
    }
    Ok(out)
}

fn put_tlv(out: &mut Vec<u8>, tag: u8, value: &[u8]) {
    out.push(tag);
    put_length(out, value.len());
    out.extend_from_slice(value);
}

/// Reads the outer `tag len body` of an ACSE APDU, with the length checked against the input.
fn outer<'a>(buf: &'a [u8], want: u8, ctx: &'static str) -> Result<&'a [u8]> {
    let mut r = Reader::new(buf);
    let t = r.u8(ctx)?;
    if t != want {
        return Err(Error::tag(t, ctx));
    }
    let n = r.bounded_length(ctx)?;
    let body = r.take(n, ctx)?;
    r.finish(ctx)?;
    Ok(body)
}

/// `06 07 60 85 74 05 08 <arc> <id>` inside a context tag.
fn read_oid(value: &[u8], arc: u8, ctx: &'static str) -> Result<u8> {
    let v = if value.first() == Some(&0x06) {
        let mut r = Reader::new(value);
        r.u8(ctx)?;
        let n = r.bounded_length(ctx)?;
        let v = r.take(n, ctx)?;
        r.finish(ctx)?;
        v
    } else {
        // mechanism-name is IMPLICIT: the OID bytes follow directly.
        value
    };
    if v.len() != 7 || v[..5] != DLMS_UA_OID || v[5] != arc {
        return Err(Error::malformed("not a DLMS UA object identifier", ctx));
    }
    Ok(v[6])
}

fn oid(arc: u8, id: u8) -> [u8; 7] {
    [
        DLMS_UA_OID[0],
        DLMS_UA_OID[1],
        DLMS_UA_OID[2],
        DLMS_UA_OID[3],
        DLMS_UA_OID[4],
        arc,
        id,
    ]
}

fn explicit_oid(arc: u8, id: u8) -> Vec<u8> {
    let mut v = alloc::vec![0x06, 0x07];
    v.extend_from_slice(&oid(arc, id));
    v
}

/// `04 len octets` (user-information is an EXTERNAL with a single OCTET STRING).
fn read_octet_string(value: &[u8], ctx: &'static str) -> Result<Vec<u8>> {
    let mut r = Reader::new(value);
    let t = r.u8(ctx)?;
    if t != 0x04 {
        return Err(Error::tag(t, ctx));
    }
    let n = r.bounded_length(ctx)?;
    let v = r.take(n, ctx)?.to_vec();
    r.finish(ctx)?;
    Ok(v)
}

fn octet_string(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() + 3);
    put_tlv(&mut out, 0x04, v);
    out
}

/// Authentication-value CHOICE: `[0] charstring` (the only form DLMS uses) or `[1] bitstring`.
fn read_auth_value(value: &[u8], ctx: &'static str) -> Result<Vec<u8>> {
    let mut r = Reader::new(value);
    let t = r.u8(ctx)?;
    if t != 0x80 && t != 0x81 {
        return Err(Error::tag(t, ctx));
    }
    let n = r.bounded_length(ctx)?;
    let v = r.take(n, ctx)?.to_vec();
    r.finish(ctx)?;
    Ok(v)
}

fn auth_value(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() + 3);
    put_tlv(&mut out, 0x80, v);
    out
}

/// `A2 03 02 01 xx`: an INTEGER inside a context tag.
fn read_small_integer(value: &[u8], ctx: &'static str) -> Result<u8> {
    match value {
        [0x02, 0x01, v] => Ok(*v),
        _ => Err(Error::malformed("expected a one-byte INTEGER", ctx)),
    }
}

const ACSE_REQUIREMENTS_AUTH: [u8; 2] = [0x07, 0x80];

impl Aarq {
    const CTX: &'static str = "aarq";

    pub fn parse(buf: &[u8]) -> Result<Self> {
        let body = outer(buf, tag::AARQ, Self::CTX)?;
        let mut out = Aarq {
            application_context: ApplicationContext::Unknown(0),
            calling_ap_title: None,
            mechanism: None,
            calling_authentication_value: None,
            user_information: None,
        };
        let mut have_context = false;
        for tlv in read_tlvs(body, Self::CTX)? {
            match tlv.tag {
                0xA1 => {
                    out.application_context =
                        read_oid(tlv.value, 1, "aarq application-context-name")?.into();
                    have_context = true;
                }
                0xA6 => {
                    out.calling_ap_title =
                        Some(read_octet_string(tlv.value, "aarq calling-ap-title")?)
                }
                0x8B => out.mechanism = Some(read_oid(tlv.value, 2, "aarq mechanism-name")?.into()),
                0xAC => {
                    out.calling_authentication_value = Some(read_auth_value(
                        tlv.value,
                        "aarq calling-authentication-value",
                    )?)
                }
                0xBE => {
                    out.user_information =
                        Some(read_octet_string(tlv.value, "aarq user-information")?)
                }
                // protocol-version, called/calling AE and invocation ids, acse-requirements and
                // implementation-information carry nothing DLMS needs.
                0x80 | 0xA2..=0xA5 | 0xA7..=0xA9 | 0x8A | 0xBD => {}
                other => return Err(Error::tag(other, Self::CTX)),
            }
        }
        if !have_context {
            return Err(Error::malformed(
                "missing application-context-name",
                Self::CTX,
            ));
        }
        Ok(out)
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        let mut body = Vec::new();
        put_tlv(
            &mut body,
            0xA1,
            &explicit_oid(1, self.application_context.into()),
        );
        if let Some(t) = &self.calling_ap_title {
            put_tlv(&mut body, 0xA6, &octet_string(t));
        }
        if let Some(m) = self.mechanism {
            put_tlv(&mut body, 0x8A, &ACSE_REQUIREMENTS_AUTH);
            put_tlv(&mut body, 0x8B, &oid(2, m.into()));
        }
        if let Some(v) = &self.calling_authentication_value {
            put_tlv(&mut body, 0xAC, &auth_value(v));
        }
        if let Some(u) = &self.user_information {
            put_tlv(&mut body, 0xBE, &octet_string(u));
        }
        put_tlv(out, tag::AARQ, &body);
    }
}

impl Aare {
    const CTX: &'static str = "aare";

    pub fn parse(buf: &[u8]) -> Result<Self> {
        let body = outer(buf, tag::AARE, Self::CTX)?;
        let mut out = Aare {
            application_context: ApplicationContext::Unknown(0),
            result: AssociationResult::Unknown(0xff),
            diagnostic: Diagnostic::Provider(0),
            responding_ap_title: None,
            mechanism: None,
            responding_authentication_value: None,
            user_information: None,
        };
        let (mut have_context, mut have_result) = (false, false);
        for tlv in read_tlvs(body, Self::CTX)? {
            match tlv.tag {
                0xA1 => {
                    out.application_context =
                        read_oid(tlv.value, 1, "aare application-context-name")?.into();
                    have_context = true;
                }
                0xA2 => {
                    out.result = read_small_integer(tlv.value, "aare result")?.into();
                    have_result = true;
                }
                0xA3 => {
                    out.diagnostic = match tlv.value {
                        [0xA1, 0x03, rest @ ..] => Diagnostic::User(
                            read_small_integer(rest, "aare result-source-diagnostic")?.into(),
                        ),
                        [0xA2, 0x03, rest @ ..] => Diagnostic::Provider(read_small_integer(
                            rest,
                            "aare result-source-diagnostic",
                        )?),
                        _ => {
                            return Err(Error::malformed(
                                "bad result-source-diagnostic",
                                Self::CTX,
                            ));
                        }
                    }
                }
                0xA4 => {
                    out.responding_ap_title =
                        Some(read_octet_string(tlv.value, "aare responding-ap-title")?)
                }
                0x89 => out.mechanism = Some(read_oid(tlv.value, 2, "aare mechanism-name")?.into()),
                0xAA => {
                    out.responding_authentication_value = Some(read_auth_value(
                        tlv.value,
                        "aare responding-authentication-value",
                    )?)
                }
                0xBE => {
                    out.user_information =
                        Some(read_octet_string(tlv.value, "aare user-information")?)
                }
                0x80 | 0xA5..=0xA7 | 0x88 | 0xBD => {}
                other => return Err(Error::tag(other, Self::CTX)),
            }
        }
        if !have_context || !have_result {
            return Err(Error::malformed(
                "missing application-context-name or result",
                Self::CTX,
            ));
        }
        Ok(out)
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        let mut body = Vec::new();
        put_tlv(
            &mut body,
            0xA1,
            &explicit_oid(1, self.application_context.into()),
        );
        put_tlv(&mut body, 0xA2, &[0x02, 0x01, self.result.into()]);
        let diag = match self.diagnostic {
            Diagnostic::User(d) => [0xA1, 0x03, 0x02, 0x01, d.into()],
            Diagnostic::Provider(d) => [0xA2, 0x03, 0x02, 0x01, d],
        };
        put_tlv(&mut body, 0xA3, &diag);
        if let Some(t) = &self.responding_ap_title {
            put_tlv(&mut body, 0xA4, &octet_string(t));
        }
        if let Some(m) = self.mechanism {
            put_tlv(&mut body, 0x88, &ACSE_REQUIREMENTS_AUTH);
            put_tlv(&mut body, 0x89, &oid(2, m.into()));
        }
        if let Some(v) = &self.responding_authentication_value {
            put_tlv(&mut body, 0xAA, &auth_value(v));
        }
        if let Some(u) = &self.user_information {
            put_tlv(&mut body, 0xBE, &octet_string(u));
        }
        put_tlv(out, tag::AARE, &body);
    }
}

fn parse_release(
    buf: &[u8],
    want: u8,
    ctx: &'static str,
) -> Result<(Option<ReleaseReason>, Option<Vec<u8>>)> {
    let body = outer(buf, want, ctx)?;
    let (mut reason, mut user) = (None, None);
    for tlv in read_tlvs(body, ctx)? {
        match tlv.tag {
            0x80 => match tlv.value {
                [r] => reason = Some((*r).into()),
                _ => return Err(Error::malformed("reason is not one byte", ctx)),
            },
            0xBE => user = Some(read_octet_string(tlv.value, ctx)?),
            other => return Err(Error::tag(other, ctx)),
        }
    }
    Ok((reason, user))
}

fn emit_release(out: &mut Vec<u8>, t: u8, reason: Option<ReleaseReason>, user: &Option<Vec<u8>>) {
    let mut body = Vec::new();
    if let Some(r) = reason {
        put_tlv(&mut body, 0x80, &[r.into()]);
    }
    if let Some(u) = user {
        put_tlv(&mut body, 0xBE, &octet_string(u));
    }
    put_tlv(out, t, &body);
}

impl Rlrq {
    pub fn parse(buf: &[u8]) -> Result<Self> {
        let (reason, user_information) = parse_release(buf, tag::RLRQ, "rlrq")?;
        Ok(Rlrq {
            reason,
            user_information,
        })
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        emit_release(out, tag::RLRQ, self.reason, &self.user_information)
    }
}

impl Rlre {
    pub fn parse(buf: &[u8]) -> Result<Self> {
        let (reason, user_information) = parse_release(buf, tag::RLRE, "rlre")?;
        Ok(Rlre {
            reason,
            user_information,
        })
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        emit_release(out, tag::RLRE, self.reason, &self.user_information)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::hex;
    use alloc::vec;

    // The AARQ Gurux sends for an LLS association with password "ABCDEFGH" and the AARE a
    // meter answers (layout as in Green Book 11.2, example "AARQ with LLS").
    const AARQ_LLS: &str = "60 36 A1 09 06 07 60 85 74 05 08 01 01 8A 02 07 80 8B 07 60 85 74 05 08 02 01 \
                            AC 0A 80 08 41 42 43 44 45 46 47 48 BE 10 04 0E 01 00 00 00 06 5F 1F 04 00 00 7E 1F 04 B0";
    const AARE_OK: &str = "61 29 A1 09 06 07 60 85 74 05 08 01 01 A2 03 02 01 00 A3 05 A1 03 02 01 00 \
                           BE 10 04 0E 08 00 06 5F 1F 04 00 00 50 1F 01 F4 00 07";

    #[test]
    fn aarq_lls_byte_exact() {
        let bytes = hex(AARQ_LLS);
        let aarq = Aarq::parse(&bytes).unwrap();
        assert_eq!(
            aarq.application_context,
            ApplicationContext::LogicalNameNoCiphering
        );
        assert_eq!(aarq.mechanism, Some(Mechanism::Low));
        assert_eq!(
            aarq.calling_authentication_value.as_deref(),
            Some(&b"ABCDEFGH"[..])
        );
        let init = InitiateRequest::parse(aarq.user_information.as_ref().unwrap()).unwrap();
        assert_eq!(init.client_max_receive_pdu_size, 0x04B0);
        assert!(init.proposed_conformance.contains(Conformance::GET));
        assert!(
            init.proposed_conformance
                .contains(Conformance::BLOCK_TRANSFER_WITH_GET)
        );
        let mut out = Vec::new();
        aarq.emit(&mut out);
        assert_eq!(out, bytes);
    }

    #[test]
    fn aare_accepted_byte_exact() {
        let bytes = hex(AARE_OK);
        let aare = Aare::parse(&bytes).unwrap();
        assert_eq!(aare.result, AssociationResult::Accepted);
        assert_eq!(aare.diagnostic, Diagnostic::User(UserDiagnostic::Null));
        let init = InitiateResponse::parse(aare.user_information.as_ref().unwrap()).unwrap();
        assert_eq!(init.server_max_receive_pdu_size, 0x01F4);
        assert_eq!(init.vaa_name, 7);
        let mut out = Vec::new();
        aare.emit(&mut out);
        assert_eq!(out, bytes);
    }

    #[test]
    fn aare_rejected_without_user_information_is_accepted() {
        // Several meters reject with only context, result and diagnostic (issue 8, item 5).
        let bytes =
            hex("61 17 A1 09 06 07 60 85 74 05 08 01 01 A2 03 02 01 01 A3 05 A1 03 02 01 0D");
        let aare = Aare::parse(&bytes).unwrap();
        assert_eq!(aare.result, AssociationResult::RejectedPermanent);
        assert_eq!(
            aare.diagnostic,
            Diagnostic::User(UserDiagnostic::AuthenticationFailure)
        );
        assert_eq!(aare.user_information, None);
    }

    #[test]
    fn hls_aare_round_trips() {
        let aare = Aare {
            application_context: ApplicationContext::LogicalNameCiphering,
            result: AssociationResult::Accepted,
            diagnostic: Diagnostic::User(UserDiagnostic::AuthenticationRequired),
            responding_ap_title: Some(hex("4D4D4D0000BC614E")),
            mechanism: Some(Mechanism::HighGmac),
            responding_authentication_value: Some(b"P6wRJ21F".to_vec()),
            user_information: Some(vec![0x28, 0x00]),
        };
        let mut out = Vec::new();
        aare.emit(&mut out);
        assert_eq!(&out[..2], &[0x61, out.len() as u8 - 2]);
        assert_eq!(Aare::parse(&out).unwrap(), aare);
    }

    #[test]
    fn release_byte_exact() {
        let rlrq = Rlrq::parse(&hex("62 03 80 01 00")).unwrap();
        assert_eq!(rlrq.reason, Some(ReleaseReason::Normal));
        let rlre = Rlre {
            reason: Some(ReleaseReason::Normal),
            user_information: None,
        };
        let mut out = Vec::new();
        rlre.emit(&mut out);
        assert_eq!(out, hex("63 03 80 01 00"));
        assert_eq!(Rlre::parse(&hex("63 00")).unwrap().reason, None);
    }

    #[test]
    fn impossible_lengths_are_rejected() {
        assert_eq!(
            Aarq::parse(&hex("60 40 A1 09")).unwrap_err().needed(),
            Some(62)
        );
        assert!(Aarq::parse(&hex("60 04 A1 09 06 07")).is_err());
        assert!(
            Aarq::parse(&hex("60 00")).is_err(),
            "no application context"
        );
        assert!(Aare::parse(&hex("61 05 A2 03 02 01 00")).is_err());
        assert!(InitiateRequest::parse(&hex("01 00 00 00 06 5F 1F 04 00 00 7E")).is_err());
        assert!(Rlrq::parse(&hex("62 03 80 02 00")).is_err());
    }
}
