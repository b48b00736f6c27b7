//! Secrets: API tokens (stored hashed) and GitHub webhook signatures.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Prefix that makes Bifrost tokens recognisable to secret scanners.
pub const TOKEN_PREFIX: &str = "bft_";

/// A new random API token (256 bits).
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// A new random webhook secret.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// What the store keeps: SHA-256 of the token. Tokens carry 256 bits of
/// entropy, so a fast hash is enough (no password stretching needed).
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Checks `X-Hub-Signature-256: sha256=<hex>` over the raw body, in constant time.
pub fn verify_github_signature(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig.trim()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// The header value GitHub would send for `body` signed with `secret`.
pub fn sign_github(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_signature_round_trip() {
        let body = br#"{"zen":"Keep it logically awesome."}"#;
        let sig = sign_github(b"s3cret", body);
        assert!(verify_github_signature(b"s3cret", body, &sig));
        assert!(!verify_github_signature(b"other", body, &sig));
        assert!(!verify_github_signature(b"s3cret", b"tampered", &sig));
        assert!(!verify_github_signature(b"s3cret", body, "sha1=abc"));
        assert!(!verify_github_signature(b"s3cret", body, "sha256=zz"));
    }

    #[test]
    fn known_github_vector() {
        // From GitHub's docs: secret "It's a Secret to Everybody", payload "Hello, World!".
        let sig = sign_github(b"It's a Secret to Everybody", b"Hello, World!");
        assert_eq!(sig, "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17");
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let (a, b) = (generate_token(), generate_token());
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() > 40);
        assert_eq!(hash_token(&a).len(), 64);
        assert_ne!(hash_token(&a), hash_token(&b));
    }
}

/// The token a replica's health sidecar presents: an HMAC of its identity
/// under the platform's ingest key, so the platform stores no per-replica
/// secrets and a sidecar can only report for its own replica.
pub fn sidecar_token(key: &[u8], deployment_id: &str, replica: u32) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(format!("sidecar:{deployment_id}/{replica}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Checks a sidecar's token in constant time.
pub fn verify_sidecar_token(key: &[u8], deployment_id: &str, replica: u32, token: &str) -> bool {
    let Ok(sig) = hex::decode(token.trim()) else { return false };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else { return false };
    mac.update(format!("sidecar:{deployment_id}/{replica}").as_bytes());
    mac.verify_slice(&sig).is_ok()
}

#[cfg(test)]
mod sidecar_token_tests {
    use super::*;

    #[test]
    fn a_token_is_bound_to_its_replica() {
        let t = sidecar_token(b"key", "d1", 0);
        assert!(verify_sidecar_token(b"key", "d1", 0, &t));
        assert!(!verify_sidecar_token(b"key", "d1", 1, &t));
        assert!(!verify_sidecar_token(b"key", "d2", 0, &t));
        assert!(!verify_sidecar_token(b"other", "d1", 0, &t));
        assert!(!verify_sidecar_token(b"key", "d1", 0, "zz"));
    }
}
