//! The time windows an analytics run covers: closed (`[start, end)`, both
//! in the past), aligned on multiples of the schedule's period since the
//! Unix epoch so every instance of a home names the same windows, and
//! written `2026-11-29T10:00Z/1h` on the command line.

use chrono::{DateTime, Duration, NaiveDateTime, Utc};

use crate::domain::Timestamp;

/// How far back a schedule catches up after being away: older windows
/// are left to a backfill (`bifrost analytics run --window …`).
pub const CATCH_UP_LIMIT: Duration = Duration::days(7);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct Window {
    pub start: Timestamp,
    pub end: Timestamp,
}

impl Window {
    pub fn length(&self) -> Duration {
        self.end - self.start
    }

    /// The last full window of `every` before `now` (the default run: the
    /// last full 5 minutes).
    pub fn last_full(now: Timestamp, every: Duration) -> Window {
        let end = align_down(now, every);
        Window { start: end - every, end }
    }

    /// Parses `START/LENGTH`: an RFC 3339 start (seconds and the `Z` may
    /// be shortened: `2026-11-29T10:00Z`) and a length (`5m`, `1h`, `7d`).
    /// The window must have ended by `now`.
    pub fn parse(text: &str, now: Timestamp) -> Result<Window, String> {
        let (start, length) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?}: a window is START/LENGTH, e.g. 2026-11-29T10:00Z/1h"))?;
        let start = parse_start(start)?;
        let length = parse_length(length)?;
        let w = Window { start, end: start + length };
        if w.end > now {
            return Err(format!("the window {w} has not ended yet (it ends at {})", w.end.to_rfc3339()));
        }
        Ok(w)
    }

    /// The windows of `every` a schedule owes after `done_until` (the end
    /// of the last window it finished), oldest first, up to the last full
    /// one before `now` — no further back than [`CATCH_UP_LIMIT`].
    pub fn owed(done_until: Option<Timestamp>, now: Timestamp, every: Duration) -> Vec<Window> {
        let last = Window::last_full(now, every);
        let floor = align_down(now - CATCH_UP_LIMIT, every);
        let mut start = match done_until {
            Some(t) => align_down(t, every).max(floor),
            // A schedule that never ran owes only the last window.
            None => last.start,
        };
        let mut out = vec![];
        while start + every <= last.end {
            out.push(Window { start, end: start + every });
            start += every;
        }
        out
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.length().num_seconds();
        let length = match secs {
            s if s % 86_400 == 0 => format!("{}d", s / 86_400),
            s if s % 3_600 == 0 => format!("{}h", s / 3_600),
            s if s % 60 == 0 => format!("{}m", s / 60),
            s => format!("{s}s"),
        };
        write!(f, "{}/{length}", self.start.format("%Y-%m-%dT%H:%M:%SZ"))
    }
}

/// `t` rounded down to a multiple of `every` since the epoch.
pub fn align_down(t: Timestamp, every: Duration) -> Timestamp {
    let step = every.num_milliseconds().max(1);
    let ms = t.timestamp_millis();
    DateTime::from_timestamp_millis(ms - ms.rem_euclid(step)).unwrap_or(t)
}

fn parse_start(text: &str) -> Result<Timestamp, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let bare = text.strip_suffix('Z').unwrap_or(text);
    for format in ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(bare, format) {
            return Ok(t.and_utc());
        }
    }
    Err(format!("{text:?} is not a start time (UTC, e.g. 2026-11-29T10:00Z)"))
}

/// A schedule's period (`--analytics-every`): `off` (no schedule) or a
/// length from 1 minute to 1 day.
pub fn parse_every(text: &str) -> Result<Option<Duration>, String> {
    if text == "off" {
        return Ok(None);
    }
    let every = parse_length(text)?;
    if every < Duration::minutes(1) || every > Duration::days(1) {
        return Err(format!("{text:?}: the schedule's window is from 1m to 1d (or off)"));
    }
    Ok(Some(every))
}

/// The shortest retention: a window the schedule still owes (up to
/// [`CATCH_UP_LIMIT`] back) is analysed against [`crate::analytics::run::LOOKBACK`]
/// before it, so both must still be kept, and a day more.
pub const MIN_RETENTION: Duration = Duration::days(15);

/// How long the time series are kept (`--retention`): `off` (for ever) or
/// a length of at least [`MIN_RETENTION`].
pub fn parse_retention(text: &str) -> Result<Option<Duration>, String> {
    if text == "off" {
        return Ok(None);
    }
    let keep = parse_length(text)?;
    if keep < MIN_RETENTION {
        return Err(format!(
            "{text:?}: keep at least 15d (a window owed up to 7 days back is analysed against the 7 days before it), or off"
        ));
    }
    Ok(Some(keep))
}

/// A positive whole number of seconds, minutes, hours or days.
pub fn parse_length(text: &str) -> Result<Duration, String> {
    let (n, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: i64 = n.parse().map_err(|_| format!("{text:?} is not a length (e.g. 5m, 1h, 7d)"))?;
    let d = match unit {
        "s" => Duration::seconds(n),
        "m" => Duration::minutes(n),
        "h" => Duration::hours(n),
        "d" => Duration::days(n),
        _ => return Err(format!("{text:?}: a length ends in s, m, h or d")),
    };
    if n <= 0 || d > Duration::days(366) {
        return Err(format!("{text:?}: a length from 1s to 366d"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        DateTime::parse_from_rfc3339(s).expect("time").with_timezone(&Utc)
    }

    #[test]
    fn the_default_window_is_the_last_full_five_minutes() {
        let w = Window::last_full(at("2026-11-29T10:07:31Z"), Duration::minutes(5));
        assert_eq!((w.start, w.end), (at("2026-11-29T10:00:00Z"), at("2026-11-29T10:05:00Z")));
        let on_the_edge = Window::last_full(at("2026-11-29T10:05:00Z"), Duration::minutes(5));
        assert_eq!(on_the_edge, w);
    }

    #[test]
    fn a_window_reads_and_prints_as_start_slash_length() {
        let now = at("2026-11-30T00:00:00Z");
        let w = Window::parse("2026-11-29T10:00Z/1h", now).expect("parses");
        assert_eq!((w.start, w.end), (at("2026-11-29T10:00:00Z"), at("2026-11-29T11:00:00Z")));
        assert_eq!(w.to_string(), "2026-11-29T10:00:00Z/1h");
        assert_eq!(Window::parse(&w.to_string(), now), Ok(w));
        assert_eq!(
            Window::parse("2026-11-29T10:00:00+01:00/90m", now).map(|w| w.to_string()).as_deref(),
            Ok("2026-11-29T09:00:00Z/90m")
        );
        for (bad, says) in [
            ("2026-11-29T10:00Z", "START/LENGTH"),
            ("yesterday/1h", "not a start time"),
            ("2026-11-29T10:00Z/1w", "ends in s, m, h or d"),
            ("2026-11-29T10:00Z/0m", "from 1s"),
            ("2026-11-29T23:30Z/1h", "has not ended"),
        ] {
            let e = Window::parse(bad, now).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn the_retention_keeps_what_the_schedule_may_still_analyse_or_is_off() {
        assert_eq!(parse_retention("30d"), Ok(Some(Duration::days(30))));
        assert_eq!(parse_retention("off"), Ok(None));
        assert!(parse_retention("14d").is_err_and(|e| e.contains("at least 15d")));
        assert!(parse_retention("forever").is_err());
    }

    #[test]
    fn a_schedules_period_is_a_minute_to_a_day_or_off() {
        assert_eq!(parse_every("5m"), Ok(Some(Duration::minutes(5))));
        assert_eq!(parse_every("off"), Ok(None));
        assert!(parse_every("30s").is_err_and(|e| e.contains("from 1m to 1d")));
        assert!(parse_every("2d").is_err());
        assert!(parse_every("often").is_err());
    }

    #[test]
    fn a_schedule_back_from_a_pause_owes_each_missed_window_once_in_order() {
        let every = Duration::minutes(5);
        let now = at("2026-11-29T10:17:00Z");
        let owed = Window::owed(Some(at("2026-11-29T10:00:00Z")), now, every);
        let starts: Vec<String> = owed.iter().map(|w| w.start.format("%H:%M").to_string()).collect();
        assert_eq!(starts, ["10:00", "10:05", "10:10"]);
        assert!(Window::owed(Some(at("2026-11-29T10:15:00Z")), now, every).is_empty(), "nothing owed");
        assert_eq!(Window::owed(None, now, every), [Window::last_full(now, every)]);
        let long_away = Window::owed(Some(at("2026-10-01T00:00:00Z")), now, every);
        assert_eq!(long_away.first().map(|w| w.start), Some(at("2026-11-22T10:15:00Z")), "at most 7 days back");
        assert_eq!(long_away.len(), 7 * 24 * 12);
    }
}
