//! Reading `remind me …`: when, and what.
//!
//! | form | meaning |
//! |---|---|
//! | `remind me in 10 minutes to stretch` | 10 minutes from now |
//! | `remind me to stretch in 10 minutes` | the same, time last |
//! | `in 1 hour 30 minutes`, `in 1h30m`, `in an hour`, `in 2 days and 3 hours` | sums of amounts |
//! | units | `s sec secs second seconds`, `m min mins minute minutes`, `h hr hrs hour hours`, `d day days`, `w wk wks week weeks` |
//! | `remind me at 17:30 to call Bob` | the next 17:30 in the user's time (today, or tomorrow if it has passed) |
//! | `at 5pm`, `at 5:30 pm`, `at 12am`, `at noon`, `at midnight` | 12-hour forms |
//! | `at 2026-12-24 17:00`, `at 2026-12-24T17:00` | a date and time in the user's time |
//!
//! The user's time is the activity's UTC offset (its `localTimestamp`), else UTC. Keywords are
//! read in any case; the text is kept as typed. A reminder is more than now and at most
//! [`MAX_AHEAD`] away; everything else is a [`ParseError`] whose text says what to type.

use chrono::{DateTime, Duration, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};

/// The furthest a reminder may be: a year.
pub const MAX_AHEAD: Duration = Duration::days(365);

/// When and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub due: DateTime<Utc>,
    pub text: String,
}

/// Why a `remind …` cannot be scheduled. The text is the reply: it says what to type instead.
/// Echoed input is cut to 40 characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error(
        "Tell me when and what, for example **remind me in 10 minutes to stretch** or **remind me at 17:30 to call Bob**."
    )]
    Usage,
    #[error(
        "When should I remind you? Say **in** and a duration (**remind me in 10 minutes to stretch**) or **at** a time (**remind me at 17:30 to call Bob**)."
    )]
    NoTime,
    #[error("What should I remind you of? For example **remind me in 10 minutes to stretch**.")]
    NoText,
    #[error("In how long? For example **in 10 minutes**, **in 2 hours** or **in 3 days**.")]
    MissingDuration,
    #[error(
        "\"{0}\" is not a number. Write the duration with digits and a unit, for example **in 10 minutes** or **in 2 hours**."
    )]
    NotANumber(String),
    #[error("\"{0}\" is not a whole number. Use a smaller unit, for example **in 90 minutes**.")]
    NotAWholeNumber(String),
    #[error("A reminder must be in the future: \"in {0}\" is in the past.")]
    Negative(String),
    #[error("A reminder must be at least 1 second away.")]
    Zero,
    #[error("{0} what? Give a unit: seconds, minutes, hours, days or weeks (s, min, h, d, w).")]
    MissingUnit(String),
    #[error(
        "\"{0}\" is not a unit I know: use seconds, minutes, hours, days or weeks (s, min, h, d, w)."
    )]
    UnknownUnit(String),
    #[error(
        "\"{0}\" is not a time of day. Use the 24-hour clock (**at 17:30**) or am/pm (**at 5pm**, **at 5:30pm**), with a date if you like (**at 2026-12-24 17:30**)."
    )]
    NotATime(String),
    #[error(
        "\"{0}\" is not a date. Write it as year-month-day, for example **at 2026-12-24 17:30**."
    )]
    NotADate(String),
    #[error("{0} has already passed. Give a time in the future.")]
    Past(String),
    #[error("That is more than a year away; a reminder can be at most 365 days ahead.")]
    TooFar,
}

/// Reads a whole `remind [me] …` message. `offset` is the user's UTC offset, when known.
pub fn parse_request(
    input: &str,
    now: DateTime<Utc>,
    offset: Option<FixedOffset>,
) -> Result<Request, ParseError> {
    let words = words(input);
    let mut rest: &[Word] = &words;
    match rest.first() {
        Some(word) if word.lower == "remind" => rest = &rest[1..],
        _ => return Err(ParseError::Usage),
    }
    if rest
        .first()
        .is_some_and(|w| w.lower == "me" || w.lower == "us")
    {
        rest = &rest[1..];
    }
    if rest.is_empty() {
        return Err(ParseError::Usage);
    }
    let clock = Clock {
        now,
        offset: offset.unwrap_or(FixedOffset::east_opt(0).expect("UTC")),
    };

    // Time first: `in 10 minutes to stretch`, `at 17:30 call Bob`.
    let time_first = rest[0].kind().map(|kind| {
        let (due, used) = clock.when(kind, &rest[1..])?;
        let mut text = &rest[1 + used..];
        if text.first().is_some_and(|w| w.lower == "to") {
            text = &text[1..];
        }
        Ok(Request {
            due,
            text: span(input, text).ok_or(ParseError::NoText)?,
        })
    });
    match time_first {
        Some(Ok(request)) => return Ok(request),
        Some(Err(ParseError::NoText)) => return Err(ParseError::NoText),
        _ => {}
    }

    // Time last: `to stretch in 10 minutes`, `to call Bob at 17:30`.
    let mut text_words = rest;
    if text_words.first().is_some_and(|w| w.lower == "to") {
        text_words = &text_words[1..];
    }
    let mut first_error = None;
    for at in (1..text_words.len()).rev() {
        let Some(kind) = text_words[at].kind() else {
            continue;
        };
        let tail = &text_words[at + 1..];
        match clock.when(kind, tail) {
            Ok((due, used)) if used == tail.len() => {
                let text = span(input, &text_words[..at]).ok_or(ParseError::NoText)?;
                return Ok(Request { due, text });
            }
            Ok(_) => {}
            Err(error) => {
                // Only what looks like an attempt at a time is worth reporting.
                if first_error.is_none() && tail.first().is_some_and(|w| w.looks_like_time()) {
                    first_error = Some(error);
                }
            }
        }
    }
    match time_first {
        Some(Err(error)) => Err(error),
        _ => Err(first_error.unwrap_or(ParseError::NoTime)),
    }
}

/// A whitespace-separated word: where it is in the input, and its lowercase form.
#[derive(Debug)]
struct Word {
    start: usize,
    end: usize,
    lower: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    In,
    At,
}

impl Word {
    fn kind(&self) -> Option<Kind> {
        match self.lower.as_str() {
            "in" => Some(Kind::In),
            "at" => Some(Kind::At),
            _ => None,
        }
    }

    /// The lowercase word without trailing punctuation (`minutes,` → `minutes`).
    fn bare(&self) -> &str {
        self.lower.trim_end_matches([',', '.', ';', '!', '?'])
    }

    /// Starts like an amount (`10`, `-5`, `1.5`, `an`).
    fn starts_amount(&self) -> bool {
        let bare = self.bare();
        let mut chars = bare.chars();
        match chars.next() {
            Some(c) if c.is_ascii_digit() => true,
            Some('-') => chars.next().is_some_and(|c| c.is_ascii_digit()),
            _ => false,
        }
    }

    fn looks_like_time(&self) -> bool {
        self.starts_amount() || matches!(self.bare(), "a" | "an" | "noon" | "midnight")
    }
}

fn words(input: &str) -> Vec<Word> {
    let mut words = Vec::new();
    let mut start = None;
    for (index, c) in input.char_indices().chain([(input.len(), ' ')]) {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                words.push(Word {
                    start: s,
                    end: index,
                    lower: input[s..index].to_lowercase(),
                });
                start = None;
            }
            (false, None) => start = Some(index),
            _ => {}
        }
    }
    words
}

/// The input from the first to the last of `words`, as typed; `None` if there are none.
fn span(input: &str, words: &[Word]) -> Option<String> {
    let (first, last) = (words.first()?, words.last()?);
    Some(input[first.start..last.end].to_owned())
}

fn cut(text: &str) -> String {
    text.chars().take(40).collect()
}

struct Clock {
    now: DateTime<Utc>,
    offset: FixedOffset,
}

impl Clock {
    /// The due time `words` give after `in`/`at`, and how many words they took.
    fn when(&self, kind: Kind, words: &[Word]) -> Result<(DateTime<Utc>, usize), ParseError> {
        let (due, used) = match kind {
            Kind::In => {
                let (seconds, used) = duration(words)?;
                if seconds == 0 {
                    return Err(ParseError::Zero);
                }
                let seconds = i64::try_from(seconds).map_err(|_| ParseError::TooFar)?;
                if seconds > MAX_AHEAD.num_seconds() {
                    return Err(ParseError::TooFar);
                }
                (self.now + Duration::seconds(seconds), used)
            }
            Kind::At => self.at(words)?,
        };
        if due - self.now > MAX_AHEAD {
            return Err(ParseError::TooFar);
        }
        Ok((due, used))
    }

    /// `at …`: a time of day (the next one), or a date and a time.
    fn at(&self, words: &[Word]) -> Result<(DateTime<Utc>, usize), ParseError> {
        let Some(first) = words.first() else {
            return Err(ParseError::NotATime(String::new()));
        };
        let word = first.bare();
        // `2026-12-24T17:30`, or `2026-12-24 17:30`.
        let (date, time, used) = if let Some((date, time)) = word.split_once('t')
            && looks_like_date(date)
        {
            let (time, _) = time_of_day(time, None)?;
            (Some(parse_date(date)?), time, 1)
        } else if looks_like_date(word) {
            let date = parse_date(word)?;
            let Some(time_word) = words.get(1) else {
                return Err(ParseError::NotATime(cut(word)));
            };
            let (time, used) = time_of_day(time_word.bare(), words.get(2).map(Word::bare))?;
            (Some(date), time, 1 + used)
        } else {
            let (time, used) = time_of_day(word, words.get(1).map(Word::bare))?;
            (None, time, used)
        };
        let local_now = self.now.with_timezone(&self.offset).naive_local();
        let local = match date {
            Some(date) => NaiveDateTime::new(date, time),
            None => {
                let today = NaiveDateTime::new(local_now.date(), time);
                if today > local_now {
                    today
                } else {
                    today + Duration::days(1)
                }
            }
        };
        let due = self
            .offset
            .from_local_datetime(&local)
            .single()
            .expect("a fixed offset maps every local time once")
            .with_timezone(&Utc);
        if due <= self.now {
            let when = if self.offset.local_minus_utc() == 0 {
                format!("{} UTC", local.format("%Y-%m-%d %H:%M"))
            } else {
                format!("{} (UTC{})", local.format("%Y-%m-%d %H:%M"), self.offset)
            };
            return Err(ParseError::Past(when));
        }
        Ok((due, used))
    }
}

/// `in …`: one or more amounts with units, summed; the seconds, and the words taken. After
/// the first amount, what does not read as another one is left for the text.
fn duration(words: &[Word]) -> Result<(u64, usize), ParseError> {
    if words.is_empty() {
        return Err(ParseError::MissingDuration);
    }
    let (mut total, mut used) = amount(words, true)?;
    loop {
        let mut next = used;
        if words.get(next).is_some_and(|w| w.bare() == "and") {
            next += 1;
        }
        match words.get(next) {
            Some(word) if word.starts_amount() || matches!(word.bare(), "a" | "an") => {}
            _ => break,
        }
        let Ok((seconds, taken)) = amount(&words[next..], next > used) else {
            break;
        };
        total = total.checked_add(seconds).ok_or(ParseError::TooFar)?;
        used = next + taken;
    }
    Ok((total, used))
}

/// One amount at the start of `words`: `10 minutes`, `10min`, `1h30m`, `an hour`. `article`:
/// whether `a`/`an` may stand for one (first, or after `and`).
fn amount(words: &[Word], article: bool) -> Result<(u64, usize), ParseError> {
    let Some(first) = words.first() else {
        return Err(ParseError::MissingDuration);
    };
    let word = first.bare();
    if word.starts_with('-') && first.starts_amount() {
        let phrase = match words.get(1) {
            Some(unit) if !word[1..].bytes().any(|b| b.is_ascii_alphabetic()) => {
                format!("{word} {}", unit.bare())
            }
            _ => word.to_owned(),
        };
        return Err(ParseError::Negative(cut(&phrase)));
    }
    // `in 10 to stretch`: the unit is missing, not "to".
    let unit = words
        .get(1)
        .filter(|unit| !matches!(unit.bare(), "to" | "and"));
    if article && matches!(word, "a" | "an") {
        let unit = unit.ok_or_else(|| ParseError::MissingUnit(word.to_owned()))?;
        return Ok((unit_seconds(unit.bare())?, 2));
    }
    if !word.is_empty() && word.bytes().all(|b| b.is_ascii_digit()) {
        let Some(unit) = unit else {
            return Err(ParseError::MissingUnit(cut(word)));
        };
        let count = count(word)?;
        let seconds = count
            .checked_mul(unit_seconds(unit.bare())?)
            .ok_or(ParseError::TooFar)?;
        return Ok((seconds, 2));
    }
    if word.starts_with(|c: char| c.is_ascii_digit()) {
        return compact(word).map(|seconds| (seconds, 1));
    }
    Err(ParseError::NotANumber(cut(word)))
}

/// `10min`, `90s`, `1h30m`: digits and a unit, repeated, in one word.
fn compact(word: &str) -> Result<u64, ParseError> {
    let mut total: u64 = 0;
    let mut rest = word;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(ParseError::NotANumber(cut(word)));
        }
        let (number, after) = rest.split_at(digits);
        if after.starts_with(['.', ',']) {
            return Err(ParseError::NotAWholeNumber(cut(word)));
        }
        let letters = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        if letters == 0 {
            return Err(if after.is_empty() {
                ParseError::MissingUnit(cut(number))
            } else {
                ParseError::NotANumber(cut(word))
            });
        }
        let (unit, after) = after.split_at(letters);
        let seconds = count(number)?
            .checked_mul(unit_seconds(unit)?)
            .ok_or(ParseError::TooFar)?;
        total = total.checked_add(seconds).ok_or(ParseError::TooFar)?;
        rest = after;
    }
    Ok(total)
}

/// Digits as a count; too many digits are simply too far away.
fn count(digits: &str) -> Result<u64, ParseError> {
    digits.parse().map_err(|_| ParseError::TooFar)
}

fn unit_seconds(unit: &str) -> Result<u64, ParseError> {
    Ok(match unit {
        "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86_400,
        "w" | "wk" | "wks" | "week" | "weeks" => 604_800,
        other => return Err(ParseError::UnknownUnit(cut(other))),
    })
}

fn looks_like_date(word: &str) -> bool {
    let parts: Vec<&str> = word.split('-').collect();
    parts.len() == 3
        && parts[0].len() == 4
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

fn parse_date(word: &str) -> Result<NaiveDate, ParseError> {
    NaiveDate::parse_from_str(word, "%Y-%m-%d").map_err(|_| ParseError::NotADate(cut(word)))
}

/// A time of day from `word` (and `next`, when it is `am`/`pm`); the words taken.
fn time_of_day(word: &str, next: Option<&str>) -> Result<(NaiveTime, usize), ParseError> {
    match word {
        "noon" => return Ok((NaiveTime::from_hms_opt(12, 0, 0).expect("noon"), 1)),
        "midnight" => return Ok((NaiveTime::MIN, 1)),
        _ => {}
    }
    let (clock, meridiem, used) = if let Some(clock) = word.strip_suffix("am") {
        (clock, Some(false), 1)
    } else if let Some(clock) = word.strip_suffix("pm") {
        (clock, Some(true), 1)
    } else {
        match next {
            Some("am") => (word, Some(false), 2),
            Some("pm") => (word, Some(true), 2),
            _ => (word, None, 1),
        }
    };
    let not_a_time = || {
        let shown = if used == 2 {
            format!("{word} {}", next.unwrap_or_default())
        } else {
            word.to_owned()
        };
        ParseError::NotATime(cut(&shown))
    };
    let digits = |s: &str| !s.is_empty() && s.len() <= 2 && s.bytes().all(|b| b.is_ascii_digit());
    let (hour, minute) = match clock.split_once(':') {
        Some((h, m)) if digits(h) && m.len() == 2 && digits(m) => (h, m),
        // A bare hour only with am/pm: `at 5` could mean either.
        None if meridiem.is_some() && digits(clock) => (clock, "00"),
        _ => return Err(not_a_time()),
    };
    let (hour, minute): (u32, u32) = (
        hour.parse().map_err(|_| not_a_time())?,
        minute.parse().map_err(|_| not_a_time())?,
    );
    let hour = match meridiem {
        None if hour < 24 => hour,
        Some(pm) if (1..=12).contains(&hour) => hour % 12 + if pm { 12 } else { 0 },
        _ => return Err(not_a_time()),
    };
    NaiveTime::from_hms_opt(hour, minute, 0)
        .map(|time| (time, used))
        .ok_or_else(not_a_time)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Saturday 21 November 2026, 10:00:00 UTC.
    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-21T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn offset(hours: i32) -> Option<FixedOffset> {
        FixedOffset::east_opt(hours * 3600)
    }

    fn ok(input: &str) -> Request {
        parse_request(input, now(), None).unwrap_or_else(|e| panic!("{input:?}: {e}"))
    }

    fn err(input: &str) -> ParseError {
        match parse_request(input, now(), None) {
            Ok(request) => panic!("{input:?} parsed as {request:?}"),
            Err(error) => error,
        }
    }

    fn seconds_of(input: &str) -> i64 {
        (ok(input).due - now()).num_seconds()
    }

    #[test]
    fn every_unit_and_abbreviation_in_both_numbers() {
        let units: [(&[&str], i64); 5] = [
            (&["s", "sec", "secs", "second", "seconds"], 1),
            (&["m", "min", "mins", "minute", "minutes"], 60),
            (&["h", "hr", "hrs", "hour", "hours"], 3600),
            (&["d", "day", "days"], 86_400),
            (&["w", "wk", "wks", "week", "weeks"], 604_800),
        ];
        for (names, seconds) in units {
            for name in names {
                for n in [1, 3] {
                    let input = format!("remind me in {n} {name} to stretch");
                    assert_eq!(seconds_of(&input), n * seconds, "{input}");
                    assert_eq!(ok(&input).text, "stretch", "{input}");
                    let upper = format!("Remind Me IN {n} {} TO Stretch", name.to_uppercase());
                    assert_eq!(seconds_of(&upper), n * seconds, "{upper}");
                    let compact = format!("remind me in {n}{name} to stretch");
                    assert_eq!(seconds_of(&compact), n * seconds, "{compact}");
                }
            }
        }
    }

    #[test]
    fn amounts_add_up_and_articles_count_one() {
        assert_eq!(seconds_of("remind me in 1 hour 30 minutes to eat"), 5400);
        assert_eq!(
            seconds_of("remind me in 1 hour and 30 minutes to eat"),
            5400
        );
        assert_eq!(seconds_of("remind me in 1h30m to eat"), 5400);
        assert_eq!(
            seconds_of("remind me in 2 days, 3 hours to eat"),
            2 * 86_400 + 3 * 3600
        );
        assert_eq!(seconds_of("remind me in an hour to eat"), 3600);
        assert_eq!(seconds_of("remind me in a minute to eat"), 60);
        assert_eq!(seconds_of("remind me in 90s to eat"), 90);
        // After the first amount, what is not another amount is the text.
        let request = ok("remind me in 10 minutes and a half to eat");
        assert_eq!((request.due - now()).num_seconds(), 600);
        assert_eq!(request.text, "and a half to eat");
        let request = ok("remind me in 10 minutes 2 pills");
        assert_eq!(request.text, "2 pills");
    }

    #[test]
    fn the_text_keeps_its_case_and_may_come_first() {
        let request = ok("remind me in 10 minutes to Call BOB about the Q3 plan");
        assert_eq!(request.text, "Call BOB about the Q3 plan");
        assert_eq!(ok("remind me in 10 minutes stretch").text, "stretch");
        assert_eq!(ok("remind me in 10 minutes to go to bed").text, "go to bed");
        assert_eq!(
            ok("remind   me  in 10 minutes   to  stretch  ").text,
            "stretch"
        );
        assert_eq!(ok("remind in 10 minutes to stretch").text, "stretch");
        let request = ok("remind me to call Bob in 10 minutes");
        assert_eq!(request.text, "call Bob");
        assert_eq!((request.due - now()).num_seconds(), 600);
        let request = ok("remind me to look at the logs in 2 hours.");
        assert_eq!(request.text, "look at the logs");
        assert_eq!((request.due - now()).num_seconds(), 7200);
        let request = ok("remind me to look at the logs at 17:30");
        assert_eq!(request.text, "look at the logs");
        assert_eq!(request.due, utc("2026-11-21T17:30:00Z"));
        let request = ok("remind us to meet in the lobby in 5 min");
        assert_eq!(request.text, "meet in the lobby");
        assert_eq!((request.due - now()).num_seconds(), 300);
    }

    #[test]
    fn at_is_the_next_such_time_in_utc_without_an_offset() {
        assert_eq!(
            ok("remind me at 17:30 to call Bob").due,
            utc("2026-11-21T17:30:00Z")
        );
        assert_eq!(ok("remind me at 17:30 to call Bob").text, "call Bob");
        // Passed today: tomorrow. Exactly now: tomorrow too (a reminder is in the future).
        assert_eq!(
            ok("remind me at 9:00 to x").due,
            utc("2026-11-22T09:00:00Z")
        );
        assert_eq!(
            ok("remind me at 10:00 to x").due,
            utc("2026-11-22T10:00:00Z")
        );
        assert_eq!(
            ok("remind me at 10:01 to x").due,
            utc("2026-11-21T10:01:00Z")
        );
        assert_eq!(
            ok("remind me at 00:00 to x").due,
            utc("2026-11-22T00:00:00Z")
        );
        assert_eq!(
            ok("remind me at 23:59 to x").due,
            utc("2026-11-21T23:59:00Z")
        );
    }

    #[test]
    fn at_is_the_next_such_time_in_the_users_offset() {
        let at = |input: &str, hours: i32| parse_request(input, now(), offset(hours)).unwrap().due;
        // UTC+2: it is 12:00 there.
        assert_eq!(
            at("remind me at 13:00 to x", 2),
            utc("2026-11-21T11:00:00Z")
        );
        assert_eq!(
            at("remind me at 11:00 to x", 2),
            utc("2026-11-22T09:00:00Z")
        );
        // UTC-5: it is 05:00 there; 23:30 there is 04:30 UTC tomorrow.
        assert_eq!(
            at("remind me at 23:30 to x", -5),
            utc("2026-11-22T04:30:00Z")
        );
        assert_eq!(
            at("remind me at 4:00 to x", -5),
            utc("2026-11-22T09:00:00Z")
        );
        // UTC+14 (Kiribati): 00:00 on the 22nd there; 00:30 is in half an hour.
        assert_eq!(
            at("remind me at 0:30 to x", 14),
            utc("2026-11-21T10:30:00Z")
        );
        // A half-hour offset.
        let india = FixedOffset::east_opt(5 * 3600 + 1800);
        let due = parse_request("remind me at 16:00 to x", now(), india)
            .unwrap()
            .due;
        assert_eq!(due, utc("2026-11-21T10:30:00Z"));
        // `in` does not depend on the offset.
        assert_eq!(
            at("remind me in 5 minutes to x", -5),
            utc("2026-11-21T10:05:00Z")
        );
    }

    #[test]
    fn twelve_hour_forms_noon_midnight_and_dates() {
        let due = |input: &str| ok(input).due;
        assert_eq!(due("remind me at 5pm to x"), utc("2026-11-21T17:00:00Z"));
        assert_eq!(due("remind me at 5:30pm to x"), utc("2026-11-21T17:30:00Z"));
        assert_eq!(
            due("remind me at 5:30 PM to x"),
            utc("2026-11-21T17:30:00Z")
        );
        assert_eq!(due("remind me at 5 pm to x"), utc("2026-11-21T17:00:00Z"));
        assert_eq!(due("remind me at 11am to x"), utc("2026-11-21T11:00:00Z"));
        assert_eq!(due("remind me at 12am to x"), utc("2026-11-22T00:00:00Z"));
        assert_eq!(due("remind me at 12pm to x"), utc("2026-11-21T12:00:00Z"));
        assert_eq!(due("remind me at noon to x"), utc("2026-11-21T12:00:00Z"));
        assert_eq!(
            due("remind me at midnight to x"),
            utc("2026-11-22T00:00:00Z")
        );
        assert_eq!(ok("remind me to eat at 5pm").text, "eat");
        assert_eq!(
            due("remind me at 2026-12-24 17:00 to wrap presents"),
            utc("2026-12-24T17:00:00Z")
        );
        assert_eq!(
            due("remind me at 2026-12-24T17:00 to wrap presents"),
            utc("2026-12-24T17:00:00Z")
        );
        assert_eq!(
            due("remind me to wrap presents at 2026-12-24 5pm"),
            utc("2026-12-24T17:00:00Z")
        );
        let local = parse_request("remind me at 2026-12-24 17:00 to x", now(), offset(1));
        assert_eq!(local.unwrap().due, utc("2026-12-24T16:00:00Z"));
    }

    #[test]
    fn the_limits_are_a_second_and_a_year() {
        assert_eq!(seconds_of("remind me in 1 second to x"), 1);
        assert_eq!(seconds_of("remind me in 365 days to x"), 365 * 86_400);
        assert_eq!(seconds_of("remind me in 8760 hours to x"), 365 * 86_400);
        assert_eq!(
            err("remind me in 365 days 1 second to x"),
            ParseError::TooFar
        );
        assert_eq!(err("remind me in 366 days to x"), ParseError::TooFar);
        assert_eq!(err("remind me in 53 weeks to x"), ParseError::TooFar);
        assert_eq!(
            err("remind me in 99999999999999999999999 seconds to x"),
            ParseError::TooFar
        );
        assert_eq!(
            err("remind me in 18446744073709551615 weeks to x"),
            ParseError::TooFar
        );
        assert_eq!(
            err("remind me at 2027-11-22 10:00 to x"),
            ParseError::TooFar
        );
        assert!(ok("remind me at 2027-11-21 09:59 to x").due > now());
    }

    #[test]
    fn every_bad_input_has_its_own_answer() {
        let cases: Vec<(&str, ParseError)> = vec![
            ("remind", ParseError::Usage),
            ("remind me", ParseError::Usage),
            ("remind me to stretch", ParseError::NoTime),
            ("remind me stretch tomorrow", ParseError::NoTime),
            ("remind me in 10 minutes", ParseError::NoText),
            ("remind me in 10 minutes to", ParseError::NoText),
            ("remind me at 17:30", ParseError::NoText),
            ("remind me in", ParseError::MissingDuration),
            (
                "remind me in -5 minutes to x",
                ParseError::Negative("-5 minutes".into()),
            ),
            ("remind me in -5m to x", ParseError::Negative("-5m".into())),
            (
                "remind me to x in -5 minutes",
                ParseError::Negative("-5 minutes".into()),
            ),
            ("remind me in 0 seconds to x", ParseError::Zero),
            ("remind me in 0m to x", ParseError::Zero),
            ("remind me in 10 to x", ParseError::MissingUnit("10".into())),
            ("remind me in 10", ParseError::MissingUnit("10".into())),
            (
                "remind me in 10 fortnights to x",
                ParseError::UnknownUnit("fortnights".into()),
            ),
            ("remind me in 10y to x", ParseError::UnknownUnit("y".into())),
            (
                "remind me in five minutes to x",
                ParseError::NotANumber("five".into()),
            ),
            (
                "remind me in 1.5 hours to x",
                ParseError::NotAWholeNumber("1.5".into()),
            ),
            (
                "remind me at 25:99 to x",
                ParseError::NotATime("25:99".into()),
            ),
            (
                "remind me at 24:00 to x",
                ParseError::NotATime("24:00".into()),
            ),
            (
                "remind me at 12:60 to x",
                ParseError::NotATime("12:60".into()),
            ),
            (
                "remind me at 13pm to x",
                ParseError::NotATime("13pm".into()),
            ),
            ("remind me at 0am to x", ParseError::NotATime("0am".into())),
            ("remind me at 17 to x", ParseError::NotATime("17".into())),
            ("remind me at 5:3 to x", ParseError::NotATime("5:3".into())),
            (
                "remind me at 123:00 to x",
                ParseError::NotATime("123:00".into()),
            ),
            ("remind me at", ParseError::NotATime(String::new())),
            (
                "remind me to x at 25:99",
                ParseError::NotATime("25:99".into()),
            ),
            (
                "remind me at 2026-02-30 10:00 to x",
                ParseError::NotADate("2026-02-30".into()),
            ),
            (
                "remind me at 2026-12-24 to x",
                ParseError::NotATime("to".into()),
            ),
            (
                "remind me at 2020-01-01 10:00 to x",
                ParseError::Past("2020-01-01 10:00 UTC".into()),
            ),
            (
                "remind me at 2026-11-21 09:00 to x",
                ParseError::Past("2026-11-21 09:00 UTC".into()),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(err(input), expected, "{input}");
            // Each answer says what to type, and none is empty.
            assert!(!expected.to_string().is_empty());
        }
        let past = parse_request("remind me at 2026-11-21 11:00 to x", now(), offset(2));
        assert_eq!(
            past.unwrap_err(),
            ParseError::Past("2026-11-21 11:00 (UTC+02:00)".into())
        );
    }

    #[test]
    fn echoed_input_is_cut() {
        let long = "x".repeat(100);
        let error = err(&format!("remind me in {long} minutes to y"));
        assert_eq!(error, ParseError::NotANumber("x".repeat(40)));
    }
}
