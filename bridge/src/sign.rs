//! Webhook signatures: `Waymark-Signature: sha256=<hex>`, the lowercase hex HMAC-SHA256 of the
//! exact request body under the target's secret (docs/bridge.md shows how to verify it).

/// Header that carries the signature.
pub const HEADER: &str = "Waymark-Signature";

/// The header value for `body` under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, body);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in tag.as_ref() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Checks a header value against `body` (constant time), as a receiver would.
pub fn verify(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex) = header.strip_prefix("sha256=") else {
        return false;
    };
    if hex.len() != 64 {
        return false;
    }
    let mut tag = [0u8; 32];
    for (i, byte) in tag.iter_mut().enumerate() {
        match u8::from_str_radix(&hex[2 * i..2 * i + 2], 16) {
            Ok(b) => *byte = b,
            Err(_) => return false,
        }
    }
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    ring::hmac::verify(&key, body, &tag).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test case 2.
    #[test]
    fn rfc4231_vector() {
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn verifies() {
        let s = signature(b"k", b"body");
        assert!(verify(b"k", b"body", &s));
        assert!(!verify(b"k", b"body!", &s));
        assert!(!verify(b"other", b"body", &s));
        assert!(!verify(b"k", b"body", "sha256=zz"));
        assert!(!verify(b"k", b"body", &s.replace("sha256=", "sha1=")));
    }
}
