//! Security suite 0 (AES-128-GCM, Green Book 9.2.3), HLS mechanism 5 (GMAC) and LLS, plus the
//! invocation counters that make replays fail.
//!
//! Suite 0 in one paragraph (Green Book 9.2.7.2.4): the IV is the sender's 8-byte system title
//! followed by its 4-byte invocation counter; the security control byte says authenticated
//! (0x10), encrypted (0x20) or both; the additional authenticated data is `SC || AK`, followed
//! by the plaintext when only authenticating; the tag is truncated to 12 bytes. Reusing an IV
//! with the same key breaks GCM, so the sender's counter must never repeat: the
//! [`CounterStore`] persists it.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;

use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::aes::Aes128;
use aes_gcm::{AesGcm, Nonce, Tag};

use crate::apdu::{Apdu, GeneralGloCiphering, GloCiphered};
use crate::error::{Error, ErrorKind, Result};

/// An 8-byte system title (Green Book 4.3.4: 3 bytes manufacturer id, 5 bytes serial).
pub type SystemTitle = [u8; 8];

/// Length of the truncated GCM tag in suite 0.
pub const TAG_LEN: usize = 12;

type Gcm = AesGcm<Aes128, U12, U12>;

/// The security control byte (Green Book 9.2.7.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecurityControl(pub u8);

impl SecurityControl {
    pub const AUTHENTICATED: u8 = 0x10;
    pub const ENCRYPTED: u8 = 0x20;
    pub const BROADCAST_KEY: u8 = 0x40;
    pub const COMPRESSED: u8 = 0x80;

    /// Authenticated encryption with the unicast key, suite 0.
    pub const AUTHENTICATED_ENCRYPTION: SecurityControl = SecurityControl(0x30);
    /// Authentication only.
    pub const AUTHENTICATION_ONLY: SecurityControl = SecurityControl(0x10);

    pub const fn authenticated(self) -> bool {
        self.0 & Self::AUTHENTICATED != 0
    }
    pub const fn encrypted(self) -> bool {
        self.0 & Self::ENCRYPTED != 0
    }
    pub const fn suite(self) -> u8 {
        self.0 & 0x0f
    }
}

/// The two suite-0 keys. `Debug` never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct Keys {
    /// Global unicast encryption key (EK).
    pub block_cipher_key: [u8; 16],
    /// Authentication key (AK).
    pub authentication_key: [u8; 16],
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keys { .. }")
    }
}

impl Keys {
    /// The Green Book example keys (EK `00..0F`, AK `D0..DF`): for demos and tests only.
    pub const GREEN_BOOK_EXAMPLE: Keys = Keys {
        block_cipher_key: [
            0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D,
            0x0E, 0x0F,
        ],
        authentication_key: [
            0xD0, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9, 0xDA, 0xDB, 0xDC, 0xDD,
            0xDE, 0xDF,
        ],
    };

    fn cipher(&self) -> Gcm {
        Gcm::new((&self.block_cipher_key).into())
    }
}

fn iv(system_title: &SystemTitle, ic: u32) -> [u8; 12] {
    let mut iv = [0u8; 12];
    iv[..8].copy_from_slice(system_title);
    iv[8..].copy_from_slice(&ic.to_be_bytes());
    iv
}

fn check_suite(sc: SecurityControl, ctx: &'static str) -> Result<()> {
    if sc.suite() != 0 || sc.0 & SecurityControl::COMPRESSED != 0 {
        return Err(Error::new(
            ErrorKind::Unsupported("security suite other than 0 or compression"),
            ctx,
        ));
    }
    Ok(())
}

/// Protects `plaintext`: returns the ciphered content (ciphertext or plaintext, then the tag if
/// authenticated) that follows `SC || IC` in a ciphered APDU.
pub fn encrypt(
    keys: &Keys,
    sc: SecurityControl,
    system_title: &SystemTitle,
    ic: u32,
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    const CTX: &str = "suite 0 encrypt";
    check_suite(sc, CTX)?;
    let cipher = keys.cipher();
    let nonce = iv(system_title, ic);
    let nonce = Nonce::<U12>::from_slice(&nonce);
    let mut aad = Vec::with_capacity(17 + plaintext.len());
    aad.push(sc.0);
    aad.extend_from_slice(&keys.authentication_key);
    let mut buf = plaintext.to_vec();
    let tag = if sc.encrypted() {
        cipher
            .encrypt_in_place_detached(nonce, &aad, &mut buf)
            .map_err(|_| Error::malformed("aes-gcm refused the input", CTX))?
    } else {
        aad.extend_from_slice(plaintext);
        cipher
            .encrypt_in_place_detached(nonce, &aad, &mut [])
            .map_err(|_| Error::malformed("aes-gcm refused the input", CTX))?
    };
    if sc.authenticated() {
        buf.extend_from_slice(&tag);
    }
    Ok(buf)
}

/// Checks and removes the protection added by [`encrypt`]; a wrong tag is
/// [`ErrorKind::AuthenticationFailed`].
pub fn decrypt(
    keys: &Keys,
    sc: SecurityControl,
    system_title: &SystemTitle,
    ic: u32,
    payload: &[u8],
) -> Result<Vec<u8>> {
    const CTX: &str = "suite 0 decrypt";
    check_suite(sc, CTX)?;
    let cipher = keys.cipher();
    let nonce = iv(system_title, ic);
    let nonce = Nonce::<U12>::from_slice(&nonce);
    let mut aad = Vec::with_capacity(17 + payload.len());
    aad.push(sc.0);
    aad.extend_from_slice(&keys.authentication_key);
    let (body, tag) = if sc.authenticated() {
        if payload.len() < TAG_LEN {
            return Err(Error::truncated(TAG_LEN - payload.len(), CTX));
        }
        let (b, t) = payload.split_at(payload.len() - TAG_LEN);
        (b, Some(Tag::<U12>::clone_from_slice(t)))
    } else {
        (payload, None)
    };
    let mut buf = body.to_vec();
    match (sc.encrypted(), tag) {
        (true, Some(tag)) => cipher
            .decrypt_in_place_detached(nonce, &aad, &mut buf, &tag)
            .map_err(|_| Error::new(ErrorKind::AuthenticationFailed, CTX))?,
        (false, Some(tag)) => {
            aad.extend_from_slice(body);
            cipher
                .decrypt_in_place_detached(nonce, &aad, &mut [], &tag)
                .map_err(|_| Error::new(ErrorKind::AuthenticationFailed, CTX))?
        }
        (true, None) => {
            // Encryption without authentication: GCM's counter mode is its own inverse.
            let _ = cipher
                .encrypt_in_place_detached(nonce, &aad, &mut buf)
                .map_err(|_| Error::malformed("aes-gcm refused the input", CTX))?;
        }
        (false, None) => {}
    }
    Ok(buf)
}

/// HLS mechanism 5 (Green Book 9.2.7.4): `f(challenge) = SC || IC || GMAC(SC || AK || challenge)`
/// with the responder's system title and invocation counter in the IV, SC = 0x10.
pub fn hls_gmac_response(
    keys: &Keys,
    system_title: &SystemTitle,
    ic: u32,
    challenge: &[u8],
) -> Result<Vec<u8>> {
    let mut aad = Vec::with_capacity(challenge.len());
    aad.extend_from_slice(challenge);
    let tag = encrypt(
        keys,
        SecurityControl::AUTHENTICATION_ONLY,
        system_title,
        ic,
        &aad,
    )?;
    let mut out = Vec::with_capacity(5 + TAG_LEN);
    out.push(SecurityControl::AUTHENTICATED);
    out.extend_from_slice(&ic.to_be_bytes());
    // `encrypt` in authentication-only mode returns plaintext || tag; keep the tag.
    out.extend_from_slice(&tag[challenge.len()..]);
    Ok(out)
}

/// Verifies a peer's `f(challenge)`; returns the invocation counter it used (for replay checks).
pub fn verify_hls_gmac(
    keys: &Keys,
    system_title: &SystemTitle,
    challenge: &[u8],
    response: &[u8],
) -> Result<u32> {
    const CTX: &str = "hls-gmac response";
    if response.len() != 5 + TAG_LEN {
        return Err(Error::new(
            ErrorKind::LengthOutOfRange {
                length: response.len(),
                max: 5 + TAG_LEN,
            },
            CTX,
        ));
    }
    if response[0] != SecurityControl::AUTHENTICATED {
        return Err(Error::tag(response[0], CTX));
    }
    let ic = u32::from_be_bytes([response[1], response[2], response[3], response[4]]);
    let expected = hls_gmac_response(keys, system_title, ic, challenge)?;
    // Compare without an early exit so timing does not reveal how much of the tag matched.
    let diff = expected
        .iter()
        .zip(response)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if diff != 0 {
        return Err(Error::new(ErrorKind::AuthenticationFailed, CTX));
    }
    Ok(ic)
}

/// Compares an LLS password without an early exit.
pub fn lls_password_matches(expected: &[u8], received: &[u8]) -> bool {
    if expected.len() != received.len() {
        return false;
    }
    expected
        .iter()
        .zip(received)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

/// The glo-ciphered tag for a plain APDU tag (Green Book 9.5: service-specific global ciphering).
pub fn glo_tag_for(plain_tag: u8) -> Option<u8> {
    Some(match plain_tag {
        0x01 => 0x21,
        0x08 => 0x28,
        0xC0 => 0xC8,
        0xC1 => 0xC9,
        0xC3 => 0xCB,
        0xC4 => 0xCC,
        0xC5 => 0xCD,
        0xC7 => 0xCF,
        _ => return None,
    })
}

/// Wraps a plain APDU into a glo-ciphered (or, with `general`, general-glo-ciphering) APDU.
pub fn protect_apdu(
    keys: &Keys,
    sc: SecurityControl,
    system_title: &SystemTitle,
    ic: u32,
    plain: &[u8],
    general: bool,
) -> Result<Apdu> {
    let payload = encrypt(keys, sc, system_title, ic, plain)?;
    if general {
        return Ok(Apdu::GeneralGlo(GeneralGloCiphering {
            system_title: system_title.to_vec(),
            security_control: sc.0,
            invocation_counter: ic,
            payload,
        }));
    }
    let first = *plain.first().ok_or(Error::truncated(1, "protect apdu"))?;
    let tag = glo_tag_for(first).ok_or(Error::new(
        ErrorKind::Unsupported("no glo form for this apdu"),
        "protect apdu",
    ))?;
    Ok(Apdu::Glo(GloCiphered {
        tag,
        security_control: sc.0,
        invocation_counter: ic,
        payload,
    }))
}

/// Invocation counters: the sender's own, which must never repeat, and the last one accepted
/// from each peer, which received counters must exceed. Implementations persist both (flash,
/// database) before returning, so a restart cannot reuse an IV or accept a replay.
pub trait CounterStore {
    /// Returns the counter to use for the next protected APDU we send and advances it.
    fn next_transmit(&mut self) -> Result<u32>;
    /// The last counter accepted from `peer`, if any.
    fn last_received(&self, peer: &SystemTitle) -> Option<u32>;
    /// Records `ic` from `peer` if it is above the last accepted one; else a replay error.
    fn accept_received(&mut self, peer: &SystemTitle, ic: u32) -> Result<()>;
}

/// An in-memory [`CounterStore`]; the caller saves [`MemoryCounterStore::snapshot`] and restores
/// it with [`MemoryCounterStore::restore`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryCounterStore {
    next_transmit: u32,
    received: BTreeMap<SystemTitle, u32>,
}

impl MemoryCounterStore {
    /// A store whose first transmitted counter is `first_transmit`.
    pub fn new(first_transmit: u32) -> Self {
        MemoryCounterStore {
            next_transmit: first_transmit,
            received: BTreeMap::new(),
        }
    }

    /// The state to persist: next transmit counter and the last counter per peer.
    pub fn snapshot(&self) -> (u32, Vec<(SystemTitle, u32)>) {
        (
            self.next_transmit,
            self.received.iter().map(|(k, v)| (*k, *v)).collect(),
        )
    }

    /// Rebuilds a store from a snapshot.
    pub fn restore(next_transmit: u32, received: &[(SystemTitle, u32)]) -> Self {
        MemoryCounterStore {
            next_transmit,
            received: received.iter().copied().collect(),
        }
    }
}

impl CounterStore for MemoryCounterStore {
    fn next_transmit(&mut self) -> Result<u32> {
        let ic = self.next_transmit;
        self.next_transmit = ic.checked_add(1).ok_or(Error::new(
            ErrorKind::CounterExhausted,
            "invocation counter",
        ))?;
        Ok(ic)
    }

    fn last_received(&self, peer: &SystemTitle) -> Option<u32> {
        self.received.get(peer).copied()
    }

    fn accept_received(&mut self, peer: &SystemTitle, ic: u32) -> Result<()> {
        if let Some(&last) = self.received.get(peer)
            && ic <= last
        {
            return Err(Error::new(
                ErrorKind::Replay {
                    received: ic,
                    last_accepted: last,
                },
                "invocation counter",
            ));
        }
        self.received.insert(*peer, ic);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::hex;

    // Green Book ed. 7 (DLMS UA 1000-2), Table 40 "Example: glo-get-request xDLMS APDU":
    // EK 000102..0F, AK D0D1..DF, system title 4D4D4D0000BC614E, IC 01234567, plaintext a
    // get-request for the clock time. The same figures appear in the Gurux forum thread
    // https://www.gurux.fi/index.php/node/5950 and in the dlms-cosem (Python) security tests.
    const ST: SystemTitle = [0x4D, 0x4D, 0x4D, 0x00, 0x00, 0xBC, 0x61, 0x4E];
    const IC: u32 = 0x0123_4567;
    const PLAIN: &str = "C0 01 00 00 08 00 00 01 00 00 FF 02 00";

    #[test]
    fn green_book_table_40_authenticated_encryption() {
        let keys = Keys::GREEN_BOOK_EXAMPLE;
        let apdu = protect_apdu(&keys, SecurityControl(0x30), &ST, IC, &hex(PLAIN), false).unwrap();
        assert_eq!(
            apdu.to_vec(),
            hex(
                "C8 1E 30 01 23 45 67 41 13 12 FF 93 5A 47 56 68 27 C4 67 BC 7D 82 5C 3B E4 A7 7C 3F CC 05 6B 6B"
            )
        );
        let Apdu::Glo(g) = apdu else { panic!() };
        assert_eq!(
            decrypt(&keys, SecurityControl(0x30), &ST, IC, &g.payload).unwrap(),
            hex(PLAIN)
        );
    }

    #[test]
    fn green_book_table_40_encryption_only() {
        let keys = Keys::GREEN_BOOK_EXAMPLE;
        let apdu = protect_apdu(&keys, SecurityControl(0x20), &ST, IC, &hex(PLAIN), false).unwrap();
        assert_eq!(
            apdu.to_vec(),
            hex("C8 12 20 01 23 45 67 41 13 12 FF 93 5A 47 56 68 27 C4 67 BC")
        );
        let Apdu::Glo(g) = apdu else { panic!() };
        assert_eq!(
            decrypt(&keys, SecurityControl(0x20), &ST, IC, &g.payload).unwrap(),
            hex(PLAIN)
        );
    }

    #[test]
    fn green_book_table_40_authentication_only() {
        let keys = Keys::GREEN_BOOK_EXAMPLE;
        let payload = encrypt(&keys, SecurityControl(0x10), &ST, IC, &hex(PLAIN)).unwrap();
        assert_eq!(
            payload,
            hex(&alloc::format!(
                "{PLAIN} 06 72 5D 91 0F 92 21 D2 63 87 75 16"
            ))
        );
        assert_eq!(
            decrypt(&keys, SecurityControl(0x10), &ST, IC, &payload).unwrap(),
            hex(PLAIN)
        );
    }

    #[test]
    fn green_book_table_43_hls_gmac() {
        // Table 43: CtoS "K56iVagY", StoC "P6wRJ21F", client title 4D4D4D0000000001 with IC 1,
        // server title 4D4D4D0000BC614E with IC 01234567.
        let keys = Keys::GREEN_BOOK_EXAMPLE;
        let client: SystemTitle = [0x4D, 0x4D, 0x4D, 0, 0, 0, 0, 1];
        let f_stoc = hls_gmac_response(&keys, &client, 1, b"P6wRJ21F").unwrap();
        assert_eq!(
            f_stoc,
            hex("10 00 00 00 01 1A 52 FE 7D D3 E7 27 48 97 3C 1E 28")
        );
        assert_eq!(
            verify_hls_gmac(&keys, &client, b"P6wRJ21F", &f_stoc).unwrap(),
            1
        );
        let f_ctos = hls_gmac_response(&keys, &ST, IC, b"K56iVagY").unwrap();
        assert_eq!(
            f_ctos,
            hex("10 01 23 45 67 FE 14 66 AF B3 DB CD 4F 93 89 E2 B7")
        );
    }

    #[test]
    fn tampering_and_wrong_keys_fail_authentication() {
        let keys = Keys::GREEN_BOOK_EXAMPLE;
        let mut payload = encrypt(&keys, SecurityControl(0x30), &ST, IC, &hex(PLAIN)).unwrap();
        payload[0] ^= 1;
        assert_eq!(
            decrypt(&keys, SecurityControl(0x30), &ST, IC, &payload)
                .unwrap_err()
                .kind(),
            &ErrorKind::AuthenticationFailed
        );
        let good = encrypt(&keys, SecurityControl(0x30), &ST, IC, &hex(PLAIN)).unwrap();
        assert!(
            decrypt(&keys, SecurityControl(0x30), &ST, IC + 1, &good).is_err(),
            "wrong IV"
        );
        let mut other = keys.clone();
        other.authentication_key[0] ^= 1;
        assert!(
            decrypt(&other, SecurityControl(0x30), &ST, IC, &good).is_err(),
            "wrong AK"
        );
        assert_eq!(
            decrypt(&keys, SecurityControl(0x30), &ST, IC, &[1, 2])
                .unwrap_err()
                .needed(),
            Some(10)
        );
        assert!(
            decrypt(&keys, SecurityControl(0x31), &ST, IC, &good).is_err(),
            "suite 1"
        );
        let mut bad = hls_gmac_response(&keys, &ST, IC, b"K56iVagY").unwrap();
        bad[16] ^= 0x80;
        assert_eq!(
            verify_hls_gmac(&keys, &ST, b"K56iVagY", &bad)
                .unwrap_err()
                .kind(),
            &ErrorKind::AuthenticationFailed
        );
        assert!(verify_hls_gmac(&keys, &ST, b"K56iVagY", &bad[..10]).is_err());
    }

    #[test]
    fn counters_reject_replays_and_survive_a_restart() {
        let mut store = MemoryCounterStore::new(5);
        assert_eq!(store.next_transmit().unwrap(), 5);
        assert_eq!(store.next_transmit().unwrap(), 6);
        store.accept_received(&ST, 10).unwrap();
        assert_eq!(
            store.accept_received(&ST, 10).unwrap_err().kind(),
            &ErrorKind::Replay {
                received: 10,
                last_accepted: 10
            }
        );
        assert!(store.accept_received(&ST, 9).is_err());
        store.accept_received(&ST, 11).unwrap();
        let (tx, rx) = store.snapshot();
        let mut restored = MemoryCounterStore::restore(tx, &rx);
        assert_eq!(restored.next_transmit().unwrap(), 7);
        assert!(
            restored.accept_received(&ST, 11).is_err(),
            "replay after restart"
        );
        let mut full = MemoryCounterStore::new(u32::MAX);
        assert_eq!(
            full.next_transmit().unwrap_err().kind(),
            &ErrorKind::CounterExhausted
        );
    }

    #[test]
    fn lls_comparison() {
        assert!(lls_password_matches(b"demo-lls", b"demo-lls"));
        assert!(!lls_password_matches(b"demo-lls", b"demo-llz"));
        assert!(!lls_password_matches(b"demo-lls", b"demo"));
    }
}
