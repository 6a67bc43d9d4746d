//! Time windows in a user's time zone: when quiet hours end, and when a
//! digest window closes.

use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan, ZonedDateTime as Zoned};

use crate::model::{Interval, Preferences};

fn tz(name: &str) -> TimeZone {
    TimeZone::get(name).unwrap_or(TimeZone::UTC)
}

fn minutes(s: &str) -> Option<i64> {
    let (h, m) = s.split_once(':')?;
    Some(h.parse::<i64>().ok()? * 60 + m.parse::<i64>().ok()?)
}

fn zoned(now_ms: u64, tz: TimeZone) -> Option<Zoned> {
    Some(
        Timestamp::from_millisecond(now_ms as i64)
            .ok()?
            .to_zoned_datetime(tz),
    )
}

/// The start of the day of `z`, plus `min` minutes, as ms since the epoch.
fn at_minute(z: &Zoned, day_offset: i64, min: i64) -> Option<u64> {
    let day = z.start_of_day().ok()?.checked_add(day_offset.days()).ok()?;
    let t = day.checked_add(min.minutes()).ok()?;
    Some(t.timestamp().as_millisecond() as u64)
}

impl Preferences {
    /// If `now_ms` falls in the user's quiet hours, when they end (ms).
    pub fn quiet_until(&self, now_ms: u64) -> Option<u64> {
        let q = self.quiet_hours.as_ref()?;
        let (start, end) = (minutes(&q.start)?, minutes(&q.end)?);
        let z = zoned(now_ms, tz(&q.timezone))?;
        let now_min = z.hour() as i64 * 60 + z.minute() as i64;
        if start < end {
            // Same day, e.g. 13:00-15:00.
            (now_min >= start && now_min < end)
                .then(|| at_minute(&z, 0, end))
                .flatten()
        } else if now_min >= start {
            // Overnight, before midnight: ends tomorrow.
            at_minute(&z, 1, end)
        } else if now_min < end {
            // Overnight, after midnight: ends today.
            at_minute(&z, 0, end)
        } else {
            None
        }
    }

    /// The digest window containing `now_ms`: (start, end) in ms. With
    /// `override_ms` > 0 every window is that long (tests, demos).
    pub fn digest_window(&self, now_ms: u64, override_ms: u64) -> (u64, u64) {
        if let Some(k) = now_ms.checked_div(override_ms) {
            let start = k * override_ms;
            return (start, start + override_ms);
        }
        let fallback = {
            let h = 3_600_000;
            (now_ms / h * h, now_ms / h * h + h)
        };
        let Some(z) = zoned(now_ms, tz(&self.digest.timezone)) else {
            return fallback;
        };
        match self.digest.interval {
            Interval::Hourly => {
                let start = at_minute(&z, 0, z.hour() as i64 * 60);
                match start {
                    Some(s) => (s, s + 3_600_000),
                    None => fallback,
                }
            }
            Interval::Daily => {
                let h = self.digest.hour as i64 * 60;
                let today = at_minute(&z, 0, h);
                match today {
                    Some(t) if t > now_ms => (at_minute(&z, -1, h).unwrap_or(t - 86_400_000), t),
                    Some(t) => (t, at_minute(&z, 1, h).unwrap_or(t + 86_400_000)),
                    None => fallback,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::QuietHours;

    fn at(s: &str) -> u64 {
        s.parse::<Timestamp>().unwrap().as_millisecond() as u64
    }

    #[test]
    fn overnight_quiet_hours_in_a_zone() {
        let p = Preferences {
            quiet_hours: Some(QuietHours {
                start: "22:00".into(),
                end: "07:00".into(),
                timezone: "Europe/Paris".into(),
            }),
            ..Preferences::default()
        };
        // 23:30 in Paris (UTC+1 in winter) -> ends 07:00 Paris next day.
        assert_eq!(
            p.quiet_until(at("2026-01-10T22:30:00Z")),
            Some(at("2026-01-11T06:00:00Z"))
        );
        // 05:00 Paris -> ends 07:00 Paris the same day.
        assert_eq!(
            p.quiet_until(at("2026-01-11T04:00:00Z")),
            Some(at("2026-01-11T06:00:00Z"))
        );
        // Noon: not quiet.
        assert_eq!(p.quiet_until(at("2026-01-11T11:00:00Z")), None);
    }

    #[test]
    fn daily_digest_closes_at_the_hour() {
        let mut p = Preferences::default();
        p.digest.interval = Interval::Daily;
        p.digest.hour = 9;
        p.digest.timezone = "Europe/Paris".into();
        let (s, e) = p.digest_window(at("2026-01-11T10:00:00Z"), 0);
        assert_eq!(
            (s, e),
            (at("2026-01-11T08:00:00Z"), at("2026-01-12T08:00:00Z"))
        );
        let (_, e) = p.digest_window(at("2026-01-11T07:00:00Z"), 0);
        assert_eq!(e, at("2026-01-11T08:00:00Z"));
        assert_eq!(p.digest_window(10_500, 1000), (10_000, 11_000));
    }
}
