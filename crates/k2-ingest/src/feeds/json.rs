//! A reader for frames laid out exactly as a venue sends them: literal punctuation and
//! keys, then values, each step giving up (None) on anything else, so that the venue's
//! full parser (serde) reads every other layout and names its faults. Reading the common
//! layout this way costs a fraction of serde's work per frame.

use chrono::Datelike;

/// The index of the first byte at or after `i` that is not JSON whitespace.
#[inline(always)]
fn skip_whitespace(b: &[u8], mut i: usize) -> usize {
    while let Some(c) = b.get(i)
        && matches!(c, b' ' | b'\n' | b'\r' | b'\t')
    {
        i += 1;
    }
    i
}

/// The length of a string's text up to its closing quote (`b` starts after the opening
/// one); None when an escape or a control character comes first: not flat.
#[inline(always)]
fn string_len(b: &[u8]) -> Option<usize> {
    let len = b
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
    (b[len] == b'"').then_some(len)
}

/// A JSON number's text as a non-negative integer of at most 18 digits; None otherwise
/// (the full parser then decides).
#[inline(always)]
pub(super) fn small_int(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    // JSON writes no leading zeros; the full parser refuses them, so this does too.
    if b.is_empty() || b.len() > 18 || b.len() > 1 && b[0] == b'0' {
        return None;
    }
    b.iter().try_fold(0i64, |n, &c| {
        c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
    })
}

/// A reader of JSON text laid out exactly as expected: literal punctuation and keys,
/// then values, each step None on anything else.
pub(super) struct Cursor<'a> {
    pub text: &'a str,
    pub at: usize,
}

impl<'a> Cursor<'a> {
    #[inline(always)]
    pub fn literal(&mut self, expected: &str) -> Option<()> {
        let end = self.at + expected.len();
        (self.text.as_bytes().get(self.at..end)? == expected.as_bytes()).then(|| self.at = end)
    }

    /// A string's text, after its opening quote (which the literal before it took).
    #[inline(always)]
    pub fn string_rest(&mut self) -> Option<&'a str> {
        let len = string_len(&self.text.as_bytes()[self.at..])?;
        let s = &self.text[self.at..self.at + len];
        self.at += len + 1;
        Some(s)
    }

    #[inline(always)]
    pub fn int(&mut self) -> Option<i64> {
        let rest = &self.text.as_bytes()[self.at..];
        let len = rest
            .iter()
            .position(|c| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let n = small_int(&self.text[self.at..self.at + len])?;
        self.at += len;
        Some(n)
    }

    /// A JSON number's text (`-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?`).
    #[inline(always)]
    pub fn number(&mut self) -> Option<&'a str> {
        let b = self.text.as_bytes();
        let start = self.at;
        let digits = |i: usize| {
            b[i.min(b.len())..]
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .count()
        };
        let mut i = start + usize::from(b.get(start) == Some(&b'-'));
        let int = digits(i);
        if int == 0 || int > 1 && b[i] == b'0' {
            return None;
        }
        i += int;
        if b.get(i) == Some(&b'.') {
            let frac = digits(i + 1);
            if frac == 0 {
                return None;
            }
            i += 1 + frac;
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            i += 1 + usize::from(matches!(b.get(i + 1), Some(b'+' | b'-')));
            let exp = digits(i);
            if exp == 0 {
                return None;
            }
            i += exp;
        }
        self.at = i;
        Some(&self.text[start..i])
    }

    #[inline(always)]
    pub fn boolean(&mut self) -> Option<bool> {
        if self.literal("true").is_some() {
            Some(true)
        } else {
            self.literal("false").map(|()| false)
        }
    }

    #[inline]
    pub fn finished(&self) -> Option<()> {
        (self.at == self.text.len()).then_some(())
    }
}

/// A value of a flat JSON object: a string's text (without escapes), a number's text, or a
/// boolean (null and anything else make the object not flat).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Scalar<'a> {
    Str(&'a str),
    Num(&'a str),
    Bool(bool),
}

/// One pass over a flat JSON object, each member handed to `member` (which may refuse it).
/// None when the text is anything else — nested values, escapes, a duplicate key (the
/// caller's duty), bad syntax — so the caller falls back to the full parser, whose
/// messages then name the fault.
#[inline]
pub(super) fn flat_object<'a>(
    text: &'a str,
    mut member: impl FnMut(&'a str, Scalar<'a>) -> Option<()>,
) -> Option<()> {
    let b = text.as_bytes();
    let ws = |i: usize| skip_whitespace(b, i);
    // A string starting at `i` (its opening quote): its text and the index after it.
    let string = |i: usize| -> Option<(&'a str, usize)> {
        let len = string_len(&b[i + 1..])?;
        Some((&text[i + 1..i + 1 + len], i + 2 + len))
    };
    let mut i = ws(0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = ws(i + 1);
    if b.get(i) == Some(&b'}') {
        return (ws(i + 1) == b.len()).then_some(());
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let (key, after) = string(i)?;
        i = ws(after);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = ws(i + 1);
        let (value, after) = match *b.get(i)? {
            b'"' => {
                let (s, after) = string(i)?;
                (Scalar::Str(s), after)
            }
            b't' if b[i..].starts_with(b"true") => (Scalar::Bool(true), i + 4),
            b'f' if b[i..].starts_with(b"false") => (Scalar::Bool(false), i + 5),
            b'-' | b'0'..=b'9' => {
                let len = b[i + 1..]
                    .iter()
                    .position(|c| !matches!(c, b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-'))
                    .unwrap_or(b.len() - i - 1);
                (Scalar::Num(&text[i..i + 1 + len]), i + 1 + len)
            }
            _ => return None,
        };
        member(key, value)?;
        i = ws(after);
        match *b.get(i)? {
            b',' => i = ws(i + 1),
            b'}' => return (ws(i + 1) == b.len()).then_some(()),
            _ => return None,
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z` (RFC 3339 in UTC, as exchanges write it) as
/// microseconds since the epoch, the fraction past microseconds dropped as chrono drops
/// it; None for any other form (a full RFC 3339 parser then decides).
#[inline]
pub(super) fn utc_micros(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        b.get(range)?.iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    if b.len() < 20
        || [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')]
            .iter()
            .any(|&(i, c)| b[i] != c)
    {
        return None;
    }
    let date = chrono::NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)?;
    let (h, m, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if h > 23 || m > 59 || s > 59 {
        return None;
    }
    let mut micros = 0i64;
    match &b[19..] {
        [b'Z'] => {}
        [b'.', frac @ .., b'Z'] if (1..=9).contains(&frac.len()) => {
            for i in 0..6 {
                let d = match frac.get(i) {
                    Some(c) if c.is_ascii_digit() => i64::from(c - b'0'),
                    Some(_) => return None,
                    None => 0,
                };
                micros = micros * 10 + d;
            }
            if !frac.iter().all(u8::is_ascii_digit) {
                return None;
            }
        }
        _ => return None,
    }
    let days = i64::from(date.num_days_from_ce() - 719_163);
    Some((days * 86_400 + i64::from(h * 3600 + m * 60 + s)) * 1_000_000 + micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_timestamps_agree_with_chrono() {
        let plain = [
            "2023-09-25T07:49:37.708706Z",
            "1970-01-01T00:00:00Z",
            "1969-12-31T23:59:59.999999Z",
            "2024-02-29T12:00:00.1Z",
            "2000-02-29T00:00:00.123456789Z",
        ];
        let mut texts: Vec<String> = plain.iter().map(|t| t.to_string()).collect();
        texts.extend([
            "2100-02-29T00:00:00Z".into(),
            "2023-13-01T00:00:00Z".into(),
            "2023-00-10T00:00:00Z".into(),
            "2023-09-31T00:00:00Z".into(),
            "2023-09-25T07:49:37.1234567890Z".into(),
            "2023-09-25T07:49:37+00:00".into(),
            "2023-09-25 07:49:37Z".into(),
            "2023-9-25T07:49:37Z".into(),
            "2023-09-25T07:49:3xZ".into(),
        ]);
        for day in 0..800 {
            let d = chrono::NaiveDate::from_ymd_opt(1999, 1, 1).unwrap()
                + chrono::Duration::days(day * 37);
            texts.push(format!(
                "{d}T{:02}:{:02}:{:02}.{:06}Z",
                day % 24,
                day % 60,
                (day * 7) % 60,
                day * 1237
            ));
        }
        for text in &texts {
            let full = chrono::DateTime::parse_from_rfc3339(text)
                .ok()
                .map(|t| t.timestamp_micros());
            match utc_micros(text) {
                Some(fast) => assert_eq!(Some(fast), full, "{text}"),
                // Rarer forms (offsets, over 9 digits of fraction) are chrono's to read.
                None => assert!(
                    !(plain.contains(&text.as_str())
                        || text.starts_with(['1', '2']) && text.len() == 27 && full.is_some()),
                    "{text} is left to chrono although it is plain UTC"
                ),
            }
        }
    }
}
