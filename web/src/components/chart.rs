//! Health charts drawn as SVG on the page (no chart library, no CDN): one
//! line per replica, the newest samples on the right.

use leptos::prelude::*;

pub use crate::model::Marker;

const W: f64 = 600.0;
const H: f64 = 150.0;
const LEFT: f64 = 48.0;
const BOTTOM: f64 = 20.0;
const TOP: f64 = 8.0;

/// One value of one replica at one time (ms since the epoch).
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub replica: u32,
    pub at_ms: i64,
    pub value: f64,
}

/// A round ceiling for the axis: 1, 2, 5 × 10^n.
pub fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|c| *c >= v).unwrap_or(10.0 * mag)
}

/// `HH:MM:SS` (UTC) of an epoch time.
pub fn hms(ms: i64) -> String {
    let s = ms.div_euclid(1000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

pub fn fmt_value(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The polyline points of each replica, scaled into the plot area.
pub fn lines(points: &[Point]) -> (Vec<(u32, String)>, f64, i64, i64) {
    let max = nice_max(points.iter().map(|p| p.value).fold(0.0, f64::max));
    let t0 = points.iter().map(|p| p.at_ms).min().unwrap_or(0);
    let t1 = points.iter().map(|p| p.at_ms).max().unwrap_or(0).max(t0 + 1);
    let mut replicas: Vec<u32> = points.iter().map(|p| p.replica).collect();
    replicas.sort_unstable();
    replicas.dedup();
    let x = |t: i64| LEFT + (t - t0) as f64 / (t1 - t0) as f64 * (W - LEFT - 4.0);
    let y = |v: f64| TOP + (1.0 - v / max) * (H - TOP - BOTTOM);
    let out = replicas
        .into_iter()
        .map(|r| {
            let pts = points
                .iter()
                .filter(|p| p.replica == r)
                .map(|p| format!("{:.1},{:.1}", x(p.at_ms), y(p.value)))
                .collect::<Vec<_>>()
                .join(" ");
            (r, pts)
        })
        .collect();
    (out, max, t0, t1)
}

/// Where each marker falls on the time axis: an anomaly's 5-minute point
/// that overlaps the plotted span `[t0, t1]` is marked where it starts,
/// or at the left edge when it started before the span.
pub fn marker_xs(markers: &[Marker], t0: i64, t1: i64) -> Vec<(f64, String)> {
    const POINT_MS: i64 = 5 * 60_000;
    let span = (t1 - t0).max(1) as f64;
    markers
        .iter()
        .filter(|m| m.at_ms <= t1 && m.at_ms + POINT_MS > t0)
        .map(|m| (LEFT + (m.at_ms.max(t0) - t0) as f64 / span * (W - LEFT - 4.0), m.label.clone()))
        .collect()
}

#[component]
pub fn Chart(
    #[prop(into)] title: String,
    #[prop(into)] unit: String,
    #[prop(into)] points: Signal<Vec<Point>>,
    /// What an empty chart says (default: about replica reports).
    #[prop(into, optional)]
    empty: Option<String>,
    /// Anomalies the analytics runs found in this series (red marks).
    #[prop(optional)]
    markers: Vec<Marker>,
) -> impl IntoView {
    let empty = empty.unwrap_or_else(|| "No reports yet. Replicas report once they run.".to_string());
    let testid = format!("chart-{}", title.to_lowercase().replace(' ', "-"));
    let latest = move || points.with(|p| p.last().map(|p| p.value));
    let unit2 = unit.clone();
    view! {
        <figure class="chart" data-testid=testid>
            <figcaption>
                {title}
                <span class="latest">
                    {move || latest().map(|v| format!("{} {}", fmt_value(v), unit2)).unwrap_or_default()}
                </span>
            </figcaption>
            <Show when=move || !points.with(Vec::is_empty) fallback=move || view! {
                <div class="chart-empty">{empty.clone()}</div>
            }>
                {
                    let (unit, markers) = (unit.clone(), markers.clone());
                    move || {
                        let (series, max, t0, t1) = points.with(|p| lines(p));
                        let marks = marker_xs(&markers, t0, t1);
                        let mid = H - BOTTOM;
                        view! {
                            <svg viewBox=format!("0 0 {W} {H}") role="img">
                                <line class="axis" x1=LEFT y1=TOP x2=LEFT y2=mid/>
                                <line class="axis" x1=LEFT y1=mid x2=W y2=mid/>
                                <line class="grid" x1=LEFT y1=(TOP + mid) / 2.0 x2=W y2=(TOP + mid) / 2.0/>
                                <text class="tick" x=LEFT - 4.0 y=TOP + 8.0 text-anchor="end">
                                    {format!("{} {}", fmt_value(max), unit)}
                                </text>
                                <text class="tick" x=LEFT - 4.0 y=mid text-anchor="end">"0"</text>
                                <text class="tick" x=LEFT y=H - 4.0>{hms(t0)}</text>
                                <text class="tick" x=W - 4.0 y=H - 4.0 text-anchor="end">{hms(t1)}</text>
                                {series.into_iter().map(|(r, pts)| view! {
                                    <polyline class=format!("series r{}", r % 6) points=pts data-replica=r/>
                                }).collect_view()}
                                {marks.into_iter().map(|(x, label)| view! {
                                    <g class="marker" data-testid="anomaly-marker">
                                        <title>{label}</title>
                                        <line x1=x x2=x y1=TOP y2=mid/>
                                        <circle cx=x cy=TOP + 3.0 r="3"/>
                                    </g>
                                }).collect_view()}
                            </svg>
                        }
                    }
                }
            </Show>
        </figure>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_rounds_up_to_1_2_5() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(3.2), 5.0);
        assert_eq!(nice_max(17.0), 20.0);
        assert_eq!(nice_max(100.0), 100.0);
        assert_eq!(hms(3_723_000), "01:02:03");
    }

    #[test]
    fn an_anomaly_is_marked_where_its_point_overlaps_the_plotted_span() {
        let m = |at_ms: i64| Marker { series: "cpu_cores".into(), at_ms, label: format!("at {at_ms}") };
        let minute = 60_000;
        // Plotted: minutes 10–20. Marked: one inside, one whose 5 minutes
        // began at minute 7 (at the left edge); not: minute 4, minute 21.
        let xs = marker_xs(&[m(4 * minute), m(7 * minute), m(15 * minute), m(21 * minute)], 10 * minute, 20 * minute);
        let labels: Vec<&str> = xs.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(labels, [format!("at {}", 7 * minute), format!("at {}", 15 * minute)]);
        assert_eq!(xs[0].0, LEFT);
        assert!((xs[1].0 - (LEFT + (W - LEFT - 4.0) / 2.0)).abs() < 1e-9);
    }

    #[test]
    fn one_line_per_replica_scaled_into_the_plot() {
        let p = |replica, at_ms, value| Point { replica, at_ms, value };
        let (series, max, t0, t1) = lines(&[p(0, 1000, 0.0), p(1, 1000, 5.0), p(0, 2000, 10.0)]);
        assert_eq!((max, t0, t1), (10.0, 1000, 2000));
        assert_eq!(series.len(), 2);
        // replica 0 goes from the bottom-left to the top-right corner.
        assert_eq!(series[0], (0, format!("{LEFT:.1},{:.1} {:.1},{TOP:.1}", H - BOTTOM, W - 4.0)));
    }
}
