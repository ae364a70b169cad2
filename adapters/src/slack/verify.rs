//! Slack request signatures (v0): HMAC-SHA256 over `v0:{timestamp}:{raw body}` with the
//! signing secret, compared in constant time, with a ±5-minute timestamp window. Runs on the
//! raw bytes before anything is parsed.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

pub use crate::signature::Rejection;
use crate::signature::{parse_timestamp, within_window};

/// `v0=<hex>` for a body: what Slack sends in `X-Slack-Signature`.
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    format!("v0={}", hex::encode(mac(secret, timestamp, body)))
}

fn mac(secret: &[u8], timestamp: &str, body: &[u8]) -> Vec<u8> {
    SigningKey::new(secret).mac(timestamp, body).to_vec()
}

/// The signing secret made ready once: HMAC's keyed state, cloned for each request instead of
/// hashing the key again on every one.
#[derive(Clone)]
pub struct SigningKey(Hmac<Sha256>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

impl SigningKey {
    pub fn new(secret: &[u8]) -> SigningKey {
        // HMAC takes keys of every length.
        SigningKey(<Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC keys have no length limit")))
    }

    fn mac(&self, timestamp: &str, body: &[u8]) -> [u8; 32] {
        let mut m = self.0.clone();
        m.update(b"v0:");
        m.update(timestamp.as_bytes());
        m.update(b":");
        m.update(body);
        m.finalize().into_bytes().into()
    }

    /// Checks the two headers against the raw body at `now` (unix seconds).
    pub fn verify(&self, signature: Option<&str>, timestamp: Option<&str>, body: &[u8], now: i64) -> Result<(), Rejection> {
        let (Some(sig), Some(ts)) = (signature, timestamp) else {
            return Err(Rejection::Missing);
        };
        let ts = ts.trim();
        let t = parse_timestamp(ts)?;
        let Some(hexsig) = sig.trim().strip_prefix("v0=") else {
            return Err(Rejection::Malformed);
        };
        let mut given = [0u8; 32];
        if hex::decode_to_slice(hexsig, &mut given).is_err() {
            return Err(Rejection::Malformed);
        }
        if !bool::from(self.mac(ts, body).ct_eq(&given)) {
            return Err(Rejection::Mismatch);
        }
        within_window(t, now)
    }
}

/// Checks the two headers against the raw body at `now` (unix seconds).
pub fn verify(secret: &[u8], signature: Option<&str>, timestamp: Option<&str>, body: &[u8], now: i64) -> Result<(), Rejection> {
    SigningKey::new(secret).verify(signature, timestamp, body, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    // docs.slack.dev/authentication/verifying-requests-from-slack
    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const TS: &str = "1531420618";
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    #[test]
    fn slack_documented_test_vector() {
        assert_eq!(sign(SECRET.as_bytes(), TS, BODY.as_bytes()), SIG);
        let now: i64 = TS.parse().unwrap_or_default();
        assert_eq!(verify(SECRET.as_bytes(), Some(SIG), Some(TS), BODY.as_bytes(), now + 10), Ok(()));
        assert_eq!(verify(SECRET.as_bytes(), Some(SIG), Some(TS), BODY.as_bytes(), now - 300), Ok(()));
    }

    #[test]
    fn forged_stale_missing_and_malformed_are_told_apart() {
        let now: i64 = TS.parse().unwrap_or_default();
        let b = BODY.as_bytes();
        let s = SECRET.as_bytes();
        assert_eq!(verify(s, None, Some(TS), b, now), Err(Rejection::Missing));
        assert_eq!(verify(s, Some(SIG), None, b, now), Err(Rejection::Missing));
        assert_eq!(verify(s, Some("a2114d57"), Some(TS), b, now), Err(Rejection::Malformed));
        assert_eq!(verify(s, Some("v0=zz"), Some(TS), b, now), Err(Rejection::Malformed));
        assert_eq!(verify(s, Some("v0=abcd"), Some(TS), b, now), Err(Rejection::Malformed));
        assert_eq!(verify(s, Some(SIG), Some("-5"), b, now), Err(Rejection::Malformed));
        assert_eq!(verify(s, Some(SIG), Some("soon"), b, now), Err(Rejection::Malformed));
        // One changed byte of the body, or another secret: forged.
        let mut tampered = BODY.to_string();
        tampered = tampered.replace("roadrunner", "roadrunnes");
        assert_eq!(verify(s, Some(SIG), Some(TS), tampered.as_bytes(), now), Err(Rejection::Mismatch));
        assert_eq!(verify(b"another-secret", Some(SIG), Some(TS), b, now), Err(Rejection::Mismatch));
        // Correctly signed but outside the window, either way: a replay.
        assert_eq!(verify(s, Some(SIG), Some(TS), b, now + 301), Err(Rejection::Stale));
        assert_eq!(verify(s, Some(SIG), Some(TS), b, now - 301), Err(Rejection::Stale));
    }

    #[test]
    fn slack_morphism_vector() {
        let sig = sign(b"fa2c05deeef5a4077494e89f54394de0", "1531420618", b"test-body");
        assert_eq!(sig, "v0=baa91ef62d346e56607bbdd278a8acd570b91226854f15a382f43d33be42f666");
    }
}
