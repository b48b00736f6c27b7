//! The session cookie: the signed-in API token, sealed (XChaCha20-Poly1305)
//! with an expiry, so the cookie never holds the token itself — a copy of
//! the cookie is not a copy of the API token, and an altered or expired one
//! does not open. The key is the platform's (derived from its secrets key)
//! in `bifrost up`, `BIFROST_SESSION_KEY` for `bifrost-web`.

use base64::Engine;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// The HttpOnly cookie holding the sealed session.
pub const COOKIE: &str = "bifrost_session";
/// How long a sign-in lasts.
pub const MAX_AGE_SECS: u64 = 30 * 24 * 3600;
const AAD: &[u8] = b"bifrost-session-v1";
const NONCE: usize = 24;

#[derive(Clone)]
pub struct SessionKey {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl SessionKey {
    /// From 32 key bytes.
    pub fn new(key: [u8; 32]) -> SessionKey {
        SessionKey { cipher: XChaCha20Poly1305::new(&key.into()) }
    }

    /// From `BIFROST_SESSION_KEY` (64 hex digits or base64 of 32 bytes).
    pub fn parse(text: &str) -> Result<SessionKey, String> {
        let t = text.trim();
        let bytes = if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..32).map(|i| u8::from_str_radix(&t[2 * i..2 * i + 2], 16).unwrap_or(0)).collect::<Vec<u8>>()
        } else {
            base64::engine::general_purpose::STANDARD.decode(t).map_err(|_| "expected 64 hex digits or base64")?
        };
        let key: [u8; 32] =
            bytes.try_into().map_err(|b: Vec<u8>| format!("the session key has {} bytes; it needs 32", b.len()))?;
        Ok(SessionKey::new(key))
    }

    /// A key for this process only (sessions end when it restarts).
    pub fn random() -> SessionKey {
        SessionKey { cipher: XChaCha20Poly1305::new(&XChaCha20Poly1305::generate_key(&mut OsRng)) }
    }

    /// The cookie value for a signed-in token.
    pub fn seal(&self, token: &str) -> String {
        let plain = format!("{}:{token}", now() + MAX_AGE_SECS);
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ct = self.cipher.encrypt(&nonce, Payload { msg: plain.as_bytes(), aad: AAD }).unwrap_or_default();
        let mut raw = nonce.to_vec();
        raw.extend_from_slice(&ct);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    /// The token in a cookie value, if it opens and has not expired.
    pub fn open(&self, value: &str) -> Option<String> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(value.trim()).ok()?;
        if raw.len() <= NONCE {
            return None;
        }
        let (nonce, ct) = raw.split_at(NONCE);
        let plain = self.cipher.decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad: AAD }).ok()?;
        let plain = String::from_utf8(plain).ok()?;
        let (exp, token) = plain.split_once(':')?;
        (exp.parse::<u64>().ok()? > now()).then(|| token.to_string())
    }
}

/// The `Set-Cookie` value that signs in (`Some(sealed)`) or out (`None`).
/// `SameSite=Strict`: no other site's page, link or form carries it.
pub fn cookie(sealed: Option<&str>, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    match sealed {
        Some(v) => format!("{COOKIE}={v}; Path=/; HttpOnly; SameSite=Strict; Max-Age={MAX_AGE_SECS}{secure}"),
        None => format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_holds_a_sealed_token_not_the_token() {
        let k = SessionKey::new([9; 32]);
        let v = k.seal("bft_secret-token");
        assert!(!v.contains("bft_") && !v.contains("secret"));
        assert_eq!(k.open(&v).as_deref(), Some("bft_secret-token"));
        // Another key, or an altered value: no session.
        assert_eq!(SessionKey::new([8; 32]).open(&v), None);
        let mut altered = v.clone().into_bytes();
        let last = altered.len() - 2;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(k.open(&String::from_utf8(altered).expect("utf8")), None);
        // The raw token itself is not a session.
        assert_eq!(k.open("bft_secret-token"), None);
    }

    #[test]
    fn the_cookie_is_strict_http_only_and_secure_on_https() {
        let on = cookie(Some("v"), true);
        assert!(on.contains("HttpOnly") && on.contains("SameSite=Strict") && on.contains("; Secure"));
        assert!(!cookie(Some("v"), false).contains("Secure"));
        assert!(cookie(None, false).contains("Max-Age=0"));
    }

    #[test]
    fn a_session_key_must_be_32_bytes() {
        assert!(SessionKey::parse("abcd").is_err());
        assert!(SessionKey::parse(&"ab".repeat(32)).is_ok());
    }
}
