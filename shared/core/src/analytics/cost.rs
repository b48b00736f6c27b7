//! What an app's replicas cost, by OpenCost's allocation rule: a replica
//! is charged for the larger of what it asked for and what it used,
//!
//! ```text
//! cost = max(requested, used) CPU × hours × CPU price
//!      + max(requested, used) memory × hours × memory price
//! ```
//!
//! and the part of that it did not use is its *idle* share (reported
//! beside the total, not on top of it). A stretch with no usage reading is
//! charged at the request, with no idle share claimed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Prices per hour. The defaults are GKE Autopilot's list prices for
/// general-purpose pods in us-central1 (USD per vCPU-hour and per
/// GiB-hour); an admin sets the region's own.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Prices {
    pub currency: String,
    pub cpu_core_hour: f64,
    pub memory_gib_hour: f64,
}

impl Default for Prices {
    fn default() -> Self {
        Prices { currency: "USD".into(), cpu_core_hour: 0.0445, memory_gib_hour: 0.0049225 }
    }
}

impl Prices {
    /// Both prices finite and not negative, the currency a 3-letter code.
    pub fn check(&self) -> Result<(), String> {
        for (name, v) in [("cpu_core_hour", self.cpu_core_hour), ("memory_gib_hour", self.memory_gib_hour)] {
            if !v.is_finite() || v < 0.0 {
                return Err(format!("{name} must be a price of 0 or more, not {v}"));
            }
        }
        if self.currency.len() != 3 || !self.currency.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(format!("currency must be a 3-letter code like USD, not {:?}", self.currency));
        }
        Ok(())
    }
}

/// One replica over one stretch of time (a minute's bucket of sidecar
/// reports, say): what it asked for and, when known, what it used.
#[derive(Clone, Debug, PartialEq)]
pub struct Usage {
    pub deployment: String,
    pub seconds: f64,
    pub requested_cores: f64,
    pub requested_gib: f64,
    pub used_cores: Option<f64>,
    pub used_gib: Option<f64>,
}

impl Usage {
    /// (CPU, memory, idle) charged for this stretch at `prices`.
    pub fn charge(&self, prices: &Prices) -> (f64, f64, f64) {
        charge(self.seconds, (self.requested_cores, self.requested_gib), (self.used_cores, self.used_gib), prices)
    }
}

/// (CPU, memory, idle) charged for `seconds` of one replica that asked for
/// `requested` (cores, GiB) and used `used`: the larger of the two.
pub fn charge(
    seconds: f64,
    requested: (f64, f64),
    used: (Option<f64>, Option<f64>),
    prices: &Prices,
) -> (f64, f64, f64) {
    let hours = seconds.max(0.0) / 3600.0;
    let cores = requested.0.max(used.0.unwrap_or(0.0));
    let gib = requested.1.max(used.1.unwrap_or(0.0));
    let idle_cores = used.0.map_or(0.0, |u| cores - u);
    let idle_gib = used.1.map_or(0.0, |u| gib - u);
    (
        cores * hours * prices.cpu_core_hour,
        gib * hours * prices.memory_gib_hour,
        idle_cores * hours * prices.cpu_core_hour + idle_gib * hours * prices.memory_gib_hour,
    )
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    pub total: f64,
    pub cpu: f64,
    pub memory: f64,
    /// Of `total`, what was allocated and not used.
    pub idle: f64,
    pub by_deployment: BTreeMap<String, f64>,
    pub requests: u64,
    /// `total` per 1,000 requests the routers answered (none with none).
    pub per_1000_requests: Option<f64>,
}

/// The cost of `usage` at `prices`, with the `requests` answered meanwhile.
pub fn allocate(usage: &[Usage], prices: &Prices, requests: u64) -> Cost {
    let mut c = Cost { requests, ..Cost::default() };
    for u in usage {
        let (cpu, memory, idle) = u.charge(prices);
        c.cpu += cpu;
        c.memory += memory;
        c.idle += idle;
        *c.by_deployment.entry(u.deployment.clone()).or_default() += cpu + memory;
    }
    c.total = c.cpu + c.memory;
    c.per_1000_requests = (requests > 0).then(|| c.total * 1000.0 / requests as f64);
    c
}

impl Cost {
    /// Adds another window's cost (of the same currency).
    pub fn add(&mut self, other: &Cost) {
        self.total += other.total;
        self.cpu += other.cpu;
        self.memory += other.memory;
        self.idle += other.idle;
        for (d, v) in &other.by_deployment {
            *self.by_deployment.entry(d.clone()).or_default() += v;
        }
        self.requests += other.requests;
        self.per_1000_requests = (self.requests > 0).then(|| self.total * 1000.0 / self.requests as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(deployment: &str, used_cores: Option<f64>, used_gib: Option<f64>) -> Usage {
        Usage {
            deployment: deployment.into(),
            seconds: 3600.0,
            requested_cores: 0.5,
            requested_gib: 1.0,
            used_cores,
            used_gib,
        }
    }

    #[test]
    fn a_replica_pays_for_the_larger_of_request_and_use() {
        let prices = Prices { currency: "USD".into(), cpu_core_hour: 0.04, memory_gib_hour: 0.01 };
        // d1: under its request for an hour (0.1 core, 0.25 GiB used);
        // d2: over it (2 cores, 3 GiB); d3: no reading.
        let c = allocate(
            &[usage("d1", Some(0.1), Some(0.25)), usage("d2", Some(2.0), Some(3.0)), usage("d3", None, None)],
            &prices,
            40_000,
        );
        // d1: 0.5 × 0.04 + 1 × 0.01 = 0.03; d2: 2 × 0.04 + 3 × 0.01 = 0.11;
        // d3: 0.03 at the request.
        assert!((c.by_deployment["d1"] - 0.03).abs() < 1e-12, "{c:?}");
        assert!((c.by_deployment["d2"] - 0.11).abs() < 1e-12, "{c:?}");
        assert!((c.by_deployment["d3"] - 0.03).abs() < 1e-12, "{c:?}");
        assert!((c.total - 0.17).abs() < 1e-12 && (c.cpu + c.memory - c.total).abs() < 1e-12);
        // Idle: d1's unused 0.4 core and 0.75 GiB only.
        assert!((c.idle - (0.4 * 0.04 + 0.75 * 0.01)).abs() < 1e-12, "{}", c.idle);
        assert!(c.per_1000_requests.is_some_and(|p| (p - 0.17 / 40.0).abs() < 1e-12));
        assert_eq!(allocate(&[], &prices, 0).per_1000_requests, None);
    }

    #[test]
    fn the_default_prices_are_autopilots_and_bad_prices_are_refused() {
        let p = Prices::default();
        assert!(p.check().is_ok());
        // A 0.25-core, 0.5 GiB replica for 30 days, to the cent.
        let month = Usage {
            deployment: "d".into(),
            seconds: 30.0 * 86_400.0,
            requested_cores: 0.25,
            requested_gib: 0.5,
            used_cores: None,
            used_gib: None,
        };
        let c = allocate(&[month], &p, 0);
        assert_eq!((c.total * 100.0).round() / 100.0, 9.78);
        for (bad, says) in [
            (Prices { cpu_core_hour: -1.0, ..Prices::default() }, "cpu_core_hour"),
            (Prices { memory_gib_hour: f64::NAN, ..Prices::default() }, "memory_gib_hour"),
            (Prices { currency: "dollars".into(), ..Prices::default() }, "currency"),
        ] {
            assert!(bad.check().is_err_and(|e| e.contains(says)), "{says}");
        }
    }
}
