//! Secrets of the accounts area: Argon2id password hashes, random session ids, CSRF tokens and
//! API tokens, and the SHA-256 digests under which session ids and token secrets are stored.

use std::sync::LazyLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use ring::rand::{SecureRandom, SystemRandom};

use crate::Error;

/// Longest password accepted: bounds the hashing work one request can cause.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Shortest password accepted for new accounts and resets.
pub const MIN_PASSWORD_CHARS: usize = 10;
/// API tokens start with this, so leaked ones are easy to find in logs and repositories.
pub const TOKEN_PREFIX: &str = "wlt_";

/// `n` bytes from the operating system's CSPRNG, as lowercase hex.
pub(crate) fn random_hex(n: usize) -> Result<String, Error> {
    let mut buf = vec![0u8; n];
    SystemRandom::new().fill(&mut buf).map_err(|_| {
        Error::new(crate::ErrorKind::Unavailable(
            "system random source failed".into(),
        ))
    })?;
    Ok(hex(&buf))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// SHA-256 of `value`, hex: how session ids and token secrets are stored, so a copy of the
/// database does not hand out live sessions. (The values carry 256 random bits, so a fast hash
/// is enough; passwords get Argon2id.)
pub(crate) fn digest_hex(value: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, value.as_bytes()).as_ref())
}

/// Argon2id with the library defaults (19 MiB, 2 passes, 1 lane: the OWASP recommendation).
fn argon2() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::default())
}

/// Hashes a password into a PHC string (`$argon2id$v=19$...`) with a fresh random salt.
/// CPU-heavy: call it from a blocking task.
pub fn hash_password(password: &str) -> Result<String, Error> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(Error::invalid(format!(
            "password is longer than {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    let mut salt = [0u8; 16];
    SystemRandom::new().fill(&mut salt).map_err(|_| {
        Error::new(crate::ErrorKind::Unavailable(
            "system random source failed".into(),
        ))
    })?;
    let salt =
        SaltString::encode_b64(&salt).map_err(|e| Error::invalid(format!("password salt: {e}")))?;
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::invalid(format!("hashing the password: {e}")))
}

/// A real hash of a random password, verified against when the user does not exist, so that
/// an unknown name costs as long as a wrong password (no user enumeration by timing).
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    let pw = random_hex(16).unwrap_or_else(|_| "wattline-dummy-password".into());
    hash_password(&pw).unwrap_or_default()
});

/// Whether `password` matches the PHC string `hash` (`None`: compare against a dummy hash and
/// fail). CPU-heavy: call it from a blocking task.
pub fn verify_password(password: &str, hash: Option<&str>) -> bool {
    let (hash, real) = match hash {
        Some(h) => (h, true),
        None => (DUMMY_HASH.as_str(), false),
    };
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let ok = argon2()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    ok && real
}

/// Checks a new password against the policy.
pub fn check_new_password(password: &str) -> Result<(), Error> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(Error::invalid(format!(
            "the password must have at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(Error::invalid(format!(
            "the password must have at most {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    Ok(())
}

/// A new API token: the full string to hand out once, and its stored parts.
pub(crate) struct NewTokenSecret {
    /// `wlt_<prefix>_<secret>`.
    pub token: String,
    /// Lookup prefix (12 hex characters).
    pub prefix: String,
    /// SHA-256 hex of the secret part.
    pub secret_hash: String,
}

pub(crate) fn new_api_token() -> Result<NewTokenSecret, Error> {
    let prefix = random_hex(6)?;
    let secret = random_hex(32)?;
    Ok(NewTokenSecret {
        token: format!("{TOKEN_PREFIX}{prefix}_{secret}"),
        secret_hash: digest_hex(&secret),
        prefix,
    })
}

/// Splits `wlt_<prefix>_<secret>` into prefix and secret, checking the shape.
pub(crate) fn split_api_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (prefix, secret) = rest.split_once('_')?;
    let hexy = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hexy(prefix, 12) && hexy(secret, 64)).then_some((prefix, secret))
}

/// Compares two secrets in time independent of where they differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether a cookie value has the shape of a session id (64 hex characters).
pub(crate) fn is_session_id(value: &str) -> bool {
    value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_with_argon2id_and_verify_only_when_equal() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$v=19$"), "{h}");
        assert!(verify_password("correct horse battery", Some(&h)));
        assert!(!verify_password("correct horse batterY", Some(&h)));
        assert!(!verify_password("correct horse battery", None));
        assert!(!verify_password("x", Some("not a phc string")));
        let again = hash_password("correct horse battery").unwrap();
        assert_ne!(h, again, "salts differ");
        assert!(hash_password(&"x".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
    }

    #[test]
    fn api_tokens_round_trip_through_their_shape() {
        let t = new_api_token().unwrap();
        let (p, s) = split_api_token(&t.token).unwrap();
        assert_eq!(p, t.prefix);
        assert_eq!(digest_hex(s), t.secret_hash);
        for bad in [
            "",
            "wlt_",
            "wlt_abc_def",
            "xyz_000000000000_0",
            &t.token[..t.token.len() - 1],
        ] {
            assert!(split_api_token(bad).is_none(), "{bad}");
        }
        assert!(is_session_id(&random_hex(32).unwrap()));
        assert!(!is_session_id("../../etc/passwd"));
    }
}
