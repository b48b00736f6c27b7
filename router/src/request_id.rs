//! Every request gets an `X-Request-Id`: the client's own if it is 1–128
//! visible ASCII characters, else a new one. The app sees it, the response
//! echoes it and the access log shows it.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::header::{HeaderName, HeaderValue};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A per-process random prefix and a counter: unique without a syscall.
static PREFIX: LazyLock<u64> = LazyLock::new(|| {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.finish()
});
static NEXT: AtomicU64 = AtomicU64::new(0);

fn valid(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    (1..=128).contains(&b.len()) && b.iter().all(|c| (0x21..=0x7e).contains(c))
}

/// 24 hex digits: the prefix's 16, then the counter's low 32 bits (written
/// on the stack: this runs on every request).
fn new_id() -> HeaderValue {
    let id = render(*PREFIX, NEXT.fetch_add(1, Ordering::Relaxed));
    HeaderValue::from_bytes(&id).unwrap_or(HeaderValue::from_static("-"))
}

fn render(prefix: u64, n: u64) -> [u8; 24] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = [0u8; 24];
    for (i, d) in id.iter_mut().enumerate() {
        let nibble = if i < 16 { prefix >> (60 - 4 * i) } else { n >> (28 - 4 * (i - 16)) };
        *d = HEX[(nibble & 0xf) as usize];
    }
    id
}

layer!(RequestIdLayer => RequestId, |self, mut req| {
    let id = match req.headers().get(X_REQUEST_ID) {
        Some(v) if valid(v) => v.clone(),
        _ => new_id(),
    };
    req.headers_mut().insert(X_REQUEST_ID, id.clone());
    let fut = self.inner.call(req);
    Box::pin(async move {
        let mut resp = fut.await?;
        resp.headers_mut().insert(X_REQUEST_ID, id);
        Ok(resp)
    })
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clients_id_is_kept_only_if_it_is_short_visible_ascii() {
        assert!(valid(&HeaderValue::from_static("abc-123")));
        assert!(!valid(&HeaderValue::from_static("")));
        assert!(!valid(&HeaderValue::from_static("has space")));
        assert!(!valid(&HeaderValue::from_str(&"x".repeat(129)).expect("v")));
        assert_ne!(new_id(), new_id());
    }

    #[test]
    fn a_new_id_is_the_prefix_and_the_counters_low_32_bits_in_hex() {
        for (prefix, n) in [(0, 0), (u64::MAX, u64::MAX), (0x0123_4567_89ab_cdef, 0x1_dead_beef), (42, 7)] {
            let id = render(prefix, n);
            assert_eq!(std::str::from_utf8(&id).expect("ascii"), format!("{prefix:016x}{:08x}", n & 0xffff_ffff));
        }
    }
}
