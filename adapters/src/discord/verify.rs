//! Interaction signatures: Ed25519 over `timestamp + raw body` with the application's public
//! key (serenity's `Verifier`), plus runbot's own ±5-minute window on the timestamp — Discord
//! documents none, and without one a captured request could be replayed forever. Runs on the
//! raw bytes before anything is parsed; every refusal says why, so the endpoint answers 401
//! and counts it.

use serenity::interactions_endpoint::Verifier as Ed25519;

pub use crate::signature::Rejection;
use crate::signature::{parse_timestamp, within_window};

/// The application's public key, ready to check requests.
#[derive(Clone)]
pub struct Verifier {
    key: Ed25519,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier(ed25519)")
    }
}

impl Verifier {
    /// From the hex public key of the Developer Portal (`[discord] public_key`). Never panics:
    /// a key that is not 64 hex digits, or not a valid Ed25519 point, is an error.
    pub fn new(public_key_hex: &str) -> Result<Verifier, String> {
        let raw = hex::decode(public_key_hex.trim()).map_err(|_| "the public key is not hexadecimal".to_string())?;
        let bytes: [u8; 32] = raw.try_into().map_err(|_| "the public key must be 32 bytes (64 hex digits)".to_string())?;
        let key = Ed25519::try_new(bytes).map_err(|e| format!("the public key is not usable: {e}"))?;
        Ok(Verifier { key })
    }

    /// Checks the two headers against the raw body at `now` (unix seconds).
    pub fn verify(&self, signature: Option<&str>, timestamp: Option<&str>, body: &[u8], now: i64) -> Result<(), Rejection> {
        let (Some(sig), Some(ts)) = (signature, timestamp) else {
            return Err(Rejection::Missing);
        };
        let (sig, ts) = (sig.trim(), ts.trim());
        let t = parse_timestamp(ts)?;
        if sig.len() != 128 || !sig.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Rejection::Malformed);
        }
        // The signed message is the timestamp exactly as sent, then the body.
        if self.key.verify(sig, ts, body).is_err() {
            return Err(Rejection::Mismatch);
        }
        within_window(t, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // PLATFORM-NOTES §4.1: ed25519-dalek, seed = 32 bytes of 0x07.
    const PUBLIC: &str = "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c";
    const TS: &str = "1700000000";
    const BODY: &str = r#"{"type":1}"#;
    const SIG: &str =
        "f7caed702889e902c2cde4a4fb00f601284aa47ff4caf84588d7c8c3d8fe7183fd73e13e30d0c07d1515b6684f7b3cfaa231c421768d9667b104f760cf0da302";
    const NOW: i64 = 1_700_000_000;

    fn v() -> Verifier {
        Verifier::new(PUBLIC).expect("test key")
    }

    #[test]
    fn the_deterministic_vector_verifies_within_the_window() {
        assert_eq!(v().verify(Some(SIG), Some(TS), BODY.as_bytes(), NOW), Ok(()));
        assert_eq!(v().verify(Some(SIG), Some(TS), BODY.as_bytes(), NOW + 300), Ok(()));
        assert_eq!(v().verify(Some(SIG), Some(TS), BODY.as_bytes(), NOW - 300), Ok(()));
        // Upper-case hex is the same signature.
        assert_eq!(v().verify(Some(&SIG.to_uppercase()), Some(TS), BODY.as_bytes(), NOW), Ok(()));
    }

    #[test]
    fn tampered_stale_missing_and_malformed_are_told_apart() {
        let b = BODY.as_bytes();
        assert_eq!(v().verify(None, Some(TS), b, NOW), Err(Rejection::Missing));
        assert_eq!(v().verify(Some(SIG), None, b, NOW), Err(Rejection::Missing));
        assert_eq!(v().verify(Some(&SIG[..126]), Some(TS), b, NOW), Err(Rejection::Malformed));
        assert_eq!(v().verify(Some(&format!("{}zz", &SIG[..126])), Some(TS), b, NOW), Err(Rejection::Malformed));
        assert_eq!(v().verify(Some(SIG), Some("-1700000000"), b, NOW), Err(Rejection::Malformed));
        assert_eq!(v().verify(Some(SIG), Some("soon"), b, NOW), Err(Rejection::Malformed));
        // One changed byte of the body, of the timestamp, or of the signature: a mismatch.
        assert_eq!(v().verify(Some(SIG), Some(TS), br#"{"type":2}"#, NOW), Err(Rejection::Mismatch));
        assert_eq!(v().verify(Some(SIG), Some("1700000001"), b, NOW), Err(Rejection::Mismatch));
        let mut flipped = SIG.to_string();
        flipped.replace_range(0..1, "e");
        assert_eq!(v().verify(Some(&flipped), Some(TS), b, NOW), Err(Rejection::Mismatch));
        // Correctly signed but outside the window, either way: stale.
        assert_eq!(v().verify(Some(SIG), Some(TS), b, NOW + 301), Err(Rejection::Stale));
        assert_eq!(v().verify(Some(SIG), Some(TS), b, NOW - 301), Err(Rejection::Stale));
    }

    #[test]
    fn another_key_does_not_verify_and_bad_keys_are_errors() {
        // Another application's key (seed 32 × 0x08), computed by the sandbox's signer.
        let other = Verifier::new(&runbot_sandbox::discord::public_key_hex(&[8u8; 32])).expect("valid key");
        assert_eq!(other.verify(Some(SIG), Some(TS), BODY.as_bytes(), NOW), Err(Rejection::Mismatch));
        assert!(Verifier::new("xyz").is_err());
        assert!(Verifier::new(&PUBLIC[..62]).is_err());
        assert!(Verifier::new(&format!("{PUBLIC}00")).is_err());
    }

    #[test]
    fn the_sandbox_signs_like_the_vector() {
        use runbot_sandbox::discord::{TEST_PUBLIC_KEY, TEST_SEED, public_key_hex, sign};
        assert_eq!(public_key_hex(&TEST_SEED), PUBLIC);
        assert_eq!(TEST_PUBLIC_KEY, PUBLIC);
        assert_eq!(sign(TS, BODY.as_bytes()), SIG);
    }
}
