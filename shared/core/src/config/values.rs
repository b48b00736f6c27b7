//! Scalar formats used in deploy.toml: durations, Kubernetes quantities,
//! rate limits, header names. Each parser returns what it expected on error.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A duration written like `"30s"`, `"5m"`, `"1m30s"`, `"250ms"`, `"1h"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration {
    pub millis: u64,
}

impl Duration {
    pub const fn from_secs(s: u64) -> Self {
        Duration { millis: s * 1000 }
    }
    pub const fn from_millis(ms: u64) -> Self {
        Duration { millis: ms }
    }
    pub fn as_std(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.millis)
    }
}

pub const DURATION_EXPECTED: &str = "a duration like \"30s\", \"5m\", \"1m30s\" or \"250ms\"";

pub fn parse_duration(s: &str) -> Result<Duration, &'static str> {
    let s = s.trim();
    if s.is_empty() {
        return Err(DURATION_EXPECTED);
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(DURATION_EXPECTED);
        }
        let n: u64 = rest[..digits].parse().map_err(|_| DURATION_EXPECTED)?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit_ms: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(DURATION_EXPECTED),
        };
        rest = &rest[unit_len..];
        total = n.checked_mul(unit_ms).and_then(|v| total.checked_add(v)).ok_or(DURATION_EXPECTED)?;
    }
    Ok(Duration { millis: total })
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = self.millis;
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
            if ms >= size {
                write!(f, "{}{unit}", ms / size)?;
                ms %= size;
            }
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

/// A CPU amount as Kubernetes writes it: `"250m"`, `"0.5"`, `"2"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cpu {
    pub raw: String,
    pub millicores: u64,
}

pub const CPU_EXPECTED: &str = "a Kubernetes CPU quantity like \"250m\", \"0.5\" or \"2\"";

pub fn parse_cpu(s: &str) -> Result<Cpu, &'static str> {
    let (num, scale) = match s.strip_suffix('m') {
        Some(n) => (n, 1.0),
        None => (s, 1000.0),
    };
    let v = parse_decimal(num).ok_or(CPU_EXPECTED)? * scale;
    if v < 1.0 || v.fract() != 0.0 && scale == 1.0 {
        return Err("a CPU quantity of at least \"1m\" (whole millicores)");
    }
    Ok(Cpu { raw: s.to_string(), millicores: v.round() as u64 })
}

/// A memory amount as Kubernetes writes it: `"128Mi"`, `"1Gi"`, `"512M"`, `"1e9"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    pub raw: String,
    pub bytes: u64,
}

pub const MEMORY_EXPECTED: &str = "a Kubernetes memory quantity like \"128Mi\", \"1Gi\" or \"512M\"";

pub fn parse_memory(s: &str) -> Result<Memory, &'static str> {
    const SUFFIXES: [(&str, f64); 12] = [
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("Pi", 1_125_899_906_842_624.0),
        ("Ei", 1_152_921_504_606_846_976.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let (num, mult) = SUFFIXES.iter().find_map(|(suf, m)| s.strip_suffix(suf).map(|n| (n, *m))).unwrap_or((s, 1.0));
    let bytes = match num.split_once(['e', 'E']) {
        Some((mant, exp)) if mult == 1.0 => {
            let exp: i32 = exp.parse().map_err(|_| MEMORY_EXPECTED)?;
            parse_decimal(mant).ok_or(MEMORY_EXPECTED)? * 10f64.powi(exp)
        }
        _ => parse_decimal(num).ok_or(MEMORY_EXPECTED)? * mult,
    };
    if bytes < 1_048_576.0 {
        return Err("a memory quantity of at least \"1Mi\"");
    }
    if !bytes.is_finite() || bytes > u64::MAX as f64 {
        return Err(MEMORY_EXPECTED);
    }
    Ok(Memory { raw: s.to_string(), bytes: bytes as u64 })
}

/// `123` or `1.5`: plain decimal digits, no sign, no exponent.
fn parse_decimal(s: &str) -> Option<f64> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !digits(int) || !digits(frac) || (s.contains('.') && frac.is_empty()) {
        return None;
    }
    s.parse().ok()
}

/// Whose requests one rate limit counts: the whole app's, each client IP's,
/// or each value of a request header's (`"header:X-Api-Key"`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum RateLimitKey {
    #[default]
    App,
    ClientIp,
    /// The header's name, as written.
    Header(String),
}

pub const RATE_LIMIT_KEY_EXPECTED: &str = "\"app\", \"client_ip\" or \"header:<Name>\" (e.g. \"header:X-Api-Key\")";

pub fn parse_rate_limit_key(s: &str) -> Result<RateLimitKey, &'static str> {
    match s {
        "app" => Ok(RateLimitKey::App),
        "client_ip" => Ok(RateLimitKey::ClientIp),
        _ => match s.strip_prefix("header:") {
            Some(h) if is_header_name(h) => Ok(RateLimitKey::Header(h.to_string())),
            _ => Err(RATE_LIMIT_KEY_EXPECTED),
        },
    }
}

impl fmt::Display for RateLimitKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RateLimitKey::App => f.write_str("app"),
            RateLimitKey::ClientIp => f.write_str("client_ip"),
            RateLimitKey::Header(h) => write!(f, "header:{h}"),
        }
    }
}

impl Serialize for RateLimitKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RateLimitKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_rate_limit_key(&s).map_err(serde::de::Error::custom)
    }
}

/// A per-app request limit: `"100/s"`, `"6000/m"`, `"10000/h"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: u32,
    pub per: Duration,
}

pub const RATE_LIMIT_EXPECTED: &str = "a rate like \"100/s\", \"6000/m\" or \"10000/h\"";

pub fn parse_rate_limit(s: &str) -> Result<RateLimit, &'static str> {
    let (n, unit) = s.split_once('/').ok_or(RATE_LIMIT_EXPECTED)?;
    let requests: u32 = n.trim().parse().map_err(|_| RATE_LIMIT_EXPECTED)?;
    if requests == 0 {
        return Err("a rate of at least 1 request (e.g. \"1/s\")");
    }
    let per = match unit.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        _ => return Err(RATE_LIMIT_EXPECTED),
    };
    Ok(RateLimit { requests, per })
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.millis {
            1_000 => "s",
            60_000 => "m",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.requests)
    }
}

impl Serialize for RateLimit {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RateLimit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_rate_limit(&s).map_err(serde::de::Error::custom)
    }
}

/// An HTTP header name (RFC 9110 token).
pub fn is_header_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Env var names the app may set: `[A-Z_][A-Z0-9_]*`.
pub fn is_env_key(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_uppercase() || b == b'_')
        && bytes.all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// A path inside the repository: relative, no `..`, not empty.
pub fn is_repo_path(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('/')
        && !s.contains('\\')
        && s.split('/').all(|part| part != ".." && !part.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        for bad in ["", "30", "s", "30 s", "-1s", "1d", "1.5s", "99999999999999999999s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        for ms in [0, 1, 999, 1000, 61_000, 3_600_250] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse_duration(&d.to_string()), Ok(d));
        }
    }

    #[test]
    fn cpu_quantities() {
        assert_eq!(parse_cpu("250m").map(|c| c.millicores), Ok(250));
        assert_eq!(parse_cpu("0.5").map(|c| c.millicores), Ok(500));
        assert_eq!(parse_cpu("2").map(|c| c.millicores), Ok(2000));
        for bad in ["", "m", "0", "0m", "1.5m", "-1", "1 core", "abc", "1."] {
            assert!(parse_cpu(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn memory_quantities() {
        assert_eq!(parse_memory("128Mi").map(|m| m.bytes), Ok(128 << 20));
        assert_eq!(parse_memory("1Gi").map(|m| m.bytes), Ok(1 << 30));
        assert_eq!(parse_memory("512M").map(|m| m.bytes), Ok(512_000_000));
        assert_eq!(parse_memory("129e6").map(|m| m.bytes), Ok(129_000_000));
        assert_eq!(parse_memory("134217728").map(|m| m.bytes), Ok(134_217_728));
        for bad in ["", "128mb", "Mi", "1Ki", "12X", "-5Mi", "1.Gi"] {
            assert!(parse_memory(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rate_limits() {
        assert_eq!(parse_rate_limit("100/s"), Ok(RateLimit { requests: 100, per: Duration::from_secs(1) }));
        assert_eq!(parse_rate_limit("6000/m").map(|r| r.per), Ok(Duration::from_secs(60)));
        for bad in ["100", "0/s", "x/s", "10/d", "/s"] {
            assert!(parse_rate_limit(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rate_limit_keys_round_trip_and_refuse_what_is_not_one() {
        for good in ["app", "client_ip", "header:X-Api-Key"] {
            assert_eq!(parse_rate_limit_key(good).map(|k| k.to_string()).as_deref(), Ok(good));
        }
        for bad in ["", "ip", "header:", "header:Bad Header", "cookie:session"] {
            assert_eq!(parse_rate_limit_key(bad), Err(RATE_LIMIT_KEY_EXPECTED), "{bad:?}");
        }
    }

    #[test]
    fn names() {
        assert!(is_env_key("LOG_LEVEL") && is_env_key("_X1"));
        assert!(!is_env_key("log") && !is_env_key("1X") && !is_env_key("A-B") && !is_env_key(""));
        assert!(is_header_name("X-Request-Id") && !is_header_name("Bad Header"));
        assert!(is_repo_path("routes/app.lua") && !is_repo_path("../x") && !is_repo_path("/etc/x"));
    }
}
