//! Secrets at rest: values sealed with XChaCha20-Poly1305 (a random 192-bit
//! nonce each time, so one key seals any number of values safely) before a
//! store sees them. The key never sits beside the data: embedded it is a
//! 0600 file or `BIFROST_SECRETS_KEY`; on GCP the Secret Manager secret
//! `bifrost-encryption-key`. Each value is bound to where it belongs (its
//! project and name, as associated data), so a sealed value copied to
//! another project's row does not open.

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const PREFIX: &str = "sealed:v1:";
const NONCE: usize = 24;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SealError {
    #[error("{0}")]
    BadKey(String),
    #[error("a sealed value did not open (wrong key, or the value was moved or altered)")]
    Tampered,
    #[error("the value is not sealed")]
    NotSealed,
}

/// Seals and opens values with one key.
#[derive(Clone)]
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

/// Reads a key written as 64 hex digits or as base64 of 32 bytes. An empty
/// or short key is an error, never a weak key.
pub fn parse_key(text: &str) -> Result<Vec<u8>, SealError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(SealError::BadKey("the key is empty".into()));
    }
    let bytes = if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(t).map_err(|e| SealError::BadKey(e.to_string()))?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(t)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t))
            .map_err(|_| SealError::BadKey("expected 64 hex digits or base64 of 32 bytes".into()))?
    };
    if bytes.len() < 32 {
        return Err(SealError::BadKey(format!("the key has {} bytes; it needs 32", bytes.len())));
    }
    Ok(bytes)
}

/// A fresh random 32-byte key, as hex.
pub fn generate_key() -> String {
    use rand::RngCore;
    let mut k = [0u8; 32];
    rand::rng().fill_bytes(&mut k);
    hex::encode(k)
}

/// A 32-byte key for one purpose, derived from a master key
/// (HMAC-SHA256), so secrets, webhook secrets and session cookies never
/// share a key.
pub fn derive_key(master: &[u8], purpose: &str) -> Result<[u8; 32], SealError> {
    if master.len() < 32 {
        return Err(SealError::BadKey(format!("the key has {} bytes; it needs 32", master.len())));
    }
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(master).map_err(|e| SealError::BadKey(e.to_string()))?;
    mac.update(b"bifrost/");
    mac.update(purpose.as_bytes());
    Ok(mac.finalize().into_bytes().into())
}

impl SecretBox {
    /// A box for one purpose (see [`derive_key`]).
    pub fn derive(master: &[u8], purpose: &str) -> Result<SecretBox, SealError> {
        Ok(SecretBox { cipher: XChaCha20Poly1305::new(&derive_key(master, purpose)?.into()) })
    }

    /// `sealed:v1:<base64url(nonce ‖ ciphertext)>`, bound to `context`.
    pub fn seal(&self, plaintext: &str, context: &str) -> String {
        use rand::RngCore;
        let mut nonce = [0u8; NONCE];
        rand::rng().fill_bytes(&mut nonce);
        let ct = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext.as_bytes(), aad: context.as_bytes() })
            // Encryption fails only for inputs beyond 256 GiB.
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        format!("{PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out))
    }

    pub fn open(&self, sealed: &str, context: &str) -> Result<String, SealError> {
        let body = sealed.strip_prefix(PREFIX).ok_or(SealError::NotSealed)?;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(body).map_err(|_| SealError::Tampered)?;
        if raw.len() < NONCE {
            return Err(SealError::Tampered);
        }
        let (nonce, ct) = raw.split_at(NONCE);
        let pt = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad: context.as_bytes() })
            .map_err(|_| SealError::Tampered)?;
        String::from_utf8(pt).map_err(|_| SealError::Tampered)
    }
}

/// The platform's boxes, each derived from the one master key.
#[derive(Clone, Debug)]
pub struct Keys {
    /// Project secrets (`[env]` values).
    pub secrets: SecretBox,
    /// Projects' GitHub webhook secrets.
    pub webhooks: SecretBox,
}

impl Keys {
    pub fn from_master(master: &[u8]) -> Result<Keys, SealError> {
        Ok(Keys { secrets: SecretBox::derive(master, "secrets")?, webhooks: SecretBox::derive(master, "webhooks")? })
    }

    /// Seals a value for the place `context` names (its box follows from
    /// the context: webhook secrets or project secrets).
    pub fn seal_for(&self, context: &str, plaintext: &str) -> String {
        if context.starts_with("webhook:") {
            self.webhooks.seal(plaintext, context)
        } else {
            self.secrets.seal(plaintext, context)
        }
    }

    /// A webhook secret as stored, opened; a value from before sealing is
    /// plaintext and returned as it is.
    pub fn open_webhook(&self, project_name: &str, stored: &str) -> Result<String, SealError> {
        if is_sealed(stored) {
            self.webhooks.open(stored, &webhook_context(project_name))
        } else {
            Ok(stored.to_string())
        }
    }
}

/// Is this a sealed value (rather than a plaintext one written before
/// values were sealed)?
pub fn is_sealed(value: &str) -> bool {
    value.starts_with(PREFIX)
}

/// The associated data a project's secret is sealed with.
pub fn secret_context(project_id: &str, name: &str) -> String {
    format!("secret:{project_id}:{name}")
}

/// The associated data a project's webhook secret is sealed with (by
/// name: it is sealed before the store gives the project its id).
pub fn webhook_context(project_name: &str) -> String {
    format!("webhook:{project_name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sb() -> SecretBox {
        SecretBox::derive(&[7u8; 32], "secrets").expect("box")
    }

    #[test]
    fn a_sealed_value_opens_only_in_its_own_place() {
        let b = sb();
        let sealed = b.seal("hunter2", &secret_context("p_1", "DB_PASSWORD"));
        assert!(is_sealed(&sealed) && !sealed.contains("hunter2"));
        assert_eq!(b.open(&sealed, &secret_context("p_1", "DB_PASSWORD")).as_deref(), Ok("hunter2"));
        // Moved to another project, or renamed: refused.
        assert_eq!(b.open(&sealed, &secret_context("p_2", "DB_PASSWORD")), Err(SealError::Tampered));
        assert_eq!(b.open(&sealed, &secret_context("p_1", "OTHER")), Err(SealError::Tampered));
        // Another key (or purpose): refused.
        let other = SecretBox::derive(&[7u8; 32], "sessions").expect("box");
        assert_eq!(other.open(&sealed, &secret_context("p_1", "DB_PASSWORD")), Err(SealError::Tampered));
        // Two seals of one value differ (random nonces).
        assert_ne!(sealed, b.seal("hunter2", &secret_context("p_1", "DB_PASSWORD")));
    }

    #[test]
    fn an_empty_or_short_key_is_an_error_not_a_weak_key() {
        assert!(parse_key("").is_err());
        assert!(parse_key("   ").is_err());
        assert!(parse_key("abcd").is_err());
        assert!(SecretBox::derive(b"", "x").is_err());
        let k = generate_key();
        assert_eq!(parse_key(&k).map(|b| b.len()), Ok(32));
    }
}
