//! A ledger's poll schedule: a cron pattern with seconds, e.g. `*/5 * * * * *`.
//!
//! Six fields, always: second, minute, hour, day of month, month, day of week (parsed by
//! [`croner`]). Times are UTC. Pure: no clock is read here; the runner passes the
//! database's time in.

use chrono::{DateTime, TimeZone, Utc};
use croner::Cron;
use croner::errors::CronError;
use croner::parser::{CronParser, Seconds, Year};

/// Fields in a pattern: second, minute, hour, day of month, month, day of week.
const FIELDS: usize = 6;

/// Why a pattern is not a usable schedule.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// Not six whitespace-separated fields (nicknames such as `@hourly` excepted).
    #[error("expected 6 fields (second minute hour day-of-month month day-of-week), found {found}")]
    FieldCount {
        /// How many fields the pattern has.
        found: usize,
    },
    /// croner refused the pattern; its reason is the message.
    #[error("{0}")]
    Invalid(#[source] CronError),
    /// The pattern parses but names no date that exists (e.g. the 30th of February).
    #[error("the pattern matches no date")]
    NeverMatches,
}

/// A parsed cron pattern with seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    cron: Cron,
    pattern: String,
}

impl Schedule {
    /// Parses a six-field pattern (seconds first). Five-field patterns are refused rather
    /// than read as "at second 0", so a pattern never means something other than it says.
    pub fn parse(pattern: &str) -> Result<Schedule, ScheduleError> {
        // croner's own count message speaks of its parser options; ours says what to write.
        let found = pattern.split_whitespace().count();
        if found != FIELDS && !pattern.trim_start().starts_with('@') {
            return Err(ScheduleError::FieldCount { found });
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Required)
            .year(Year::Disallowed)
            .build();
        let cron = parser.parse(pattern).map_err(ScheduleError::Invalid)?;
        // A pattern without a year field that matches some date after 2000 keeps matching
        // until croner's search horizon (year 5000), so this one check at parse time is what
        // lets `next_after` find a time for any realistic instant.
        let reference = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).single();
        if let Some(reference) = reference
            && cron.find_next_occurrence(&reference, false).is_err()
        {
            return Err(ScheduleError::NeverMatches);
        }
        Ok(Schedule {
            cron,
            pattern: pattern.to_owned(),
        })
    }

    /// The first matching time strictly after `after`. `None` only past croner's search
    /// horizon (the year 5000), since [`Schedule::parse`] refuses patterns that never match.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(&after, false).ok()
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.pattern)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    // Proves next_after is strictly after its argument and lands on the pattern's times.
    #[test]
    fn next_after_follows_the_pattern() {
        let cases = [
            // every 2 s: from a matching second, the next one, not the same
            (
                "*/2 * * * * *",
                "2026-01-01T00:00:00Z",
                "2026-01-01T00:00:02Z",
            ),
            (
                "*/2 * * * * *",
                "2026-01-01T00:00:01.500Z",
                "2026-01-01T00:00:02Z",
            ),
            (
                "*/2 * * * * *",
                "2026-01-01T00:00:59Z",
                "2026-01-01T00:01:00Z",
            ),
            // every 10 s
            (
                "*/10 * * * * *",
                "2026-01-01T00:00:00Z",
                "2026-01-01T00:00:10Z",
            ),
            (
                "*/10 * * * * *",
                "2026-01-01T00:00:09.999Z",
                "2026-01-01T00:00:10Z",
            ),
            (
                "*/10 * * * * *",
                "2026-01-01T23:59:55Z",
                "2026-01-02T00:00:00Z",
            ),
            // a fixed minute: 00:30:00 of every hour
            (
                "0 30 * * * *",
                "2026-01-01T00:29:59Z",
                "2026-01-01T00:30:00Z",
            ),
            (
                "0 30 * * * *",
                "2026-01-01T00:30:00Z",
                "2026-01-01T01:30:00Z",
            ),
            // once a day at 12:00:05, across a month end
            (
                "5 0 12 * * *",
                "2026-01-31T12:00:06Z",
                "2026-02-01T12:00:05Z",
            ),
        ];
        for (pattern, after, expected) in cases {
            let schedule = Schedule::parse(pattern).unwrap();
            assert_eq!(
                schedule.next_after(at(after)),
                Some(at(expected)),
                "{pattern} after {after}"
            );
        }
    }

    // Proves malformed patterns are refused, each with croner's (or our) reason.
    #[test]
    fn invalid_patterns_are_refused() {
        let cases = [
            "",
            "*/5 * *",
            "*/5 * * * *",      // five fields: seconds are required
            "* * * * * * 2030", // seven fields: no year field
            "61 * * * * *",
            "*/0 * * * * *",
            "a b c d e f",
            "0 0 0 30 2 *", // the 30th of February
        ];
        for pattern in cases {
            let err = Schedule::parse(pattern).expect_err(pattern);
            assert!(!err.to_string().is_empty(), "{pattern}: empty reason");
        }
        assert!(matches!(
            Schedule::parse("0 0 0 30 2 *"),
            Err(ScheduleError::NeverMatches)
        ));
        assert!(matches!(
            Schedule::parse("*/5 * *"),
            Err(ScheduleError::FieldCount { found: 3 })
        ));
        assert!(matches!(
            Schedule::parse("61 * * * * *"),
            Err(ScheduleError::Invalid(_))
        ));
    }

    // Proves croner's nicknames are accepted and mean second 0.
    #[test]
    fn nicknames_are_accepted() {
        let schedule = Schedule::parse("@hourly").unwrap();
        assert_eq!(
            schedule.next_after(at("2026-01-01T00:00:00Z")),
            Some(at("2026-01-01T01:00:00Z"))
        );
    }

    // Proves the pattern is kept verbatim for messages.
    #[test]
    fn keeps_the_pattern_text() {
        let schedule = Schedule::parse("*/5 * * * * *").unwrap();
        assert_eq!(schedule.as_str(), "*/5 * * * * *");
        assert_eq!(schedule.to_string(), "*/5 * * * * *");
    }
}
